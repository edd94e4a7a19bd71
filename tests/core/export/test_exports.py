"""Exports behave like the model in the app: merged weights, GGUF (f16 / q8_0) and the adapter folder.

Tolerances, and why:
- merged vs base + adapter: the merged model is stored in bfloat16 (8 significant bits), while the
  app runs base + adapter in float32 on CPU. Each merged weight is therefore off by up to 2^-9
  relative; on the demo's logits (|logit| ≤ ~11) that is ≤ 0.12 in practice. The test allows 0.25
  absolute and demands the same greedy token at every trained position (the smallest top-1 margin
  there is ~2, far above the rounding).
- GGUF f16 vs the merged model: exact — bf16 values are representable in f16, so after the same
  Q/K permutation the bits must match.
- GGUF q8_0: each block of 32 values is stored as int8 times one f16 scale d = max|x| / 127, so
  rounding is at most d/2, plus the scale's own f16 rounding (≤ 127 · d · 2^-11 ≈ 0.06 d): bound 0.6 d.
- llama.cpp vs transformers logits on random tiny models: ≤ 0.05 absolute (f16 weights and
  llama.cpp's f16 matmuls; observed ~0.011 with logits up to ~5).
"""

from __future__ import annotations

import errno
import json
import threading
import xml.etree.ElementTree as ElementTree
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest

from studio.core.models.source import ModelLoadError
from studio.core.export.adapter import export_adapter, export_adapter_zip
from studio.core.export.staging import ExportCancelled, ExportError
from studio.core.export.gguf import export_gguf
from studio.core.export.model_card import loss_curve_svg
from studio.core.system.tasks import Task
from exports_shared import _tiny_model  # noqa: F401  (shared with the other half)


def _fake_adapter(folder: Path, base: str = "/nonexistent/base-model") -> Path:
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": base, "peft_type": "LORA"}))
    (folder / "adapter_model.safetensors").write_bytes(b"\0" * 4096)
    return folder


def _nothing_left(output: Path) -> bool:
    return not output.exists() and not list(output.parent.glob(output.name + ".partial*")) \
        and not list(output.parent.glob("." + output.name + ".partial*"))


# --- failures a user can cause: clear messages, nothing half-written -------------------------------------------


def test_exporting_a_folder_without_an_adapter_names_it(tmp_path):
    with pytest.raises(ExportError, match=str(tmp_path)):
        export_adapter(tmp_path, tmp_path / "out")


def _user_folder(folder: Path) -> dict[str, bytes]:
    """A folder of the user's own files; returns them so a test can check they are untouched."""
    (folder / "sub" / "deep").mkdir(parents=True)
    (folder / "keep.txt").write_text("my notes")
    (folder / "sub" / "deep" / "file.txt").write_text("more")
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_an_export_never_replaces_a_folder_of_the_users_own_files(tmp_path):
    adapter = _fake_adapter(tmp_path / "adapter")
    target = tmp_path / "project"
    before = _user_folder(target)

    with pytest.raises(ExportError, match=r"project: holds keep.txt, which is not part of an earlier Finetune "
                                          r"Studio export; choose a new folder \(e.g. .*project-2\)"):
        export_adapter(adapter, target)
    assert {str(p.relative_to(target)): p.read_bytes() for p in target.rglob("*") if p.is_file()} == before
    (tmp_path / "folder.zip").mkdir()
    with pytest.raises(ExportError, match="is a folder"):
        export_adapter_zip(adapter, tmp_path / "folder.zip")
    with pytest.raises(ExportError, match="not part of an earlier Finetune Studio export"):
        export_adapter(adapter, target / "..")  # "..": the folder holding the adapter itself
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()


