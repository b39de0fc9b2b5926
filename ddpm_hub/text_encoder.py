"""The text side of text-to-image: a CLIP tokenizer built from the captions, a small CLIPTextModel, prompt embeddings.

Stable Diffusion runs the DDPM of the notes on VAE latents with a U-Net that attends to text embeddings
(note 001_efb2839ace1b9e21.txt, "Stable Diffusion" / "Speed up - Diffusion on Latent", the "unet-with-text"
figure). The text embeddings come from CLIP's text transformer (Radford et al. 2021, "Learning Transferable
Visual Models From Natural Language Supervision", section 2.4): lower-cased byte-level BPE, each sequence
bracketed by <|startoftext|> and <|endoftext|>, the top layer's activations as the per-token features and the
activation at <|endoftext|> as the pooled feature.

Here that text side is built small, from the captions of a dataset, in the stock formats: `build_clip_tokenizer`
trains BPE merges with the tokenizers library's BpeTrainer (Sennrich et al. 2016, "Neural Machine Translation of
Rare Words with Subword Units", Algorithm 1) until every caption word is one token, and returns a transformers
`CLIPTokenizer`; `build_text_encoder` makes a matching `CLIPTextModel`. Both save with `save_pretrained` into the
`tokenizer/` and `text_encoder/` folders that a stock `StableDiffusionPipeline` loads. `load_text_components` loads
a pretrained, frozen pair instead. `encode_prompts` computes the embeddings exactly as
`StableDiffusionPipeline.encode_prompt` does (diffusers 0.42.1), so training and sampling condition the U-Net on the
same tensors.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors import SafetensorError
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from .errors import InputError, one_line
from .hub import is_repo_id

logger = logging.getLogger(__name__)

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"  # also CLIP's pad and unknown token (openai/clip, Stable Diffusion 1.x)
END_OF_WORD = "</w>"  # CLIP's end-of-word suffix: "red</w>" is the whole word, "red" a prefix of a longer one
FLAG = "--pretrained_text_encoder_name_or_path"
TOKENIZER_FILES = ("tokenizer.json", "vocab.json + merges.txt")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json",  # .bin: transformers loads it weights_only
                "pytorch_model.bin", "pytorch_model.bin.index.json")
_LOAD_ERRORS = (OSError, ValueError, TypeError, KeyError, RuntimeError, SafetensorError)


# ---------------------------------------------------------------------------------------------------------
# tokenizer


def build_clip_tokenizer(captions: Sequence[str], model_max_length: int = 16) -> CLIPTokenizer:
    """A CLIP byte-level BPE tokenizer whose vocabulary holds every word of `captions` as one token.

    The vocabulary is laid out as CLIP's: the 256 byte-level symbols, the same with the end-of-word suffix
    "</w>", the result of each BPE merge, then <|startoftext|> and <|endoftext|> (the last id, as in CLIP; it is also
    the pad and unknown token). Merges are trained on the distinct caption words (`_train_merges`: BpeTrainer,
    Sennrich et al. 2016, Algorithm 1) until each word is a single symbol, so "red" encodes as the single token
    "red</w>", while a word never seen still encodes, as pieces and single characters, never as the unknown token.
    Captions are split into words by the tokenizer's own normalizer and pre-tokenizer (NFC, lower case, CLIP's
    regex), so training and encoding see the same words.

    captions: the caption strings (their order and repetitions do not matter: the same set of words gives the
        same tokenizer).
    model_max_length: the padded sequence length L, <|startoftext|> and <|endoftext|> included.
    """
    _check_captions(captions, "captions")
    if not captions:
        raise InputError("captions is empty: give at least one caption to build the tokenizer's vocabulary from")
    if isinstance(model_max_length, bool) or not isinstance(model_max_length, int) or model_max_length < 3:
        raise InputError(f"model_max_length {model_max_length!r} must be an integer >= 3 (<|startoftext|>, "
                         "at least one word, <|endoftext|>)")
    merges = _train_merges(_caption_words(captions))
    return CLIPTokenizer(vocab=_clip_vocab(merges), merges=merges, model_max_length=model_max_length)


def _train_merges(words: Sequence[str]) -> list[tuple[str, str]]:
    """BPE merges, in rank order, that turn each of `words` into one symbol: the tokenizers library's BpeTrainer
    (Sennrich et al. 2016, Algorithm 1: merge the most frequent adjacent pair, ties broken by the smaller pair of
    ids) run until no word has a pair left.

    words: distinct byte-level words as CLIP's pre-tokenizer yields them. Each is fed once, as one word (the
        training tokenizer has no normalizer or pre-tokenizer), so pair counts depend on the set of words only.
    """
    from tokenizers import Tokenizer, models, trainers
    from tokenizers.pre_tokenizers import ByteLevel

    trainer = trainers.BpeTrainer(
        # only a stop: every merge joins a pair in some word, so fewer than sum(len) merges make each word one
        # symbol, and the trainer's vocabulary (256 + 256 symbols + merge results) never reaches this size first
        vocab_size=512 + sum(len(word) for word in words),
        min_frequency=0,  # merge every pair that occurs, down to pairs of a single word
        end_of_word_suffix=END_OF_WORD,
        # Library gap (tokenizers 0.23, huggingface/tokenizers#1794, open PR #2066): the trainer numbers the
        # end-of-word symbols ("a</w>") in its word hash map's order, which changes from run to run, and breaks
        # count ties by those numbers, so the same words gave different merges in different processes. Listing
        # the 256 end-of-word symbols as the trainer's special tokens numbers them first, in a fixed order.
        special_tokens=[symbol + END_OF_WORD for symbol in sorted(ByteLevel.alphabet())],
        show_progress=False,
    )
    bpe = Tokenizer(models.BPE())
    bpe.train_from_iterator(words, trainer, length=len(words))
    return [tuple(pair) for pair in json.loads(bpe.to_str())["model"]["merges"]]


def _caption_words(captions: Sequence[str]) -> list[str]:
    """The distinct byte-level words of `captions`, split exactly as CLIPTokenizer splits text before BPE."""
    backend = CLIPTokenizer().backend_tokenizer  # the stock normalizer and pre-tokenizer, no vocabulary needed
    words = set()
    for caption in captions:
        pieces = backend.pre_tokenizer.pre_tokenize_str(backend.normalizer.normalize_str(caption))
        words.update(piece for piece, _ in pieces if piece not in (BOS_TOKEN, EOS_TOKEN))
    return sorted(words)


def _clip_vocab(merges: Sequence[tuple[str, str]]) -> dict[str, int]:
    """Token -> id in CLIP's layout: byte symbols, byte symbols + "</w>", merge results, special tokens."""
    from tokenizers.pre_tokenizers import ByteLevel

    alphabet = sorted(ByteLevel.alphabet())  # the 256 printable stand-ins of the bytes (GPT-2's bytes_to_unicode)
    tokens = alphabet + [symbol + END_OF_WORD for symbol in alphabet]
    tokens += [left + right for left, right in merges]
    tokens += [BOS_TOKEN, EOS_TOKEN]
    return {token: index for index, token in enumerate(dict.fromkeys(tokens))}  # first occurrence keeps its place


