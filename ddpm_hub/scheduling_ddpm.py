"""DDPM scheduler: the notes' forward process q(x_t|x_0) and posterior q(x_{t-1}|x_t,x_0), as a drop-in for
`diffusers.DDPMScheduler`.

Notation (notes 001 and 002; diffusers' 0-based timesteps, so diffusers' t is the notes' t+1):

    beta_t                  noise added at step t            q(x_t|x_{t-1}) = N(sqrt(1-beta_t) x_{t-1}, beta_t I)
    alpha_t = 1 - beta_t
    alphas_cumprod[t]       abar_t = prod_{i<=t} alpha_i
    q(x_t|x_0)              = N(sqrt(abar_t) x_0, (1-abar_t) I)                       (note 001, 特性2)
    q(x_{t-1}|x_t,x_0)      = N(coef_x0 x_0 + coef_xt x_t, tilde-beta_t I)             (note 001, 逆向过程)
        coef_x0             = sqrt(abar_{t-1}) beta_t / (1-abar_t)
        coef_xt             = sqrt(alpha_t) (1-abar_{t-1}) / (1-abar_t)
        tilde-beta_t        = (1-abar_{t-1}) / (1-abar_t) * beta_t

Slips in the notes that this file does *not* copy (learners read both side by side; every slip of the five notes,
with its line, is in docs/notes/):
  * note 000 (二、1、扩散过程) writes X_t = sqrt(1-beta_t) X_{t-1} + beta_t z; the noise scale is sqrt(beta_t).
  * note 001 (逆向过程) writes "beta_t = (1-abar_{t-1})/(1-abar_t) * beta_t"; the left side is tilde-beta_t.
  * note 002 (逆向过程的符号表示) gives the variance of q(x_{t-1}|x_t,x_0) as
    alpha_t/(1-alpha_t) + 1/(1-abar_{t-1}); that sum is the *precision* 1/tilde-beta_t, not the variance.

Deliberate differences from diffusers 0.42 (everything else gives the same bits: tests/test_scheduler_parity.py,
tests/test_scheduler_compat.py):
  * `fixed_large_log` gives NaN in diffusers (it takes the square root of log(beta_t), their issue 14569);
    here it samples with std = exp(0.5 log beta_t), i.e. the same result as `fixed_large`.
  * `step` also takes a (B,) tensor of per-sample timesteps (diffusers cannot: their issue 1784).
  * `add_noise` / `get_velocity` compute bf16/fp16 inputs in float32 and cast at the end, so they keep the
    precision of the coefficients (diffusers casts abar_t to the input dtype first). float32 and float64 inputs
    give diffusers' bits.
  * `set_timesteps(timesteps=...)` sets `num_inference_steps = len(timesteps)`; diffusers leaves it as it was
    (None, or a previous call's count, which then no longer describes `timesteps`).
  * per-step coefficients are computed once per `set_timesteps` (vectorised, same float32 arithmetic, so the
    same bits) and looked up per step; diffusers rebuilds them from 0-d tensors at every step.

Stricter checks. Each raises a one-line ValueError naming the input and what is allowed, and is kept only where
diffusers returns NaN or a silently wrong result (tests/test_scheduler_errors.py shows diffusers' result next to
ours; diffusers' own tests/schedulers/test_scheduler_ddpm.py fails on the first three, which it checks only at
t = 0):
  * a beta_t outside (0, 1], e.g. beta_start=0.1, beta_end=2: betas pass 1 at t = 474, abar_t underflows to 0
    and diffusers' step is NaN at 755 of the 1000 timesteps. beta_0 = 0 (beta_start=0) is 0/0 at t = 0; a
    negative beta makes 1 - abar_t < 0 (NaN from its square root); a later beta_t = 0 has log beta_t = -inf,
    and diffusers' learned_range is NaN there wherever v = -1 (0 * -inf).
  * trained_betas whose length is not num_train_timesteps: diffusers still lists num_train_timesteps timesteps.
    With 2 betas and T = 1000, 998 of the 1000 fail inside torch (IndexError; a device-side assert on CUDA); with
    1000 betas and T = 10 it silently samples on the first 10 betas (abar = 0.998 where x_T should be noise).
  * an unknown variance_type (also as `_get_variance`'s argument): diffusers silently uses fixed_small (the
    test's "other", or a typo such as "fixed_larg", gives fixed_small's bits).
  * custom timesteps below 0, and a timestep below 0 in `step` (before `set_timesteps`) or `add_noise`: diffusers
    reads alphas_cumprod[t] with Python's wrap-around (t = -1: the noisiest timestep) silently.
  * a model_output whose shape is not the sample's (or 2C channels for the learned types): diffusers broadcasts
    a (B, 1, H, W) output over (B, C, H, W) silently.
  Input that diffusers also rejects, later or from inside torch, is rejected here up front with a ValueError:
  unknown beta_schedule / prediction_type / timestep_spacing, num_train_timesteps < 1, num_inference_steps
  outside [1, T] (0 divides by zero, except with linspace, where it silently gives no timesteps), unsorted or
  empty custom timesteps, steps_offset pushing timesteps past T - 1, a timestep that is not scheduled,
  `_get_variance` with learned_range and no predicted_variance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import KarrasDiffusionSchedulers, SchedulerMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid", "laplace")
VARIANCE_TYPES = ("fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log", "learned", "learned_range")
PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")
TIMESTEP_SPACINGS = ("linspace", "leading", "trailing")

# diffusers clamps the posterior variance at this floor before taking its log (it is 0 at t = 0).
_MIN_VARIANCE = 1e-20
# marks a timestep that is not in the current sampling schedule
_NOT_SCHEDULED = -2


@dataclass
class DDPMSchedulerOutput(BaseOutput):
    """Output of `DDPMScheduler.step`.

    Args:
        prev_sample: x_{t-1}, shape (B, C, H, W): the next model input in the denoising loop.
        pred_original_sample: the model's estimate of x_0, shape (B, C, H, W) (after clipping/thresholding).
    """

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor | None = None


@dataclass
class ReverseDistribution(BaseOutput):
    """The model's reverse step p_theta(x_{t-1}|x_t) = N(mean, exp(log_variance)) (note 001, 逆向过程).

    Args:
        mean: mu_theta(x_t, t), shape (B, C, H, W).
        log_variance: log Sigma_theta(x_t, t), broadcastable to (B, C, H, W).
        pred_original_sample: the x_0 estimate the mean was built from, shape (B, C, H, W).
    """

    mean: torch.Tensor
    log_variance: torch.Tensor
    pred_original_sample: torch.Tensor


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not supported; choose one of {', '.join(allowed)}")


def make_betas(
    num_train_timesteps: int,
    beta_start: float,
    beta_end: float,
    beta_schedule: str,
    trained_betas: np.ndarray | list[float] | None = None,
    rescale_betas_zero_snr: bool = False,
) -> torch.Tensor:
    """The noise schedule beta_0..beta_{T-1}, float32 tensor of shape (T,), with diffusers' schedule names.

    linear: evenly spaced (DDPM); scaled_linear: evenly spaced in sqrt(beta) (latent diffusion);
    squaredcos_cap_v2: abar(t) = cos^2((t/T + 0.008)/1.008 * pi/2) (Improved DDPM, eq. 17), beta capped at 0.999;
    laplace: the Laplace noise schedule (as diffusers); sigmoid: sigmoid(linspace(-6, 6)) rescaled to
    [beta_start, beta_end] (GeoDiff). Each is built in float32 the way diffusers builds it, so the betas (and
    every table derived from them) are bit-equal to diffusers': a model trained with diffusers saw these values.
    """
    T = num_train_timesteps
    if trained_betas is not None:
        betas = torch.tensor(np.asarray(trained_betas, dtype=np.float64), dtype=torch.float32)
        # diffusers keeps T timesteps over however many betas it gets: too few and most of the timesteps it lists
        # fail inside torch, too many and it silently samples a truncated schedule (module docstring)
        if betas.ndim != 1 or len(betas) != T:
            raise ValueError(f"trained_betas must be a 1-D list of num_train_timesteps={T} values, "
                             f"got shape {tuple(betas.shape)}")
    elif beta_schedule == "linear":
        betas = torch.linspace(beta_start, beta_end, T, dtype=torch.float32)
    elif beta_schedule == "scaled_linear":
        betas = torch.linspace(beta_start**0.5, beta_end**0.5, T, dtype=torch.float32) ** 2
    elif beta_schedule in ("squaredcos_cap_v2", "laplace"):
        betas = torch.from_numpy(_betas_for_alpha_bar(T, beta_schedule)).float()
    elif beta_schedule == "sigmoid":
        betas = torch.sigmoid(torch.linspace(-6, 6, T)) * (beta_end - beta_start) + beta_start
    else:
        _check_choice("beta_schedule", beta_schedule, BETA_SCHEDULES)
    if rescale_betas_zero_snr:
        betas = rescale_zero_terminal_snr(betas)
    # beta_t is a variance, and diffusers gives NaN outside (0, 1]: past 1, sqrt(1-beta) and abar_t break down;
    # beta_0 = 0 is 0/0 at t = 0; a later 0 has log beta_t = -inf (module docstring, "Deliberate differences")
    outside = ((betas <= 0) | (betas > 1)).nonzero()
    if len(outside):
        t = int(outside[0])
        source = "trained_betas" if trained_betas is not None else (
            f"beta_schedule={beta_schedule!r} with beta_start={beta_start}, beta_end={beta_end}")
        raise ValueError(f"{source} gives beta_{t}={betas[t].item():.6g} ({len(outside)} of {T} betas outside "
                         f"(0, 1]); every beta_t must lie in (0, 1]")
    return betas


def _alpha_bar_fn(schedule: str, t: float) -> float:
    if schedule == "squaredcos_cap_v2":
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
    # laplace: log-SNR follows a Laplace distribution's quantile function
    lmb = -0.5 * math.copysign(1, 0.5 - t) * math.log(1 - 2 * math.fabs(0.5 - t) + 1e-6)
    snr = math.exp(lmb)
    return math.sqrt(snr / (1 + snr))


def _betas_for_alpha_bar(num_train_timesteps: int, schedule: str, max_beta: float = 0.999) -> np.ndarray:
    """beta_t = 1 - abar((t+1)/T) / abar(t/T), capped at max_beta (Improved DDPM, sec. 3.2), in float64."""
    T = num_train_timesteps
    return np.array([min(1 - _alpha_bar_fn(schedule, (i + 1) / T) / _alpha_bar_fn(schedule, i / T), max_beta)
                     for i in range(T)])


def rescale_zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    """Shift and scale sqrt(abar_t) so that abar_{T-1} = 0 (zero terminal SNR) while abar_0 is unchanged.

    "Common Diffusion Noise Schedules and Sample Steps are Flawed" (Lin et al. 2023), Algorithm 1.
    """
    sqrt_abar = torch.cumprod(1.0 - betas, dim=0).sqrt()
    first, last = sqrt_abar[0].clone(), sqrt_abar[-1].clone()
    sqrt_abar = (sqrt_abar - last) * (first / (first - last))
    abar = sqrt_abar**2
    alphas = torch.cat([abar[0:1], abar[1:] / abar[:-1]])
    return 1 - alphas


def _step_tables(alphas_cumprod: torch.Tensor, prev_timesteps: np.ndarray) -> dict[str, torch.Tensor]:
    """Per-timestep coefficients of one reverse step t -> prev_t, CPU tensors of shape (T,) in the dtype of
    `alphas_cumprod`.

    `prev_timesteps[t]` is the timestep the sampler jumps to from t (-1: to x_0). For skipped steps beta_t is
    the effective 1 - abar_t/abar_prev, as in diffusers (DDPM on a sub-sequence of timesteps). In float32 the
    operations run in diffusers' order, so each entry is bit-equal to what diffusers' `step` computes from
    0-d float32 tensors (float32 +, -, *, / and sqrt are correctly rounded, vectorised or not); in float64
    they give the exact tables used for likelihoods.
    """
    abar = alphas_cumprod
    prev = torch.from_numpy(prev_timesteps)
    abar_prev = torch.where(prev >= 0, abar[prev.clamp(min=0)], torch.ones_like(abar))
    beta_prod, beta_prod_prev = 1 - abar, 1 - abar_prev
    alpha = abar / abar_prev  # alpha_t of the (possibly skipping) step
    beta = 1 - alpha
    # note 001, 逆向过程: tilde-beta_t = (1-abar_{t-1})/(1-abar_t) beta_t, floored at 1e-20 as in diffusers
    posterior_variance = torch.clamp(beta_prod_prev / beta_prod * beta, min=_MIN_VARIANCE)
    log_posterior_variance = torch.log(posterior_variance)
    return {
        "sqrt_abar": abar**0.5,
        "sqrt_one_minus_abar": beta_prod**0.5,
        # note 001, 逆向过程: tilde-mu(x_t, x_0) = coef_x0 x_0 + coef_xt x_t
        "coef_x0": (abar_prev**0.5 * beta) / beta_prod,
        "coef_xt": alpha**0.5 * beta_prod_prev / beta_prod,
        "beta": beta,
        "log_beta": torch.log(beta),
        "posterior_variance": posterior_variance,
        "log_posterior_variance": log_posterior_variance,
        "std_small": posterior_variance**0.5,
        "std_small_log": torch.exp(0.5 * log_posterior_variance),
        "std_large": beta**0.5,
    }


def _draw_noise(like: torch.Tensor, generator) -> torch.Tensor:
    """z ~ N(0, I) shaped like `like`, drawn exactly as diffusers' `randn_tensor` draws it. A single generator on
    the tensor's device goes straight to `torch.randn`, the call `randn_tensor` ends in (its wrapper costs a few
    microseconds per step); lists and cross-device generators take `randn_tensor` itself."""
    if generator is None or (isinstance(generator, torch.Generator) and generator.device.type == like.device.type):
        return torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)
    return randn_tensor(like.shape, generator=generator, device=like.device, dtype=like.dtype)


class DDPMScheduler(SchedulerMixin, ConfigMixin):
    """Denoising diffusion probabilistic model scheduler (Ho et al. 2020), with the same config keys, defaults
    and outputs as `diffusers.DDPMScheduler`, so `scheduler_config.json` files load in either class.

    Args (all as in diffusers):
        num_train_timesteps: T, the number of forward steps the model was trained with.
        beta_start, beta_end: first and last beta for the linear/scaled_linear/sigmoid schedules.
        beta_schedule: "linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid" (or diffusers' "laplace").
        trained_betas: explicit betas (length T), overriding the schedule.
        variance_type: the reverse-step variance Sigma_theta (note 001, 逆向过程 step 2):
            "fixed_small" tilde-beta_t, "fixed_large" beta_t (both untrained, DDPM), their "_log" variants
            (same values, computed through the log), "learned" (the model's extra C channels are the variance,
            diffusers' convention) and "learned_range" (Improved DDPM eq. 15: the extra channels v in [-1, 1]
            interpolate log tilde-beta_t and log beta_t).
        clip_sample, clip_sample_range: clamp the x_0 estimate to [-range, range].
        prediction_type: what the model predicts: "epsilon" (the noise z, note 001 训练), "sample" (x_0) or
            "v_prediction" (v = sqrt(abar_t) z - sqrt(1-abar_t) x_0, Salimans & Ho 2022).
        thresholding, dynamic_thresholding_ratio, sample_max_value: Imagen's dynamic thresholding of x_0.
        timestep_spacing, steps_offset: how `set_timesteps` picks a sub-sequence (Lin et al. 2023, Table 2).
        rescale_betas_zero_snr: rescale betas so that abar_{T-1} = 0.

    Attributes: `betas`, `alphas`, `alphas_cumprod` (float32, shape (T,)), `timesteps` (int64, descending),
    `num_inference_steps`, `custom_timesteps`, `init_noise_sigma` (as in diffusers), and `posterior_variance`,
    `posterior_log_variance_clipped`, `posterior_mean_coef1`, `posterior_mean_coef2` (float32, shape (T,), for the
    full T-step chain). Methods beyond `step`/`add_noise` that diffusers code calls: `set_timesteps`,
    `previous_timestep`, `scale_model_input`, `_get_variance`, `_threshold_sample`, `get_velocity`, `len()`.
    """

    _compatibles = [e.name for e in KarrasDiffusionSchedulers]
    order = 1

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid", "laplace"] = "linear",
        trained_betas: np.ndarray | list[float] | None = None,
        variance_type: Literal[
            "fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log", "learned", "learned_range"
        ] = "fixed_small",
        clip_sample: bool = True,
        prediction_type: Literal["epsilon", "sample", "v_prediction"] = "epsilon",
        thresholding: bool = False,
        dynamic_thresholding_ratio: float = 0.995,
        clip_sample_range: float = 1.0,
        sample_max_value: float = 1.0,
        timestep_spacing: Literal["linspace", "leading", "trailing"] = "leading",
        steps_offset: int = 0,
        rescale_betas_zero_snr: bool = False,
    ):
        _check_choice("variance_type", variance_type, VARIANCE_TYPES)
        _check_choice("prediction_type", prediction_type, PREDICTION_TYPES)
        _check_choice("timestep_spacing", timestep_spacing, TIMESTEP_SPACINGS)
        if trained_betas is None:
            _check_choice("beta_schedule", beta_schedule, BETA_SCHEDULES)
        if int(num_train_timesteps) < 1:
            raise ValueError(f"num_train_timesteps must be >= 1, got {num_train_timesteps}")

        betas = make_betas(
            num_train_timesteps, beta_start, beta_end, beta_schedule, trained_betas, rescale_betas_zero_snr
        )
        # abar_t = prod_{i<=t} (1 - beta_i), taken in float32 from the float32 betas exactly as diffusers does:
        # models trained with diffusers saw these values, and bit-equal tables keep a 1000-step sampling run
        # within 1e-6 of diffusers (a float64 product drifts ~2e-6 over the run). Every coefficient derived
        # from abar_t below is computed in float64 from these values and rounded once.
        self.betas = betas
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        # q(x_t|x_0)'s coefficients for add_noise / get_velocity, in float32 from the float32 abar_t exactly as
        # diffusers computes them: the x_t a model trained with diffusers saw, bit for bit. (The float64 chain below
        # rounds sqrt(1-abar_t) once instead of twice and differs by one ulp at about a third of the timesteps.)
        self._forward = {"sqrt_abar": self.alphas_cumprod**0.5, "sqrt_one_minus_abar": (1 - self.alphas_cumprod) ** 0.5}
        self.one = torch.tensor(1.0)
        self.init_noise_sigma = 1.0
        self.variance_type = variance_type

        # the full T-step chain (prev_t = t - 1) in float64: training, likelihood and the public q/p methods
        self._chain = _step_tables(self.alphas_cumprod.double(), np.arange(num_train_timesteps) - 1)
        self.posterior_variance = self._chain["posterior_variance"].float()
        self.posterior_variance[0] = 0.0  # exactly 0 at t=0; the tables keep diffusers' 1e-20 floor for logs
        # log tilde-beta_t with t=0 replaced by t=1 (tilde-beta_0 = 0): Improved DDPM's "clipped" log variance
        clipped = self._chain["log_posterior_variance"].clone()
        clipped[0] = clipped[1] if num_train_timesteps > 1 else clipped[0]
        self._chain["log_posterior_variance_clipped"] = clipped
        abar64 = self.alphas_cumprod.double()
        self._chain["snr"] = abar64 / (1 - abar64)  # SNR(t) = abar_t / (1 - abar_t)
        # the one-step forward process q(x_t|x_{t-1}): sqrt(alpha_t) and sqrt(beta_t), with the beta_t implied by the
        # stored abar_t (1 - abar_t/abar_{t-1}: `betas` up to float32 rounding), so that composed steps give
        # q(x_t|x_0) exactly
        self._chain["sqrt_alpha"] = (1 - self._chain["beta"]).sqrt()
        self._chain["sqrt_beta"] = self._chain["beta"].sqrt()
        self.posterior_log_variance_clipped = clipped.float()
        self.posterior_mean_coef1 = self._chain["coef_x0"].float()
        self.posterior_mean_coef2 = self._chain["coef_xt"].float()

        self.custom_timesteps = False
        self.num_inference_steps = None
        self.timesteps = torch.from_numpy(np.arange(0, num_train_timesteps)[::-1].copy())
        self._use_tables(np.arange(num_train_timesteps) - 1)

    # ------------------------------------------------------------------ tables
    def _use_tables(self, prev_timesteps: np.ndarray) -> None:
        """Install the step tables for a prev-timestep map (T entries; _NOT_SCHEDULED where t is not used)."""
        self._prev_timesteps = prev_timesteps
        self._tables = _step_tables(self.alphas_cumprod, prev_timesteps)  # float32, diffusers' arithmetic
        # python floats for the scalar-timestep fast path (no tensor indexing per step)
        self._scalar_tables = {name: table.tolist() for name, table in self._tables.items()}
        self._tensor_cache: dict[tuple, torch.Tensor] = {}

    def _table_tensor(self, table: dict[str, torch.Tensor], name: str, device, dtype) -> torch.Tensor:
        key = (id(table), name, str(device), dtype)
        cached = self._tensor_cache.get(key)
        if cached is None:
            cached = table[name].to(device=device, dtype=dtype)
            self._tensor_cache[key] = cached
        return cached

    def _gather(self, table: dict[str, torch.Tensor], name: str, timesteps: torch.Tensor, like: torch.Tensor):
        """table[name][timesteps] as a (B, 1, ..., 1) tensor that broadcasts against `like` (B, C, H, W).

        Computes in float32, or float64 for float64 `like`: low-precision inputs are upcast by the caller.
        """
        dtype = torch.float64 if like.dtype == torch.float64 else torch.float32
        values = self._table_tensor(table, name, like.device, dtype)[timesteps.to(like.device)]
        return values.reshape(-1, *([1] * (like.ndim - 1)))

    def _check_train_timesteps(self, timesteps: torch.Tensor, batch: int, name: str = "timesteps") -> torch.Tensor:
        timesteps = torch.as_tensor(timesteps)
        if timesteps.is_floating_point() or timesteps.is_complex():
            raise ValueError(f"{name} must be an integer tensor, got dtype {timesteps.dtype}")
        timesteps = timesteps.reshape(-1).long()
        if timesteps.numel() not in (1, batch):
            raise ValueError(f"{name} must have shape ({batch},) or be a scalar, got {tuple(timesteps.shape)}")
        low, high = int(timesteps.min()), int(timesteps.max())
        if low < 0 or high >= self.config.num_train_timesteps:
            raise ValueError(
                f"{name} must lie in [0, {self.config.num_train_timesteps - 1}], got values in [{low}, {high}]"
            )
        return timesteps

    # ------------------------------------------------------------- sampling API
    def scale_model_input(self, sample: torch.Tensor, timestep: int | None = None) -> torch.Tensor:
        """DDPM needs no input scaling; kept for interchangeability with other schedulers."""
        return sample

    def set_timesteps(
        self,
        num_inference_steps: int | None = None,
        device: str | torch.device | None = None,
        timesteps: list[int] | None = None,
    ) -> None:
        """Choose the descending timesteps the sampling loop visits, and precompute each step's coefficients.

        Args:
            num_inference_steps: how many steps, spaced by `config.timestep_spacing` (+ `steps_offset` for
                "leading"), exactly as diffusers spaces them.
            device: where `self.timesteps` lives.
            timesteps: custom strictly descending timesteps in [0, num_train_timesteps).
        """
        T = self.config.num_train_timesteps
        if num_inference_steps is not None and timesteps is not None:
            raise ValueError("pass either num_inference_steps or timesteps to set_timesteps, not both")
        if timesteps is not None:
            schedule = np.asarray(list(timesteps), dtype=np.int64)
            if schedule.ndim != 1 or len(schedule) == 0:
                raise ValueError("timesteps must be a non-empty list of integers")
            if np.any(np.diff(schedule) >= 0):
                raise ValueError(f"timesteps must be strictly descending, got {schedule.tolist()}")
            if schedule[0] >= T or schedule[-1] < 0:
                raise ValueError(f"timesteps must lie in [0, {T - 1}], got {schedule.tolist()}")
            self.custom_timesteps = True
            self.num_inference_steps = len(schedule)
        else:
            if num_inference_steps is None:
                raise ValueError("set_timesteps needs num_inference_steps or timesteps")
            if not 1 <= int(num_inference_steps) <= T:
                raise ValueError(
                    f"num_inference_steps must be between 1 and num_train_timesteps={T}, got {num_inference_steps}"
                )
            self.num_inference_steps = int(num_inference_steps)
            self.custom_timesteps = False
            schedule = self._spaced_timesteps(self.num_inference_steps)
        prev = np.full(T, _NOT_SCHEDULED, dtype=np.int64)
        prev[schedule] = np.append(schedule[1:], -1)
        self._use_tables(prev)
        self.timesteps = torch.from_numpy(schedule).to(device)

    def _spaced_timesteps(self, n: int) -> np.ndarray:
        """diffusers' spacings ("linspace", "leading", "trailing"; Lin et al. 2023, Table 2)."""
        T, spacing = self.config.num_train_timesteps, self.config.timestep_spacing
        if spacing == "linspace":
            schedule = np.linspace(0, T - 1, n).round()[::-1].astype(np.int64)
        elif spacing == "leading":
            schedule = (np.arange(0, n) * (T // n)).round()[::-1].astype(np.int64) + self.config.steps_offset
        else:  # trailing
            schedule = np.round(np.arange(T, 0, -T / n)).astype(np.int64) - 1
        if schedule.max() >= T or schedule.min() < 0:
            raise ValueError(
                f"steps_offset={self.config.steps_offset} with num_inference_steps={n} gives timesteps outside "
                f"[0, {T - 1}]; lower steps_offset or num_inference_steps"
            )
        return schedule.copy()

    def previous_timestep(self, timestep: int | torch.Tensor) -> int | torch.Tensor:
        """The timestep the sampler goes to from `timestep`, read from `self.timesteps` (-1: x_0 is next).

        Returns what diffusers returns: before `set_timesteps`, `timestep - 1` (an int for an int, a tensor of the
        input's dtype and device for a tensor); after it, a 0-d tensor of `self.timesteps`' dtype and device, or
        `torch.tensor(-1)` from the last timestep. A (B,) tensor gives a (B,) tensor (diffusers cannot).
        """
        if torch.is_tensor(timestep) and timestep.ndim > 0:
            return torch.as_tensor(self._prev_timesteps, device=timestep.device)[timestep.long()]
        prev = int(self._prev_timesteps[self._scheduled_index(timestep)])
        if not (self.custom_timesteps or self.num_inference_steps):
            return timestep - 1
        if prev < 0:
            return torch.tensor(-1)
        return torch.tensor(prev, dtype=self.timesteps.dtype, device=self.timesteps.device)

    def _scheduled_index(self, timestep) -> int:
        t = int(timestep)
        if not 0 <= t < self.config.num_train_timesteps or self._prev_timesteps[t] == _NOT_SCHEDULED:
            raise ValueError(
                f"timestep {t} is not one of the scheduled timesteps; call set_timesteps and loop over "
                f"scheduler.timesteps (first ones: {self.timesteps[:5].tolist()})"
            )
        return t

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | list[torch.Generator] | None = None,
        return_dict: bool = True,
    ) -> DDPMSchedulerOutput | tuple:
        """One reverse step: draw x_{t-1} ~ p_theta(x_{t-1}|x_t) (note 001, 逆向过程; note 004 sampling loop).

        Args:
            model_output: the model's output at (x_t, t), shape (B, C, H, W), or (B, 2C, H, W) for the
                learned variance types (first C channels: the prediction; last C: the variance output).
            timestep: t, an int / 0-d tensor, or a (B,) tensor of per-sample timesteps.
            sample: x_t, shape (B, C, H, W).
            generator: torch generator(s) for the noise, drawn exactly as diffusers draws it.
            return_dict: return a `DDPMSchedulerOutput` (else a tuple).

        Returns:
            `DDPMSchedulerOutput(prev_sample=x_{t-1}, pred_original_sample=x_0 estimate)`.
        """
        model_output, predicted_variance = self._split_model_output(model_output, sample)
        per_sample = torch.is_tensor(timestep) and timestep.ndim > 0
        if per_sample:
            t = self._check_train_timesteps(timestep, sample.shape[0], name="timestep")
            for value in t.unique().tolist():
                self._scheduled_index(value)
            coef = lambda name: self._gather(self._tables, name, t, sample).to(sample.dtype)  # noqa: E731
            adds_noise = bool((t > 0).any())
        else:
            index = self._scheduled_index(timestep)
            coef = lambda name: self._scalar_tables[name][index]  # noqa: E731
            adds_noise = index > 0

        # 1-3. x_0 estimate from the model output (note 001: x_0 = (x_t - sqrt(1-abar_t) z) / sqrt(abar_t)),
        #      then clipping or dynamic thresholding
        pred_original_sample = self._predict_original_sample(model_output, sample, coef)
        # 4-5. posterior mean tilde-mu(x_t, x_0) = coef_x0 x_0 + coef_xt x_t (note 001, 逆向过程)
        prev_sample = pred_original_sample * coef("coef_x0") + sample * coef("coef_xt")

        # 6. add sigma_t z, z ~ N(0, I), for t > 0 (diffusers draws z with the model output's shape and dtype)
        if adds_noise:
            noise = _draw_noise(model_output, generator)
            std = self._std(coef, predicted_variance)
            if per_sample:
                std = std * (t > 0).reshape(-1, *([1] * (sample.ndim - 1))).to(sample.dtype)
            prev_sample = prev_sample + std * noise

        if not return_dict:
            return (prev_sample, pred_original_sample)
        return DDPMSchedulerOutput(prev_sample=prev_sample, pred_original_sample=pred_original_sample)

    def _split_model_output(self, model_output: torch.Tensor, sample: torch.Tensor):
        """Split a (B, 2C, ...) learned-variance output into (prediction, variance output), diffusers-style."""
        channels = sample.shape[1]
        if self.variance_type in ("learned", "learned_range"):
            if model_output.shape[1] != 2 * channels:
                raise ValueError(
                    f"variance_type={self.variance_type!r} needs a model output with 2*C={2 * channels} channels "
                    f"(prediction + variance), got shape {tuple(model_output.shape)}"
                )
            model_output, predicted_variance = torch.split(model_output, channels, dim=1)
        else:
            predicted_variance = None
        if model_output.shape != sample.shape:
            raise ValueError(
                f"model_output shape {tuple(model_output.shape)} does not match sample shape {tuple(sample.shape)}"
            )
        return model_output, predicted_variance

    def _original_from_output(self, model_output: torch.Tensor, sample: torch.Tensor, coef) -> torch.Tensor:
        """x_0 from the model output for each prediction_type (same op order as diffusers, so edge cases such as
        abar_t = 0 behave identically). `coef(name)` gives a table entry as a float or a broadcastable tensor."""
        prediction_type = self.config.prediction_type
        if prediction_type == "epsilon":
            return (sample - coef("sqrt_one_minus_abar") * model_output) / coef("sqrt_abar")
        if prediction_type == "sample":
            return model_output
        # v_prediction: x_0 = sqrt(abar_t) x_t - sqrt(1-abar_t) v
        return coef("sqrt_abar") * sample - coef("sqrt_one_minus_abar") * model_output

    def _predict_original_sample(self, model_output: torch.Tensor, sample: torch.Tensor, coef) -> torch.Tensor:
        """x_0 from the model output, then clipped or thresholded as configured."""
        pred = self._original_from_output(model_output, sample, coef)
        if self.config.thresholding:
            return self._threshold_sample(pred)
        if self.config.clip_sample:
            return pred.clamp(-self.config.clip_sample_range, self.config.clip_sample_range)
        return pred

    def _std(self, coef, predicted_variance: torch.Tensor | None):
        """sigma_t of the reverse step for the configured variance_type."""
        variance_type = self.variance_type
        if variance_type == "fixed_small":
            return coef("std_small")  # sqrt(tilde-beta_t)
        if variance_type == "fixed_small_log":
            return coef("std_small_log")  # exp(0.5 log tilde-beta_t): same value, diffusers' rounding
        if variance_type in ("fixed_large", "fixed_large_log"):
            return coef("std_large")  # sqrt(beta_t); diffusers' fixed_large_log gives NaN here
        if variance_type == "learned":
            return predicted_variance**0.5  # diffusers' convention: the output is the variance itself
        # learned_range (Improved DDPM eq. 15): log sigma^2 = f log beta_t + (1-f) log tilde-beta_t, f = (v+1)/2
        frac = (predicted_variance + 1) / 2
        log_variance = frac * coef("log_beta") + (1 - frac) * coef("log_posterior_variance")
        return torch.exp(0.5 * log_variance)

    # The leading underscore is diffusers' spelling, kept so that code written against diffusers runs unchanged:
    # diffusers' own scheduler tests, and pipelines and samplers built on its DDPMScheduler, call
    # `scheduler._get_variance(t)` to get sigma_t^2 without stepping. Here it is public, tested API.
    def _get_variance(
        self,
        t: int | torch.Tensor,
        predicted_variance: torch.Tensor | None = None,
        variance_type: Literal[
            "fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log", "learned", "learned_range"
        ] | None = None,
    ) -> torch.Tensor | None:
        """The reverse step's variance term at timestep t (to the next scheduled timestep), with diffusers'
        semantics and bits. What it returns depends on the type, as in diffusers:

            fixed_small      tilde-beta_t = (1-abar_prev)/(1-abar_t) beta_t, floored at 1e-20 (note 001, 逆向过程)
            fixed_small_log  exp(0.5 log tilde-beta_t): the standard deviation, not the variance
            fixed_large      beta_t (of the possibly skipping step: 1 - abar_t/abar_prev)
            fixed_large_log  log beta_t: a log variance
            learned          `predicted_variance` itself (the model's extra channels are the variance)
            learned_range    frac log beta_t + (1-frac) log tilde-beta_t, frac = (v+1)/2 (Improved DDPM eq. 15): a
                             log variance shaped like `predicted_variance` v

        Args:
            t: a scheduled timestep (int or 0-d tensor).
            predicted_variance: the model's variance channels (B, C, H, W), for the learned types.
            variance_type: one of the six types; None reads `config.variance_type`.
        Returns: a 0-d float32 tensor for the fixed types; for the learned types, a tensor like
            `predicted_variance` (or None for "learned" without one, as in diffusers).
        """
        index = self._scheduled_index(t)
        variance_type = self.config.variance_type if variance_type is None else variance_type
        _check_choice("variance_type", variance_type, VARIANCE_TYPES)
        # 0-d float32 copies of the step tables, which hold diffusers' float32 arithmetic for this step
        entry = lambda name: self._tables[name][index].clone()  # noqa: E731
        if variance_type == "fixed_small":
            return entry("posterior_variance")
        if variance_type == "fixed_small_log":
            return entry("std_small_log")
        if variance_type == "fixed_large":
            return entry("beta")
        if variance_type == "fixed_large_log":
            return entry("log_beta")
        if variance_type == "learned":
            return predicted_variance
        if predicted_variance is None:
            raise ValueError("variance_type='learned_range' needs predicted_variance (the model's extra C channels), "
                             "got None")
        frac = (predicted_variance + 1) / 2
        return frac * entry("log_beta") + (1 - frac) * entry("log_posterior_variance")

    def _threshold_sample(self, sample: torch.Tensor) -> torch.Tensor:
        """Imagen's dynamic thresholding: s = per-image quantile of |x_0|, clamped to [1, sample_max_value];
        x_0 <- clamp(x_0, -s, s) / s."""
        dtype, (batch, *rest) = sample.dtype, sample.shape
        flat = sample.reshape(batch, -1)
        if dtype not in (torch.float32, torch.float64):
            flat = flat.float()  # quantile needs float32+
        s = torch.quantile(flat.abs(), self.config.dynamic_thresholding_ratio, dim=1)
        s = s.clamp(min=1, max=self.config.sample_max_value).unsqueeze(1)
        return (torch.clamp(flat, -s, s) / s).reshape(batch, *rest).to(dtype)

    # ----------------------------------------------------- training (forward) API
    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """Sample q(x_t|x_0): x_t = sqrt(abar_t) x_0 + sqrt(1-abar_t) z (note 001 特性2; note 002 加噪过程公式简化).

        Args:
            original_samples: x_0, shape (B, ...); noise: z, same shape; timesteps: int tensor of shape (B,).
        Returns: x_t, same shape and dtype as x_0 (computed in float32 or better, cast at the end).
        """
        t = self._check_train_timesteps(timesteps, original_samples.shape[0])
        x0, z = original_samples, noise
        compute = x0 if x0.dtype == torch.float64 else x0.float()
        table = self._forward_table(compute)
        sqrt_abar = self._gather(table, "sqrt_abar", t, compute)
        sqrt_one_minus_abar = self._gather(table, "sqrt_one_minus_abar", t, compute)
        return (sqrt_abar * compute + sqrt_one_minus_abar * z.to(compute.dtype)).to(x0.dtype)

    def _forward_table(self, compute: torch.Tensor) -> dict[str, torch.Tensor]:
        """The q(x_t|x_0) coefficients diffusers uses for inputs of this dtype: float32 ones (bit-equal to diffusers'
        for float32 inputs) or, for float64 inputs, the float64 chain (diffusers casts abar_t to float64 first)."""
        return self._chain if compute.dtype == torch.float64 else self._forward

    def get_velocity(self, sample: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """v = sqrt(abar_t) z - sqrt(1-abar_t) x_0, the v-prediction target (Salimans & Ho 2022, sec. 4).

        Args: sample: x_0 (B, ...); noise: z (B, ...); timesteps: (B,). Returns v, same shape/dtype as x_0.
        """
        t = self._check_train_timesteps(timesteps, sample.shape[0])
        compute = sample if sample.dtype == torch.float64 else sample.float()
        table = self._forward_table(compute)
        sqrt_abar = self._gather(table, "sqrt_abar", t, compute)
        sqrt_one_minus_abar = self._gather(table, "sqrt_one_minus_abar", t, compute)
        return (sqrt_abar * noise.to(compute.dtype) - sqrt_one_minus_abar * compute).to(sample.dtype)

    # ------------------------------------------------- the forward chain, one step at a time
    def q_step_mean_variance(self, sample: torch.Tensor,
                             timesteps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q(x_t|x_{t-1}) = N(sqrt(1-beta_t) x_{t-1}, beta_t I) (note 000 二、1; note 002 (3); note 004 1.).

        `sample` is x_{t-1}: the sample at timestep `timesteps - 1` (x_0 for timestep 0; diffusers' 0-based timesteps,
        so timestep k is the notes' t = k+1). beta_t is 1 - abar_t/abar_{t-1} of the stored `alphas_cumprod`.

        Args: sample (B, ...), timesteps (B,) or a scalar.
        Returns (mean (B, ...), variance (B, 1, ...), log_variance (B, 1, ...)) in float32 or better.
        """
        t = self._check_train_timesteps(timesteps, sample.shape[0])
        x = sample if sample.dtype == torch.float64 else sample.float()
        mean = self._gather(self._chain, "sqrt_alpha", t, x) * x
        return mean, self._gather(self._chain, "beta", t, x), self._gather(self._chain, "log_beta", t, x)

    def add_noise_step(self, sample: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """One forward step, a draw from q(x_t|x_{t-1}): x_t = sqrt(1-beta_t) x_{t-1} + sqrt(beta_t) z
        (note 000 二、1, whose written "beta_t z" should be sqrt(beta_t) z; note 002 (3)).

        Composing it for timesteps 0..k gives a draw from q(x_k|x_0), the distribution `add_noise` samples in one go.

        Args: sample: x_{t-1} (B, ...), the sample at timestep `timesteps - 1`; noise: z ~ N(0, I), same shape;
            timesteps: (B,) or a scalar, diffusers' 0-based t.
        Returns: x_t, same shape and dtype as `sample` (computed in float32 or better, cast at the end).
        """
        t = self._check_train_timesteps(timesteps, sample.shape[0])
        if noise.shape != sample.shape:
            raise ValueError(f"noise shape {tuple(noise.shape)} does not match sample shape {tuple(sample.shape)}")
        x = sample if sample.dtype == torch.float64 else sample.float()
        sqrt_alpha = self._gather(self._chain, "sqrt_alpha", t, x)
        sqrt_beta = self._gather(self._chain, "sqrt_beta", t, x)
        return (sqrt_alpha * x + sqrt_beta * noise.to(x.dtype)).to(sample.dtype)

    def sample_forward_trajectory(
        self,
        original_samples: torch.Tensor,
        generator: torch.Generator | list[torch.Generator] | None = None,
    ) -> torch.Tensor:
        """A draw of the whole chain x_{1:T} ~ q(x_{1:T}|x_0) = prod_{t=1}^T q(x_t|x_{t-1}) (note 000 二、1, the
        Markov product of 一、2), by T calls of `add_noise_step`.

        Args:
            original_samples: x_0, shape (B, ...).
            generator: draws z_1..z_T in order, each shaped like x_0 (as diffusers' `randn_tensor`).
        Returns: [T+1 x B x ...] in x_0's dtype: entry k is the notes' x_k (entry 0 is x_0 itself, entry k >= 1 the
            sample at diffusers' timestep k-1).
        """
        x = original_samples
        trajectory = [x]
        for k in range(self.config.num_train_timesteps):
            t = torch.full((x.shape[0],), k, dtype=torch.long, device=x.device)
            x = self.add_noise_step(x, _draw_noise(x, generator), t)
            trajectory.append(x)
        return torch.stack(trajectory)

    def q_trajectory_log_prob(self, trajectory: torch.Tensor) -> torch.Tensor:
        """log q(x_{1:T}|x_0) = sum_{t=1}^T log N(x_t; sqrt(1-beta_t) x_{t-1}, beta_t I), the log of note 000's
        Markov product, summed over every dimension of an image.

        Args: trajectory: [T+1 x B x ...] as `sample_forward_trajectory` returns it (entry 0 is x_0).
        Returns: (B,) log-densities in nats, float32 or float64 (for float64 input).
        """
        T = self.config.num_train_timesteps
        if trajectory.ndim < 2 or trajectory.shape[0] != T + 1:
            raise ValueError(f"trajectory must have shape [T+1 x B x ...] with T+1={T + 1}, "
                             f"got {tuple(trajectory.shape)}")
        x = trajectory if trajectory.dtype == torch.float64 else trajectory.float()
        t = torch.arange(T, device=x.device)
        previous, current = x[:-1].flatten(0, 1), x[1:].flatten(0, 1)  # [T*B x ...], timestep-major
        step_t = t.repeat_interleave(x.shape[1])
        mean, variance, log_variance = self.q_step_mean_variance(previous, step_t)
        log_density = -0.5 * (math.log(2 * math.pi) + log_variance + (current - mean) ** 2 / variance)
        return log_density.reshape(T, x.shape[1], -1).sum(dim=(0, 2))

    # ------------------------------------------------------- the notes' math
    def q_mean_variance(self, original_samples: torch.Tensor, timesteps: torch.Tensor):
        """q(x_t|x_0) = N(sqrt(abar_t) x_0, (1-abar_t) I) (note 001 特性2; note 002 概率采样视角看加噪过程).

        Returns (mean (B, ...), variance (B, 1, ...), log_variance (B, 1, ...)) in float32 or better.
        """
        t = self._check_train_timesteps(timesteps, original_samples.shape[0])
        x0 = original_samples if original_samples.dtype == torch.float64 else original_samples.float()
        mean = self._gather(self._chain, "sqrt_abar", t, x0) * x0
        variance = self._gather(self._chain, "sqrt_one_minus_abar", t, x0) ** 2
        return mean, variance, torch.log(variance)

    def q_posterior_mean_variance(self, original_samples: torch.Tensor, noisy_samples: torch.Tensor,
                                  timesteps: torch.Tensor):
        """The posterior q(x_{t-1}|x_t, x_0) = N(tilde-mu, tilde-beta_t I) (note 001 逆向过程; note 002 逆向过程的
        符号表示, whose written "variance" is the precision 1/tilde-beta_t; see the module docstring).

        tilde-mu = sqrt(abar_{t-1}) beta_t/(1-abar_t) x_0 + sqrt(alpha_t)(1-abar_{t-1})/(1-abar_t) x_t.

        Args: x_0 and x_t of shape (B, ...), timesteps (B,).
        Returns (mean (B, ...), variance (B, 1, ...), log_variance_clipped (B, 1, ...)); at t=0 the variance is
        0 and the log variance is that of t=1 (Improved DDPM's clipping).
        """
        t = self._check_train_timesteps(timesteps, original_samples.shape[0])
        x0 = original_samples if original_samples.dtype == torch.float64 else original_samples.float()
        xt = noisy_samples.to(x0.dtype)
        mean = self._gather(self._chain, "coef_x0", t, x0) * x0 + self._gather(self._chain, "coef_xt", t, x0) * xt
        variance = self._gather(self._chain, "posterior_variance", t, x0) * (t > 0).reshape(
            -1, *([1] * (x0.ndim - 1))).to(x0.dtype)
        log_variance = self._gather(self._chain, "log_posterior_variance_clipped", t, x0)
        return mean, variance, log_variance

    def predict_original_from_epsilon(self, noisy_samples: torch.Tensor, timesteps: torch.Tensor,
                                      epsilon: torch.Tensor) -> torch.Tensor:
        """x_0 = (x_t - sqrt(1-abar_t) z) / sqrt(abar_t) (note 001 逆向过程). Shapes (B, ...), (B,), (B, ...)."""
        t = self._check_train_timesteps(timesteps, noisy_samples.shape[0])
        xt = noisy_samples if noisy_samples.dtype == torch.float64 else noisy_samples.float()
        return (xt - self._gather(self._chain, "sqrt_one_minus_abar", t, xt) * epsilon.to(xt.dtype)) / self._gather(
            self._chain, "sqrt_abar", t, xt)

    def predict_original_from_velocity(self, noisy_samples: torch.Tensor, timesteps: torch.Tensor,
                                       velocity: torch.Tensor) -> torch.Tensor:
        """x_0 = sqrt(abar_t) x_t - sqrt(1-abar_t) v (Salimans & Ho 2022). Shapes (B, ...), (B,), (B, ...)."""
        t = self._check_train_timesteps(timesteps, noisy_samples.shape[0])
        xt = noisy_samples if noisy_samples.dtype == torch.float64 else noisy_samples.float()
        return self._gather(self._chain, "sqrt_abar", t, xt) * xt - self._gather(
            self._chain, "sqrt_one_minus_abar", t, xt) * velocity.to(xt.dtype)

    def predict_mean_from_epsilon(self, noisy_samples: torch.Tensor, timesteps: torch.Tensor,
                                  epsilon: torch.Tensor) -> torch.Tensor:
        """The notes' closed form mu_theta = (x_t - beta_t / sqrt(1-abar_t) z_theta) / sqrt(alpha_t)
        (note 001 逆向过程; DDPM eq. 11). Equals the posterior mean at the unclipped x_0 estimate."""
        t = self._check_train_timesteps(timesteps, noisy_samples.shape[0])
        xt = noisy_samples if noisy_samples.dtype == torch.float64 else noisy_samples.float()
        beta = self._gather(self._chain, "beta", t, xt)
        return (xt - beta / self._gather(self._chain, "sqrt_one_minus_abar", t, xt) * epsilon.to(xt.dtype)) / (
            1 - beta).sqrt()

    def snr(self, timesteps: torch.Tensor) -> torch.Tensor:
        """Signal-to-noise ratio SNR(t) = abar_t / (1 - abar_t), float32 tensor shaped like `timesteps`."""
        t = torch.as_tensor(timesteps).long()
        return self._table_tensor(self._chain, "snr", t.device, torch.float64)[t].float()

    def reverse_distribution(self, model_output: torch.Tensor, noisy_samples: torch.Tensor,
                             timesteps: torch.Tensor, clip_denoised: bool = False) -> ReverseDistribution:
        """p_theta(x_{t-1}|x_t) on the full T-step chain, for likelihoods (note 002 变分下界; Improved DDPM
        sec. 2-3), for every prediction_type and variance_type.

        The mean is the posterior mean at the model's x_0 estimate (clipped to [-1, 1] when clip_denoised).
        The log variance follows Improved DDPM: fixed_small uses the clipped log tilde-beta_t, fixed_large uses
        log beta_t except log tilde-beta_1 at t=0, learned_range interpolates the clipped log tilde-beta_t and
        log beta_t, learned takes the log of the model's variance output (diffusers' "learned" convention).

        Args: model_output (B, C or 2C, ...), x_t (B, C, ...), timesteps (B,). Computed in float32 or better.
        """
        x_t = noisy_samples if noisy_samples.dtype == torch.float64 else noisy_samples.float()
        t = self._check_train_timesteps(timesteps, x_t.shape[0])
        model_output, predicted_variance = self._split_model_output(model_output.to(x_t.dtype), x_t)
        coef = lambda name: self._gather(self._chain, name, t, x_t)  # noqa: E731
        pred = self._original_from_output(model_output, x_t, coef)
        if clip_denoised:
            pred = pred.clamp(-1, 1)
        mean = coef("coef_x0") * pred + coef("coef_xt") * x_t

        log_small = coef("log_posterior_variance_clipped")
        if self.variance_type in ("fixed_small", "fixed_small_log"):
            log_variance = log_small
        elif self.variance_type in ("fixed_large", "fixed_large_log"):
            log_variance = torch.where(t.reshape(log_small.shape) == 0, log_small, coef("log_beta"))
        elif self.variance_type == "learned":
            log_variance = torch.log(predicted_variance.clamp(min=_MIN_VARIANCE))
        else:
            frac = (predicted_variance + 1) / 2
            log_variance = frac * coef("log_beta") + (1 - frac) * log_small
        return ReverseDistribution(mean=mean, log_variance=log_variance, pred_original_sample=pred)

    def __len__(self) -> int:
        return self.config.num_train_timesteps
