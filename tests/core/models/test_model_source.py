"""Where models come from: a local HF cache layout, bundled shapes, Hub errors as messages, downloads."""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx2
import pytest

from studio.core.models import download
from studio.core.models.download import DownloadCancelled, DownloadProgress, describe_hub_error, download_model
from studio.core.models.source import (
    ModelSourceError, bundled_shape_for, cached_snapshot, find_model_config, list_cached_models, looks_like_hub_id,
)
from studio.core.system.paths import hf_cache_dir
from studio.core.models.layers import detect_linear_modules

COMMIT = "0123456789abcdef0123456789abcdef01234567"
TINY_LLAMA = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 256,
    "tie_word_embeddings": True,
}


def _link(target: Path, link: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    try:
        link.symlink_to(os.path.relpath(target, link.parent))
    except OSError:  # no symlinks (Windows without developer mode): the cache then holds copies
        link.write_bytes(target.read_bytes())


def make_cached_repo(cache: Path, repo_id: str, files: dict[str, bytes], *, kind: str = "models") -> Path:
    """A Hugging Face cache entry as huggingface_hub writes it: blobs, refs/main, snapshots/<commit>/ links."""
    repo = cache / f"{kind}--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    for index, (name, content) in enumerate(files.items()):
        blob = repo / "blobs" / f"{index:040x}"
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(content)
        _link(blob, repo / "snapshots" / COMMIT / name)
    return repo / "snapshots" / COMMIT


@pytest.fixture
def hf_cache(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture
def cached_model(hf_cache) -> Path:
    return make_cached_repo(hf_cache, "acme/tiny-llama", {
        "config.json": json.dumps(TINY_LLAMA).encode(),
        "model.safetensors": b"\0" * 4096,
        "tokenizer.json": b"{}",
    })


# ------------------------------------------------------------------ the cache


def test_cached_models_are_listed_with_their_size(hf_cache, cached_model):
    make_cached_repo(hf_cache, "acme/tokenizer-only", {"tokenizer.json": b"{}"})
    make_cached_repo(hf_cache, "acme/some-data", {"config.json": b"{}"}, kind="datasets")
    models = list_cached_models()
    assert [m.repo_id for m in models] == ["acme/tiny-llama"]
    (model,) = models
    config_size = len(json.dumps(TINY_LLAMA).encode())
    assert model.size_bytes == config_size + 4096 + 2
    assert model.snapshot_path == cached_model
    assert model.has_weights
    assert model.size_text.endswith("MiB")


def test_the_cache_folder_is_read_from_the_environment_at_call_time(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    assert hf_cache_dir() == tmp_path / "hf-home" / "hub"
    assert list_cached_models() == [], "a cache that does not exist yet is empty, not an error"


def test_a_cached_hub_id_resolves_to_its_snapshot(cached_model):
    assert cached_snapshot("acme/tiny-llama") == cached_model
    source = find_model_config("acme/tiny-llama")
    assert source.origin == "cache" and source.config["hidden_size"] == 64
    assert "cache" in source.description
    assert cached_snapshot("acme/not-here") is None


def test_model_config_from_a_folder_a_file_a_bundled_shape_or_nowhere(tmp_path, hf_cache):
    folder = tmp_path / "my-model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(TINY_LLAMA))
    assert find_model_config(str(folder)).origin == "folder"
    assert find_model_config(str(folder / "config.json")).config["vocab_size"] == 256

    bundled = find_model_config("meta-llama/Llama-3.1-8B-Instruct")
    assert bundled.origin == "bundled" and bundled.name == "llama-3.1-8b"
    assert find_model_config("qwen2.5-7b").config["vocab_size"] == 152064

    with pytest.raises(ModelSourceError, match="not in the local Hugging Face cache"):
        find_model_config("acme/unknown-model")
    with pytest.raises(ModelSourceError, match="no config.json"):
        find_model_config(str(tmp_path))
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ModelSourceError, match="not valid JSON"):
        find_model_config(str(folder))


def test_bundled_shapes_match_published_ids_and_their_instruct_variants():
    assert bundled_shape_for("mistralai/Mistral-7B-Instruct-v0.3").stem == "mistral-7b"
    assert bundled_shape_for("Qwen/Qwen2.5-7B-Instruct").stem == "qwen2.5-7b"
    assert bundled_shape_for("meta-llama/Llama-3.2-1B-Instruct").stem == "llama-3.2-1b"
    assert bundled_shape_for("meta-llama/Llama-3.3-70B-Instruct") is None


def test_hub_ids_and_folders_are_told_apart(tmp_path):
    assert looks_like_hub_id("meta-llama/Llama-3.2-1B")
    assert not looks_like_hub_id("just-a-name")
    assert not looks_like_hub_id(str(tmp_path))


# ------------------------------------------------------------------ linear layers on the meta device


def test_linear_layers_are_read_from_config_json_without_weights(tmp_path):
    folder = tmp_path / "tiny"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(TINY_LLAMA))
    modules = detect_linear_modules(str(folder))
    assert modules.attention == ("q_proj", "k_proj", "v_proj", "o_proj")
    assert modules.mlp == ("gate_proj", "up_proj", "down_proj")
    assert "lm_head" not in modules.all


# ------------------------------------------------------------------ Hub errors a user can act on


def _response(status: int) -> httpx2.Response:
    return httpx2.Response(status, request=httpx2.Request("GET", "https://huggingface.co/api/models/acme/x"))


def test_a_gated_model_without_a_token_says_how_to_log_in(monkeypatch):
    from huggingface_hub.errors import GatedRepoError

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    message = describe_hub_error(GatedRepoError("restricted", response=_response(401)), "meta-llama/Llama-3.1-8B")
    assert "gated" in message and "hf auth login" in message and "HF_TOKEN" in message
    assert "https://huggingface.co/meta-llama/Llama-3.1-8B" in message

    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_xxx")
    message = describe_hub_error(GatedRepoError("restricted", response=_response(403)), "meta-llama/Llama-3.1-8B")
    assert "accept its licence" in message and "hf auth login" not in message


def test_no_network_and_offline_mode_are_named():
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled, RepositoryNotFoundError

    assert "no network" in describe_hub_error(LocalEntryNotFoundError("check your internet"), "a/b")
    assert "no network" in describe_hub_error(httpx2.ConnectError("dns failure"), "a/b")
    try:
        raise LocalEntryNotFoundError("not cached") from OfflineModeIsEnabled("offline")
    except LocalEntryNotFoundError as error:
        assert "HF_HUB_OFFLINE" in describe_hub_error(error, "a/b")
    assert "no such model" in describe_hub_error(RepositoryNotFoundError("404", response=_response(404)), "a/b")


def test_offline_download_of_a_cached_model_returns_its_snapshot(cached_model, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert download_model("acme/tiny-llama") == cached_model
    with pytest.raises(ModelSourceError, match="offline mode"):
        download_model("acme/not-cached")
    with pytest.raises(ModelSourceError, match="not a Hub id"):
        download_model("not an id")


# ------------------------------------------------------------------ progress and cancel


class _FakeInfo:
    sha = COMMIT
    siblings = [type("S", (), {"rfilename": n})() for n in ("config.json", "model.safetensors", "model.bin")]


def _fake_hub(monkeypatch, *, chunks: int, error: Exception | None = None) -> dict:
    """snapshot_download that drives the given tqdm class like huggingface_hub does (files bar, bytes bar)."""
    import huggingface_hub

    seen: dict = {}

    def snapshot_download(repo_id, *, revision, cache_dir, ignore_patterns, tqdm_class):
        seen.update(revision=revision, ignore=ignore_patterns)
        files = tqdm_class(desc="Fetching 2 files", total=2)
        data = tqdm_class(desc="Reconstructing (incomplete total...)", total=0, unit="B")
        data.total = chunks * 1000
        for _ in range(chunks):
            if error is not None:
                raise error
            data.update(1000)
        files.update(2)
        return str(Path(cache_dir) / "snapshots" / COMMIT)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", lambda self, repo_id: _FakeInfo())
    return seen


def test_download_reports_bytes_and_skips_duplicate_weight_formats(hf_cache, monkeypatch):
    seen = _fake_hub(monkeypatch, chunks=5)
    reports: list[DownloadProgress] = []
    folder = download_model("acme/big", progress=reports.append, report_interval_s=0)
    assert folder == hf_cache / "snapshots" / COMMIT
    assert seen["revision"] == COMMIT
    assert "*.bin" in seen["ignore"] and "original/*" in seen["ignore"]
    assert reports[-1].files_done == reports[-1].files_total == 2
    assert max(r.done_bytes for r in reports) == 5000 and reports[-1].total_bytes == 5000
    assert reports[-1].fraction == 1.0


def test_cancel_stops_the_download_with_a_resume_hint(hf_cache, monkeypatch):
    _fake_hub(monkeypatch, chunks=100)
    calls = []

    def should_cancel() -> bool:
        calls.append(1)
        return len(calls) > 3

    with pytest.raises(DownloadCancelled, match="resume"):
        download_model("acme/big", should_cancel=should_cancel)


def test_a_gated_download_becomes_a_login_message(hf_cache, monkeypatch):
    from huggingface_hub.errors import GatedRepoError

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    _fake_hub(monkeypatch, chunks=1, error=GatedRepoError("restricted", response=_response(401)))
    with pytest.raises(ModelSourceError, match="hf auth login"):
        download_model("meta-llama/Llama-3.1-8B")


def test_the_progress_bar_class_prints_nothing(capsys):
    bar_class = download._progress_bar_class(lambda role, n, total: None, lambda: False)
    bar = bar_class(desc="Reconstructing", total=10, unit="B")
    bar.update(10)
    bar.close()
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_a_base_from_the_hub_cache_is_named_by_its_hub_id_on_model_cards(tmp_path):
    from studio.core.runs.record import RunSummary
    from studio.core.export.model_card import model_card
    from studio.core.system.paths import hub_id_of

    snapshot = tmp_path / "hub" / "models--HuggingFaceTB--SmolLM2-135M-Instruct" / "snapshots" / "0123abc"
    assert hub_id_of(str(snapshot)) == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert hub_id_of("meta-llama/Llama-3.2-3B-Instruct") == "meta-llama/Llama-3.2-3B-Instruct"
    assert hub_id_of(str(tmp_path / "my-model")) == str(tmp_path / "my-model")

    card = model_card(RunSummary(run_name="r", base_model=str(snapshot)), "merged")
    assert 'base_model: "HuggingFaceTB/SmolLM2-135M-Instruct"' in card
    assert str(snapshot) not in card


def test_layer_names_found_once_are_known_at_the_next_start_without_torch(demo_assets, tmp_path, monkeypatch):
    """After a relaunch the Config tab said "Reading the model's layer names…" for minutes: the read imports
    PyTorch and transformers. Names read once are kept per config.json and come back without that import."""
    import shutil
    import subprocess
    import sys

    from studio.core.models.layers import cached_linear_modules, detect_linear_modules

    monkeypatch.setenv("FINETUNE_STUDIO_HOME", str(tmp_path / "home"))
    model = tmp_path / "model"
    shutil.copytree(demo_assets.model_dir, model)
    assert cached_linear_modules(str(model)) is None
    found = detect_linear_modules(str(model))
    assert "q_proj" in found.attention

    code = ("import sys; from studio.core.models.layers import cached_linear_modules; "
            "m = cached_linear_modules(sys.argv[1]); print(','.join(m.all)); "
            "print('torch' in sys.modules, 'transformers' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code, str(model)], capture_output=True, text=True, check=True)
    names, imported = done.stdout.splitlines()
    assert names.split(",") == list(found.all) and imported == "False False"

    config = (model / "config.json").read_text()
    (model / "config.json").write_text(config.replace('"num_hidden_layers": 2', '"num_hidden_layers": 3'))
    assert cached_linear_modules(str(model)) is None, "another config is another model"