# ---------------------------------------------------------------------------------------------------------
# tokenization


def tokenize_captions(tokenizer: CLIPTokenizer, captions: str | Sequence[str]) -> torch.Tensor:
    """Token ids [N x L] (int64, L = tokenizer.model_max_length): <|startoftext|>, the words, <|endoftext|>, then
    padding; a caption longer than L is cut to L tokens (still ending in <|endoftext|>), and one warning says how
    many were cut. The same call as `StableDiffusionPipeline.encode_prompt` makes (diffusers 0.42.1)."""
    return _tokenize(tokenizer, captions).input_ids


def _tokenize(tokenizer: CLIPTokenizer, captions: str | Sequence[str], warn: bool = True):
    """The tokenizer's BatchEncoding (input_ids and attention_mask [N x L]), with the truncation warning unless
    warn=False."""
    captions = [captions] if isinstance(captions, str) else captions
    _check_captions(captions, "captions")
    if not captions:
        raise InputError("captions is empty: give at least one caption (an empty string is allowed)")
    length = _sequence_length(tokenizer)
    full_lengths = [len(ids) for ids in tokenizer(list(captions), verbose=False).input_ids]
    cut = sum(full > length for full in full_lengths)
    if cut and warn:
        logger.warning("%d of %d captions are longer than the tokenizer's model_max_length of %d tokens "
                       "(%s and %s included) and were truncated", cut, len(captions), length, BOS_TOKEN, EOS_TOKEN)
    return tokenizer(list(captions), padding="max_length", max_length=length, truncation=True, return_tensors="pt")


