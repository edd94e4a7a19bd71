"""The one output rule of every export (export.staging.check_output), end to end through `finetune-studio`:

- a run folder, a folder inside one or a folder holding one is never an output (exit 2 naming it);
- an existing folder is replaced only when it holds an unchanged earlier export and --overwrite is given;
- anything else there (.git/, the user's notes, an edited Modelfile) is refused, naming it; nothing is deleted;
- every file of a GGUF export is named for the GGUF, so two quants of one run sit side by side;
- a run that is still training is not exported or merged;
- a read-only folder, a mount point or a disk that fills up during the merge end in exit 2 and one line.

The user's files are compared byte for byte before and after each refusal.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def _tree(folder: Path) -> dict[str, bytes | None]:
    """Every entry under `folder`: a file's bytes, None for a folder (so an emptied folder shows too)."""
    return {p.relative_to(folder).as_posix(): (p.read_bytes() if p.is_file() else None)
            for p in sorted(folder.rglob("*"))}


def _refused(result: subprocess.CompletedProcess, *phrases: str) -> str:
    """The one line of a refusal (exit 2, no traceback) that says each of `phrases`."""
    assert result.returncode == 2, (result.returncode, result.stdout[-2000:], result.stderr[-3000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("finetune-studio ")]
    assert len(lines) == 1, result.stderr[-3000:]
    for phrase in phrases:
        assert phrase in lines[0], lines[0]
    return lines[0]


def _ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-3000:])
    return result


@pytest.fixture
def run_copy(trained_run, tmp_path) -> Path:
    """A copy of the demo run, as the user's runs folder holds it."""
    run = tmp_path / "runs" / "demo-run"
    shutil.copytree(trained_run, run)
    return run


def test_a_run_folder_is_never_an_export_output_and_stays_byte_for_byte(run_copy, trained_run, tmp_path, run_studio):
    before = _tree(run_copy)
    _refused(run_studio("export", "adapter", trained_run, "--output", run_copy),
             f"{run_copy}: is a run folder")
    _refused(run_studio("export", "adapter", trained_run, "--output", run_copy, "--overwrite"), "is a run folder")
    _refused(run_studio("export", "gguf", run_copy, "--output", run_copy / "x.gguf"),
             f"{run_copy / 'x.gguf'}: is inside the run folder {run_copy}")
    _refused(run_studio("export", "adapter", trained_run, "--zip", "--output", run_copy / "adapter.zip"),
             "inside the run folder")
    _refused(run_studio("merge", trained_run, "--output", run_copy / "checkpoints"), "inside the run folder")
    _refused(run_studio("export", "adapter", trained_run, "--output", run_copy.parent, "--overwrite"),
             f"{run_copy.parent}: holds the run folder {run_copy}")
    assert _tree(run_copy) == before
    assert sorted(p.name for p in run_copy.parent.iterdir()) == ["demo-run"]


def test_a_re_export_never_deletes_a_git_repository_or_a_changelog(trained_run, tmp_path, run_studio):
    output = tmp_path / "support-adapter"
    _ok(run_studio("export", "adapter", trained_run, "--output", output))
    git = ["git", "-c", "user.name=u", "-c", "user.email=u@example.com", "-C", str(output)]
    subprocess.run(["git", "init", "-q", str(output)], check=True)
    (output / "CHANGELOG.md").write_text("# Changes\n\n- first adapter\n", encoding="utf-8")
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "adapter v1"], check=True)
    before = _tree(output)

    for extra in ((), ("--overwrite",)):
        _refused(run_studio("export", "adapter", trained_run, "--output", output, *extra),
                 f"{output}: holds .git/, which is not part of an earlier Finetune Studio export",
                 f"{output}-2", "nothing was changed")
    assert _tree(output) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["support-adapter"], "nothing staged or set aside is left"


def test_a_merge_never_deletes_the_users_notes_or_project_folder(trained_run, tmp_path, run_studio):
    output = tmp_path / "merged"
    _ok(run_studio("merge", trained_run, "--output", output))
    (output / "mynotes.txt").write_text("what I changed and why\n", encoding="utf-8")
    (output / "myproject").mkdir()
    (output / "myproject" / "main.py").write_text("print('mine')\n", encoding="utf-8")
    before = _tree(output)

    _refused(run_studio("merge", trained_run, "--output", output, "--overwrite"),
             f"{output}: holds myproject/, which is not part of an earlier Finetune Studio export")
    assert _tree(output) == before
    (output / "myproject" / "main.py").unlink()
    (output / "myproject").rmdir()
    _refused(run_studio("merge", trained_run, "--output", output, "--overwrite"), "holds mynotes.txt")
    assert (output / "mynotes.txt").read_text(encoding="utf-8") == "what I changed and why\n"