def test_an_earlier_export_or_an_empty_folder_is_replaced(tmp_path):
    from studio.core.export.staging import OutputNeedsOverwrite

    adapter = _fake_adapter(tmp_path / "adapter")
    (tmp_path / "empty").mkdir()
    assert export_adapter(adapter, tmp_path / "empty") == tmp_path / "empty"
    (adapter / "adapter_model.safetensors").write_bytes(b"\1" * 4096)
    with pytest.raises(OutputNeedsOverwrite, match="holds an earlier export; add --overwrite"):
        export_adapter(adapter, tmp_path / "empty")
    assert (tmp_path / "empty" / "adapter_model.safetensors").read_bytes() == b"\0" * 4096
    export_adapter(adapter, tmp_path / "empty", overwrite=True)  # the earlier export, its files unchanged
    assert (tmp_path / "empty" / "adapter_model.safetensors").read_bytes() == b"\1" * 4096


def test_a_gguf_export_keeps_a_modelfile_it_did_not_write_and_ignores_other_files(tmp_path):
    adapter = _fake_adapter(tmp_path / "adapter")
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "README.md").write_text("# my project\n")
    (tmp_path / "proj" / "model.Modelfile").write_text("FROM ./mine.gguf\n")
    with pytest.raises(ExportError, match=r"model.Modelfile: already exists and is not an unchanged Finetune Studio "
                                          r"export; choose a new name \(e.g. model-2.gguf\)"):
        export_gguf(adapter, tmp_path / "proj" / "model.gguf")
    assert (tmp_path / "proj" / "README.md").read_text() == "# my project\n"
    assert (tmp_path / "proj" / "model.Modelfile").read_text() == "FROM ./mine.gguf\n"
    assert sorted(p.name for p in (tmp_path / "proj").iterdir()) == ["README.md", "model.Modelfile"]


def test_cli_merge_into_the_current_folder_is_bad_input_and_deletes_nothing(tmp_path, run_studio):
    adapter = _fake_adapter(tmp_path / "adapter")
    before = _user_folder(tmp_path / "work")
    result = run_studio("merge", adapter, "--output", ".", cwd=tmp_path / "work")

    assert result.returncode == 2, result.stderr[-2000:]
    assert "not part of an earlier Finetune Studio export" in result.stderr and "Traceback" not in result.stderr
    work = tmp_path / "work"
    assert {str(p.relative_to(work)): p.read_bytes() for p in work.rglob("*") if p.is_file()} == before


def test_a_full_disk_is_reported_naming_the_folder_and_leaves_nothing(tmp_path, monkeypatch):
    adapter = _fake_adapter(tmp_path / "adapter")
    output = tmp_path / "exports" / "my-adapter"

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("studio.core.export.staging.shutil.copy2", disk_full)
    with pytest.raises(ExportError) as error:
        export_adapter(adapter, output)

    assert str(output.parent) in str(error.value) and "no space left on" in str(error.value)
    assert _nothing_left(output)


def test_too_little_free_space_is_refused_before_writing(tmp_path, monkeypatch):
    adapter = _fake_adapter(tmp_path / "adapter")
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr("studio.core.export.staging.shutil.disk_usage", lambda path: usage(100, 90, 10))
    with pytest.raises(ExportError, match="not enough disk space"):
        export_adapter(adapter, tmp_path / "out")
    assert _nothing_left(tmp_path / "out")


def test_cancel_during_an_export_leaves_nothing(tmp_path):
    adapter = _fake_adapter(tmp_path / "adapter")
    cancel = threading.Event()
    seen = []

    def progress(fraction, message):
        seen.append(fraction)
        if len(seen) == 2:
            cancel.set()  # the user presses Cancel while files are being copied

    with pytest.raises(ExportCancelled):
        export_adapter_zip(adapter, tmp_path / "adapter.zip", task=Task(progress, cancel=cancel))
    assert _nothing_left(tmp_path / "adapter.zip")
    assert not list(tmp_path.glob("*-folder"))