def _sequence_length(tokenizer: CLIPTokenizer) -> int:
    """tokenizer.model_max_length, which transformers sets to 1e30 for a tokenizer saved without one."""
    from transformers.tokenization_utils_base import VERY_LARGE_INTEGER

    if tokenizer.model_max_length >= VERY_LARGE_INTEGER:
        raise InputError("the tokenizer has no model_max_length (its tokenizer_config.json sets none): give one, "
                         "e.g. CLIPTokenizer.from_pretrained(folder, model_max_length=77)")
    return tokenizer.model_max_length


def _check_captions(captions: Sequence[str], name: str) -> None:
    if isinstance(captions, str) or not isinstance(captions, Sequence):
        raise InputError(f"{name} must be a list of strings, got {type(captions).__name__}")
    for index, caption in enumerate(captions):
        if not isinstance(caption, str):
            raise InputError(f"{name}[{index}] is {type(caption).__name__} {caption!r}: every caption must be a string")


# ---------------------------------------------------------------------------------------------------------
# text encoder


def text_encoder_config(
    tokenizer: CLIPTokenizer,
    hidden_size: int = 64,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 2,
    intermediate_size: int = 128,
) -> CLIPTextConfig:
    """A small CLIPTextConfig that matches `tokenizer`: vocab_size = len(tokenizer), max_position_embeddings = L,
    and its bos/eos/pad ids. CLIPTextModel's pooled output is the state at the first `eos_token_id` in each row
    (transformers 5, modeling_clip.py), so eos_token_id must be the tokenizer's <|endoftext|> id."""
    sizes = {"hidden_size": hidden_size, "num_hidden_layers": num_hidden_layers,
             "num_attention_heads": num_attention_heads, "intermediate_size": intermediate_size}
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"{name} {value!r} must be a positive integer")
    if hidden_size % num_attention_heads:
        raise InputError(f"hidden_size {hidden_size} must be a multiple of num_attention_heads {num_attention_heads}")
    if tokenizer.eos_token_id is None or tokenizer.bos_token_id is None:
        raise InputError("tokenizer has no bos or eos token: use a CLIP tokenizer (build_clip_tokenizer)")
    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=_sequence_length(tokenizer),
        projection_dim=hidden_size,  # used only by CLIPTextModelWithProjection
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **sizes,
    )


def build_text_encoder(tokenizer: CLIPTokenizer, seed: int = 0, **sizes: int) -> CLIPTextModel:
    """A freshly initialised CLIPTextModel for `tokenizer` (sizes as `text_encoder_config`), the same weights for
    the same seed; torch's global random state is left as it was."""
    config = text_encoder_config(tokenizer, **sizes)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CLIPTextModel(config)


