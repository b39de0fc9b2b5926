"""Share a trained pipeline folder on the Hugging Face Hub.

The network boundary is one `huggingface_hub.HfApi`-like object (`api=`): `push_to_hub` calls only its
`create_repo` and `upload_folder`, so tests inject a fake and nothing here needs a connection.

What is uploaded: the diffusers pipeline folder (`model_index.json`, `unet/`, `scheduler/`, `README.md`,
sample images; for text-to-image also `vae/`, `text_encoder/`, `tokenizer/`), never the training leftovers next
to it (`checkpoint-*` and `vae-checkpoint-*` folders hold optimizer state and RNG pickles, `logs/` holds
tensorboard events, `*.tmp` and `.tmp-*` are half-written files).

The token is only ever passed on as an argument: it is never logged, printed or written to disk.
"""

import logging
import os
from pathlib import Path

from huggingface_hub.utils import HFValidationError, filter_repo_objects, validate_repo_id

from .errors import InputError

logger = logging.getLogger(__name__)

# Patterns use huggingface_hub's rules (fnmatch on the POSIX path relative to the folder; `*` crosses "/",
# a trailing "/" means "everything below").
UPLOAD_IGNORE_PATTERNS = (
    "checkpoint-*",
    ".tmp-checkpoint-*",
    "vae-checkpoint-*",  # text-to-image's VAE stage (ddpm_hub.vae.train_vae)
    ".tmp-vae-checkpoint-*",
    ".tmp-export-*",  # a part being written (ddpm_hub.export, ddpm_hub.text_to_image)
    "logs/",
    "*.tmp",
)


def _check_folder(folder: str | os.PathLike) -> Path:
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"folder {folder} does not exist or is not a directory; pass a trained pipeline folder")
    if not (folder / "model_index.json").is_file():
        raise InputError(
            f"folder {folder} has no model_index.json; "
            "pass a diffusers pipeline folder (the output_dir of a finished run)"
        )
    return folder


def is_repo_id(name: str) -> bool:
    """Whether `name` is a valid Hub repo id, 'name' or 'owner/name', by huggingface_hub's own rules
    (`validate_repo_id`). Callers that also accept local folders check the disk first: "my_images" is both."""
    if not isinstance(name, str):  # validate_repo_id lets None through
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def _check_repo_id(repo_id: str) -> str:
    if not is_repo_id(repo_id):
        raise InputError(
            f"repo_id {repo_id!r} is not valid: use 'name' or 'owner/name' made of letters, digits, '-', '_', '.' "
            "(not starting or ending with '-' or '.', no '--' or '..', at most 96 characters per part)"
        )
    return repo_id


def _ignore_patterns(extra: list[str] | str | None) -> list[str]:
    if extra is None:
        extra = []
    elif isinstance(extra, str):
        extra = [extra]
    return [*UPLOAD_IGNORE_PATTERNS, *extra]


def files_to_upload(folder: str | os.PathLike, ignore_patterns: list[str] | str | None = None) -> list[str]:
    """The POSIX paths (relative to `folder`) that `push_to_hub` would upload, computed with the same
    `huggingface_hub.utils.filter_repo_objects` that `HfApi.upload_folder` applies. Useful as a dry run."""
    folder = _check_folder(folder)
    relative = sorted(p.relative_to(folder).as_posix() for p in folder.glob("**/*") if p.is_file())
    return list(filter_repo_objects(relative, ignore_patterns=_ignore_patterns(ignore_patterns)))


def push_to_hub(
    folder: str | os.PathLike,
    repo_id: str,
    token: str | None = None,
    private: bool = False,
    commit_message: str = "Upload DDPM pipeline",
    api=None,
    ignore_patterns: list[str] | str | None = None,
) -> str:
    """Create (or reuse) the model repo `repo_id` and upload the pipeline folder to it; return the repo URL.

    `folder` must be a diffusers pipeline folder (it contains `model_index.json`). `checkpoint-*`,
    `vae-checkpoint-*`, `.tmp-*checkpoint-*`, `.tmp-export-*`, `logs/` and `*.tmp` are never uploaded, nor anything
    matching `ignore_patterns`.
    `token=None` uses the cached login (`hf auth login`) or the HF_TOKEN environment variable.
    `api` defaults to `huggingface_hub.HfApi()`.
    """
    folder = _check_folder(folder)
    repo_id = _check_repo_id(repo_id)
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi()
    patterns = _ignore_patterns(ignore_patterns)

    repo_url = api.create_repo(repo_id=repo_id, private=private, exist_ok=True, token=token, repo_type="model")
    # A bare "name" is created under the token's user; upload to the full id the Hub answered with.
    full_repo_id = getattr(repo_url, "repo_id", None) or repo_id
    logger.info("uploading %s to %s (ignoring %s)", folder, repo_url, ", ".join(patterns))
    api.upload_folder(
        repo_id=full_repo_id,
        folder_path=folder,
        commit_message=commit_message,
        token=token,
        ignore_patterns=patterns,
    )
    logger.info("uploaded %s", repo_url)
    return str(repo_url)
