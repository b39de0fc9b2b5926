"""push_to_hub against a fake HfApi: what is called, what would be uploaded, and that the token never leaks."""

import logging

import huggingface_hub
import pytest
from huggingface_hub import RepoUrl
from huggingface_hub.utils import filter_repo_objects

from ddpm_hub.errors import InputError
from ddpm_hub.hub import UPLOAD_IGNORE_PATTERNS, files_to_upload, push_to_hub

TOKEN = "hf_FAKEtokenDoNotLeak0123456789abcdef"


class FakeHfApi:
    """Records calls; answers create_repo the way the Hub does (a RepoUrl under the caller's namespace)."""

    def __init__(self, user: str = "alice"):
        self.user = user
        self.calls = []

    def create_repo(self, repo_id, *, token=None, private=None, repo_type=None, exist_ok=False, **kwargs):
        self.calls.append(
            ("create_repo", dict(repo_id=repo_id, token=token, private=private, repo_type=repo_type, exist_ok=exist_ok))
        )
        full_id = repo_id if "/" in repo_id else f"{self.user}/{repo_id}"
        return RepoUrl(f"https://huggingface.co/{full_id}")

    def upload_folder(self, *, repo_id, folder_path, commit_message=None, token=None, ignore_patterns=None, **kwargs):
        self.calls.append(
            (
                "upload_folder",
                dict(
                    repo_id=repo_id,
                    folder_path=folder_path,
                    commit_message=commit_message,
                    token=token,
                    ignore_patterns=list(ignore_patterns),
                ),
            )
        )
        return None


PIPELINE_FILES = [
    "model_index.json",
    "README.md",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "scheduler/scheduler_config.json",
    "samples/final.png",
]
LEFTOVER_FILES = [
    "checkpoint-500/model.safetensors",
    "checkpoint-500/optimizer.bin",
    "checkpoint-500/random_states_0.pkl",
    "checkpoint-500/manifest.json",
    ".tmp-checkpoint-600/model.safetensors",
    ".tmp-checkpoint-600.old/optimizer.bin",
    "logs/train_ddpm/events.out.tfevents.1700000000.host.1.0",
    ".README.md.x1y2.tmp",
]


@pytest.fixture
def pipeline_dir(tmp_path):
    folder = tmp_path / "ddpm-butterflies"
    for name in PIPELINE_FILES + LEFTOVER_FILES:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}" if name.endswith(".json") else f"content of {name}")
    return folder


def _uploaded(api, folder):
    """What HfApi.upload_folder would really upload, with huggingface_hub's own filter."""
    (_, kwargs) = [call for call in api.calls if call[0] == "upload_folder"][0]
    relative = sorted(p.relative_to(folder).as_posix() for p in folder.glob("**/*") if p.is_file())
    return set(filter_repo_objects(relative, ignore_patterns=kwargs["ignore_patterns"]))


def test_push_calls_create_repo_then_upload_folder(pipeline_dir):
    api = FakeHfApi()
    url = push_to_hub(pipeline_dir, "alice/ddpm-butterflies", token=TOKEN, private=True, api=api)
    assert url == "https://huggingface.co/alice/ddpm-butterflies"
    assert [name for name, _ in api.calls] == ["create_repo", "upload_folder"]
    create, upload = api.calls[0][1], api.calls[1][1]
    assert create == dict(repo_id="alice/ddpm-butterflies", token=TOKEN, private=True, repo_type="model", exist_ok=True)
    assert upload["repo_id"] == "alice/ddpm-butterflies"
    assert upload["folder_path"] == pipeline_dir
    assert upload["commit_message"] == "Upload DDPM pipeline"
    assert upload["token"] == TOKEN
    assert set(UPLOAD_IGNORE_PATTERNS) <= set(upload["ignore_patterns"])


def test_bare_name_uploads_to_the_namespace_the_hub_answers_with(pipeline_dir):
    api = FakeHfApi(user="bob")
    url = push_to_hub(pipeline_dir, "ddpm-butterflies", api=api)
    assert url == "https://huggingface.co/bob/ddpm-butterflies"
    assert api.calls[0][1]["repo_id"] == "ddpm-butterflies"
    assert api.calls[0][1]["private"] is False
    assert api.calls[1][1]["repo_id"] == "bob/ddpm-butterflies"