def encode_prompts(
    tokenizer: CLIPTokenizer, text_encoder: CLIPTextModel, prompts: str | Sequence[str], warn_truncation: bool = True
) -> torch.Tensor:
    """Prompt embeddings [N x L x hidden_size]: the text encoder's last_hidden_state (after its final layer norm)
    on `tokenize_captions` ids, with the attention mask only if its config sets `use_attention_mask`, as
    `StableDiffusionPipeline.encode_prompt` computes them (diffusers 0.42.1, clip_skip=None). An empty prompt
    gives the unconditional embedding of classifier-free guidance. Gradients flow; wrap in `torch.no_grad()` for
    a frozen encoder. A DistributedDataParallel-wrapped encoder works too: its forward is called, so gradients are
    synchronised. warn_truncation=False leaves out the truncation warning (training checks its captions once up
    front; a warning every step would bury the log)."""
    tokens = _tokenize(tokenizer, prompts, warn=warn_truncation)
    model = getattr(text_encoder, "module", text_encoder)  # the model inside a DistributedDataParallel wrapper
    device = next(model.parameters()).device
    use_mask = getattr(model.config, "use_attention_mask", False)
    attention_mask = tokens.attention_mask.to(device) if use_mask else None
    return text_encoder(tokens.input_ids.to(device), attention_mask=attention_mask)[0]


# ---------------------------------------------------------------------------------------------------------
# pretrained


def load_text_components(
    path_or_id: str | os.PathLike,
    subfolder_tokenizer: str = "tokenizer",
    subfolder_text_encoder: str = "text_encoder",
) -> tuple[CLIPTokenizer, CLIPTextModel]:
    """A pretrained (tokenizer, text encoder) pair, the encoder frozen (requires_grad False, eval mode).

    path_or_id: a local Stable Diffusion folder (with `subfolder_tokenizer`/ and `subfolder_text_encoder`/), a
        local folder that is itself a tokenizer + CLIPTextModel (or CLIPModel) folder, or a Hugging Face Hub id
        of either layout. A missing component, an unreadable file, or a pair that does not fit together
        (tokenizer ids beyond the encoder's vocabulary, sequences longer than its positions) raise a one-line
        `InputError`.
    """
    name = os.fspath(path_or_id)
    root = _resolve(name, subfolder_tokenizer, subfolder_text_encoder)
    tokenizer_dir, encoder_dir = _component_dirs(root, name, subfolder_tokenizer, subfolder_text_encoder)
    tokenizer, text_encoder = _load_pair(name, tokenizer_dir, encoder_dir)
    _check_fit(name, tokenizer, text_encoder)
    text_encoder.requires_grad_(False)
    return tokenizer, text_encoder.eval()


def _resolve(name: str, tokenizer_sub: str, encoder_sub: str) -> Path:
    """The local folder to load from: `name` itself, or a Hub repo's files fetched into the cache."""
    root = Path(name).expanduser()
    if root.is_dir():
        return root
    if root.exists():
        raise InputError(f"{FLAG} {name!r} is a file: give a folder (or a Hugging Face Hub id)")
    if not is_repo_id(name):
        raise InputError(f"{FLAG} {name!r} does not exist: give a Stable Diffusion folder, a tokenizer + "
                         "CLIPTextModel folder, or a Hugging Face Hub id")
    return _download(name, tokenizer_sub, encoder_sub)