def test_two_quants_sit_side_by_side_and_an_edited_modelfile_is_never_replaced(trained_run, tmp_path, run_studio):
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "someone-else.gguf").write_bytes(b"GGUF not ours")  # a ~/models with other GGUFs is fine
    f16, q8 = folder / "demo-f16.gguf", folder / "demo-q8_0.gguf"
    _ok(run_studio("export", "gguf", trained_run, "--output", f16, "--type", "f16"))
    first = _tree(folder)
    _ok(run_studio("export", "gguf", trained_run, "--output", q8, "--type", "q8_0"))

    after = _tree(folder)
    assert {name: after[name] for name in first} == first, "the q8_0 export touched nothing of the f16 one"
    assert sorted(after) == ["demo-f16.Modelfile", "demo-f16.finetune_studio.json", "demo-f16.gguf",
                             "demo-f16.loss-curve.svg", "demo-f16.md",
                             "demo-q8_0.Modelfile", "demo-q8_0.finetune_studio.json", "demo-q8_0.gguf",
                             "demo-q8_0.loss-curve.svg", "demo-q8_0.md", "someone-else.gguf"]
    for gguf in (f16, q8):
        modelfile = gguf.with_suffix(".Modelfile").read_text(encoding="utf-8")
        assert f"FROM ./{gguf.name}\n" in modelfile and f"-f {gguf.stem}.Modelfile" in modelfile
        assert f"![Training loss]({gguf.stem}.loss-curve.svg)" in gguf.with_suffix(".md").read_text(encoding="utf-8")

    # The user tunes the q8_0 Modelfile by hand: a re-export, even with --overwrite, keeps it and says which file.
    edited = q8.with_suffix(".Modelfile")
    edited.write_text(edited.read_text(encoding="utf-8") + "PARAMETER temperature 0.2\n", encoding="utf-8")
    before = _tree(folder)
    _refused(run_studio("export", "gguf", trained_run, "--output", q8, "--type", "q8_0", "--overwrite"),
             f"{edited}: already exists and is not an unchanged Finetune Studio export", "demo-q8_0-2.gguf")
    _refused(run_studio("export", "gguf", trained_run, "--output", folder / "someone-else.gguf", "--overwrite"),
             "someone-else.gguf: already exists and is not an unchanged Finetune Studio export")
    assert _tree(folder) == before


def test_overwrite_replaces_an_unchanged_earlier_export_and_keeps_nothing_stale(trained_run, tmp_path, run_studio):
    output = tmp_path / "adapter-export"
    _ok(run_studio("export", "adapter", trained_run, "--output", output))
    assert (output / "loss-curve.svg").is_file()
    before = _tree(output)
    _refused(run_studio("export", "adapter", trained_run, "--output", output),
             f"{output}: holds an earlier export; add --overwrite to replace it")
    assert _tree(output) == before

    # The same adapter copied out of its run: its export has no run, so no loss curve — none may be left over.
    bare = tmp_path / "bare-adapter"
    shutil.copytree(trained_run / "adapter", bare)
    _ok(run_studio("export", "adapter", bare, "--output", output, "--overwrite"))
    assert not (output / "loss-curve.svg").exists()
    assert (output / "adapter_model.safetensors").read_bytes() == (bare / "adapter_model.safetensors").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter-export", "bare-adapter"], "nothing set aside left"

    gguf = tmp_path / "g" / "demo.gguf"
    _ok(run_studio("export", "gguf", trained_run, "--output", gguf, "--type", "f16"))
    _refused(run_studio("export", "gguf", trained_run, "--output", gguf, "--type", "q8_0"),
             f"{gguf}: is an earlier export; add --overwrite")
    _ok(run_studio("export", "gguf", trained_run, "--output", gguf, "--type", "q8_0", "--overwrite"))
    assert sorted(p.name for p in gguf.parent.iterdir()) == [
        "demo.Modelfile", "demo.finetune_studio.json", "demo.gguf", "demo.loss-curve.svg", "demo.md"]

    archive = tmp_path / "z" / "demo.zip"
    _ok(run_studio("export", "adapter", trained_run, "--zip", "--output", archive))
    _ok(run_studio("export", "adapter", trained_run, "--zip", "--output", archive, "--overwrite"))
    archive.write_bytes(archive.read_bytes() + b"\0")  # changed since: not ours to replace any more
    _refused(run_studio("export", "adapter", trained_run, "--zip", "--output", archive, "--overwrite"),
             "demo.zip: already exists and is not an unchanged Finetune Studio export")