def test_merging_onto_a_missing_base_model_names_it(tmp_path):
    from studio.core.export.merge import merge_adapter

    adapter = _fake_adapter(tmp_path / "adapter", base=str(tmp_path / "gone" / "base"))
    with pytest.raises(ModelLoadError, match=str(tmp_path / "gone" / "base")):
        merge_adapter(adapter, tmp_path / "merged")
    assert _nothing_left(tmp_path / "merged")


def test_gguf_export_of_a_missing_folder_is_bad_input(tmp_path, run_studio):
    result = run_studio("export", "gguf", tmp_path / "nothing", "--output", tmp_path / "x.gguf", "--type", "q8_0")
    assert result.returncode == 2
    assert str(tmp_path / "nothing") in result.stderr


def test_the_loss_curve_is_an_svg_with_one_point_per_step():
    losses = [(step, 8.0 / step) for step in range(1, 61)]
    svg = ElementTree.fromstring(loss_curve_svg(losses, [(30, 0.5), (60, 0.3)]))

    lines = svg.findall("{http://www.w3.org/2000/svg}polyline")
    assert len(lines) == 3  # raw, smoothed, eval
    assert len(lines[0].get("points").split()) == 60


# --- GGUF for each supported family, checked against llama.cpp itself where it is installed ----------------------




def test_cancelling_a_gguf_export_midway_leaves_no_file_and_no_modelfile(tmp_path, demo_assets):
    _tiny_model("llama3.1", tmp_path / "model", demo_assets.model_dir)
    output = tmp_path / "out" / "model.gguf"
    cancel = threading.Event()

    def progress(fraction, message):
        if message.startswith("Writing blk.0"):
            cancel.set()

    with pytest.raises(ExportCancelled):
        export_gguf(tmp_path / "model", output, gguf_type="q8_0", task=Task(progress, cancel=cancel))
    assert _nothing_left(output)
    assert not (output.parent / "Modelfile").exists()


def test_a_full_disk_while_writing_gguf_names_the_folder(tmp_path, demo_assets, monkeypatch):
    import gguf

    _tiny_model("qwen2", tmp_path / "model", demo_assets.model_dir)
    output = tmp_path / "out" / "model.gguf"

    def disk_full(self, tensor, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(gguf.GGUFWriter, "write_tensor_data", disk_full)
    with pytest.raises(ExportError) as error:
        export_gguf(tmp_path / "model", output)
    assert str(output.parent) in str(error.value) and "no space left on" in str(error.value)
    assert _nothing_left(output)


def test_a_gguf_export_from_an_adapter_removes_its_merged_copy_and_those_a_killed_export_left(tmp_path,
                                                                                              monkeypatch):
    """The merged copy is as big as the model: Ctrl-C must not leave it, nor may a kill -9 leave it for good."""
    from studio.core.export import merge
    from studio.core.system.folder_lock import FolderLock

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    out = tmp_path / "out"
    abandoned = out / ".merge-killed"
    (abandoned / "merged").mkdir(parents=True)
    (abandoned / "merged" / "model.safetensors").write_bytes(b"\0" * 1024)
    live = out / ".merge-live"  # another export into the same folder, still working
    (live / "merged").mkdir(parents=True)
    in_use = FolderLock(live / ".in-use")
    assert in_use.acquire()
    seen = []

    def interrupted_merge(source, target, **kwargs):
        seen.append(sorted(p.name for p in out.glob(".merge-*")))
        target.mkdir()
        (target / "model.safetensors").write_bytes(b"\0" * 1024)
        raise KeyboardInterrupt

    monkeypatch.setattr(merge, "merge_adapter", interrupted_merge)
    try:
        with pytest.raises(KeyboardInterrupt):
            export_gguf(adapter, out / "model.gguf")
        assert len(seen) == 1 and ".merge-killed" not in seen[0] and ".merge-live" in seen[0], seen
        assert sorted(p.name for p in out.glob(".merge-*")) == [".merge-live"]
    finally:
        in_use.release()