def _component_dirs(root: Path, name: str, tokenizer_sub: str, encoder_sub: str) -> tuple[Path, Path]:
    """The tokenizer and text-encoder folders: the two subfolders if either exists, else `root` itself; each
    checked for the files from_pretrained needs, so a missing one is named instead of failing deep inside."""
    subfolders = (root / tokenizer_sub, root / encoder_sub)
    present = [folder.name for folder in subfolders if folder.is_dir()]
    if len(present) == 1:
        absent = tokenizer_sub if present[0] == encoder_sub else encoder_sub
        raise InputError(f"{FLAG} {name!r} has a {present[0]}/ subfolder but no {absent}/ subfolder: "
                         "a Stable Diffusion folder needs both")
    tokenizer_dir, encoder_dir = subfolders if present else (root, root)
    layout = "" if present else f" (and no {tokenizer_sub}/ and {encoder_sub}/ subfolders)"
    if not _has_tokenizer_files(tokenizer_dir):
        raise InputError(f"{FLAG} {_where(name, root, tokenizer_dir)} has no tokenizer files{layout}: expected "
                         f"{' or '.join(TOKENIZER_FILES)}")
    missing = [] if (encoder_dir / "config.json").is_file() else ["config.json"]
    if not any((encoder_dir / weights).is_file() for weights in WEIGHT_FILES):
        missing.append("weights file (model.safetensors)")
    if missing:
        raise InputError(f"{FLAG} {_where(name, root, encoder_dir)} has no {' and no '.join(missing)}{layout}: "
                         "expected a CLIPTextModel saved with save_pretrained")
    return tokenizer_dir, encoder_dir


def _has_tokenizer_files(folder: Path) -> bool:
    return (folder / "tokenizer.json").is_file() or all((folder / f).is_file() for f in ("vocab.json", "merges.txt"))


def _where(name: str, root: Path, folder: Path) -> str:
    return repr(name) if folder == root else f"{name!r} subfolder {folder.name}/"


def _load_pair(name: str, tokenizer_dir: Path, encoder_dir: Path) -> tuple[CLIPTokenizer, CLIPTextModel]:
    """from_pretrained of both parts; unreadable files and weights that are not a CLIPTextModel -> InputError."""
    try:
        tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir)
    except Exception as error:  # the tokenizers library raises a bare Exception for a malformed tokenizer.json
        raise InputError(f"{FLAG} {name!r}: the tokenizer could not be read ({one_line(error, 300)})") from None
    try:
        text_encoder, info = CLIPTextModel.from_pretrained(encoder_dir, output_loading_info=True)
    except _LOAD_ERRORS as error:
        raise InputError(f"{FLAG} {name!r}: the text encoder could not be read ({one_line(error, 300)})") from None
    if info.get("missing_keys"):
        missing = sorted(info["missing_keys"])
        raise InputError(f"{FLAG} {name!r}: the text encoder's weights are not a CLIPTextModel's ({len(missing)} "
                         f"missing, e.g. {missing[0]})")
    return tokenizer, text_encoder


def _download(repo_id: str, tokenizer_sub: str, encoder_sub: str) -> Path:
    """The tokenizer and text-encoder files of a Hub repo (either layout; safetensors weights only), fetched into
    the Hugging Face cache (or found there when offline); the local folder that holds them."""
    from huggingface_hub import snapshot_download

    names = ["tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json",
             "config.json", "model.safetensors", "model.safetensors.index.json", "model-*-of-*.safetensors"]
    patterns = [prefix + name for prefix in ("", f"{tokenizer_sub}/", f"{encoder_sub}/") for name in names]
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except (OSError, ValueError) as error:  # offline, unreachable, no such repo, gated, invalid id
        raise InputError(f"{FLAG} {repo_id!r} is not a local folder and could not be fetched from the Hugging Face "
                         f"Hub ({type(error).__name__}: {one_line(error, 300)})") from None


def _check_fit(name: str, tokenizer: CLIPTokenizer, text_encoder: CLIPTextModel) -> None:
    """The tokenizer's ids and lengths must fit the encoder's embedding tables."""
    config = text_encoder.config
    try:
        length = _sequence_length(tokenizer)
    except InputError as error:
        raise InputError(f"{FLAG} {name!r}: {error}") from None
    if length > config.max_position_embeddings:
        raise InputError(f"{FLAG} {name!r}: the tokenizer's model_max_length {length} exceeds the text encoder's "
                         f"max_position_embeddings {config.max_position_embeddings}")
    if len(tokenizer) > config.vocab_size:
        raise InputError(f"{FLAG} {name!r}: the tokenizer has {len(tokenizer)} tokens but the text encoder only "
                         f"{config.vocab_size} embeddings")