def test_a_run_still_training_is_neither_exported_nor_merged(run_copy, tmp_path, run_studio):
    from studio.core.runs.store import RunDirectory

    lock = RunDirectory(run_copy).writer_lock()
    assert lock.acquire()  # the run's training process holds its lock for as long as it lives
    try:
        reason = f"{run_copy} is training, at step 60 of 60; stop it or wait"
        _refused(run_studio("export", "adapter", run_copy, "--output", tmp_path / "a"), reason)
        _refused(run_studio("export", "adapter", run_copy / "adapter", "--zip", "--output", tmp_path / "a.zip"),
                 reason)
        _refused(run_studio("export", "gguf", run_copy, "--output", tmp_path / "g" / "x.gguf"), reason)
        _refused(run_studio("merge", run_copy, "--output", tmp_path / "m"), reason)
    finally:
        lock.release()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]
    _ok(run_studio("export", "adapter", run_copy, "--output", tmp_path / "a"))


# --- read-only folders, mount points and a full disk: real tmpfs mounts in a private mount namespace ---------------


def _in_mount(mounts: list[tuple[Path, str]], *args: object) -> subprocess.CompletedProcess:
    """`finetune-studio ARGS` inside `unshare -m`, with each (folder, tmpfs options) mounted first. The tests run as
    root, where file modes do not stop a write: a read-only or a small tmpfs does."""
    script = " && ".join(f"mount -t tmpfs -o {options} tmpfs {shlex.quote(str(folder))}" for folder, options in mounts)
    command = " ".join(shlex.quote(str(a)) for a in (sys.executable, "-m", "studio", *args))
    return subprocess.run(["unshare", "-m", "sh", "-c", f"{script} && {command}; code=$?; ls -A "
                           + " ".join(shlex.quote(str(folder)) for folder, _ in mounts) + " >&2; exit $code"],
                          capture_output=True, text=True, timeout=600)


def _require_mounts(tmp_path: Path) -> None:
    probe = subprocess.run(["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {tmp_path}"],
                           capture_output=True, text=True)
    assert probe.returncode == 0, f"these tests need `unshare -m` and tmpfs mounts (as root): {probe.stderr}"


def test_merge_into_a_read_only_folder_or_onto_a_mount_point_is_one_line(trained_run, tmp_path):
    _require_mounts(tmp_path)
    mount = tmp_path / "ro"
    mount.mkdir()
    result = _in_mount([(mount, "ro,size=1m")], "merge", trained_run, "--output", mount)
    _refused(result, f"{mount}: is a mount point", "nothing was changed")
    assert "Merged model written" not in result.stderr
    result = _in_mount([(mount, "ro,size=1m")], "merge", trained_run, "--output", mount / "merged")
    _refused(result, f"{mount}: cannot write there", "nothing was changed")
    assert "Merged model written" not in result.stderr and result.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ro"], "nothing was staged beside the mount either"


@pytest.fixture(scope="module")
def merged_weight_bytes(trained_run, tmp_path_factory) -> int:
    """The bytes of the demo's merged weights: what the merge's space check asks of the disk."""
    from safetensors import safe_open

    from studio.core.export.merge import merge_adapter

    merged = merge_adapter(trained_run, tmp_path_factory.mktemp("size") / "merged")
    with safe_open(str(merged / "model.safetensors"), framework="pt") as weights:
        return sum(weights.get_tensor(name).numel() * 2 for name in weights.keys())  # bfloat16


@pytest.mark.parametrize("spare", [0, 24 * 1024], ids=["weights-write-fails", "tokenizer-write-fails"])
def test_a_disk_that_fills_during_the_merge_is_one_line_and_leaves_nothing(trained_run, merged_weight_bytes,
                                                                           tmp_path, spare):
    """The space check passes (the disk holds the weights' bytes), then a write meets ENOSPC: safetensors' own
    error (SafetensorError '... os error 28') when the weights' header does not fit, the tokenizer's when the
    weights do."""
    _require_mounts(tmp_path)
    disk = tmp_path / "full"
    disk.mkdir()
    result = _in_mount([(disk, f"size={merged_weight_bytes + spare}")], "merge", trained_run,
                       "--output", disk / "merged")
    line = _refused(result, f"no space left on {disk}", "nothing was changed")
    assert "not enough disk space" not in line, "the space check passed: the write itself met the full disk"
    assert "Merged model written" not in result.stderr and result.stdout == ""
    assert result.stderr.rstrip().splitlines()[-1] == line, "the mount is left empty (`ls -A` printed nothing)"