def test_checkpoints_logs_and_temp_files_are_not_uploaded(pipeline_dir):
    api = FakeHfApi()
    push_to_hub(pipeline_dir, "alice/ddpm-butterflies", api=api)
    assert _uploaded(api, pipeline_dir) == set(PIPELINE_FILES)
    assert set(files_to_upload(pipeline_dir)) == set(PIPELINE_FILES)


def test_extra_ignore_patterns_are_added(pipeline_dir):
    api = FakeHfApi()
    push_to_hub(pipeline_dir, "alice/ddpm-butterflies", api=api, ignore_patterns=["samples/"], commit_message="v2")
    assert api.calls[1][1]["commit_message"] == "v2"
    assert _uploaded(api, pipeline_dir) == set(PIPELINE_FILES) - {"samples/final.png"}


def test_default_api_is_hfapi(pipeline_dir, monkeypatch):
    created = []

    def fake_hfapi():
        created.append(FakeHfApi())
        return created[-1]

    monkeypatch.setattr(huggingface_hub, "HfApi", fake_hfapi)
    push_to_hub(pipeline_dir, "alice/ddpm-butterflies")
    assert len(created) == 1 and len(created[0].calls) == 2


def test_token_is_never_logged_printed_or_written(pipeline_dir, tmp_path, caplog, capsys, monkeypatch):
    """The token reaches both Hub calls, and nothing else: not the log, stdout/stderr, the pipeline folder, nor any
    file under the home, Hugging Face cache or working directory (all pointed into tmp_path here)."""
    for variable, name in [("HOME", "home"), ("HF_HOME", "hf_home"), ("XDG_CACHE_HOME", "cache")]:
        (tmp_path / name).mkdir()
        monkeypatch.setenv(variable, str(tmp_path / name))
    monkeypatch.setenv("HF_TOKEN_PATH", str(tmp_path / "hf_home" / "token"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    before = {p: p.read_bytes() for p in pipeline_dir.rglob("*") if p.is_file()}
    api = FakeHfApi()
    with caplog.at_level(logging.DEBUG):
        push_to_hub(pipeline_dir, "alice/ddpm-butterflies", token=TOKEN, api=api)
    captured = capsys.readouterr()
    assert [(name, kwargs["token"]) for name, kwargs in api.calls] == [("create_repo", TOKEN), ("upload_folder", TOKEN)]
    assert caplog.records, "expected push_to_hub to log what it uploads"
    assert TOKEN not in caplog.text
    assert TOKEN not in captured.out and TOKEN not in captured.err
    after = {p: p.read_bytes() for p in pipeline_dir.rglob("*") if p.is_file()}
    assert after == before
    written = [p for p in tmp_path.rglob("*") if p.is_file() and TOKEN.encode() in p.read_bytes()]
    assert written == []


def test_missing_folder_is_input_error(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        push_to_hub(tmp_path / "nope", "alice/x", api=FakeHfApi())


def test_folder_without_model_index_is_input_error(pipeline_dir):
    (pipeline_dir / "model_index.json").unlink()
    api = FakeHfApi()
    with pytest.raises(InputError, match="model_index.json") as excinfo:
        push_to_hub(pipeline_dir, "alice/x", api=api)
    assert str(pipeline_dir) in str(excinfo.value)
    assert api.calls == []


@pytest.mark.parametrize(
    "repo_id",
    [
        "a/b/c",
        "alice/bad name",
        "alice/-leading",
        "alice/trailing.",
        "alice/double--dash",
        "https://huggingface.co/a/b",
        "",
        None,
    ],
)
def test_bad_repo_id_is_input_error(pipeline_dir, repo_id):
    api = FakeHfApi()
    with pytest.raises(InputError, match="repo_id"):
        push_to_hub(pipeline_dir, repo_id, api=api)
    assert api.calls == []
