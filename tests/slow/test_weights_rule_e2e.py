"""One rule for every load of weights, and an adapter is checked against the base it is put on.

- Pickle weights (pytorch_model.bin, adapter_model.bin) are never read without the user's opt-in (model.allow_pickle,
  --allow-pickle): chat, eval and merge used to load a folder holding only pytorch_model.bin, and a crafted pickle was
  stopped only by torch's weights-only loader, with an UnpicklingError traceback. Now every command refuses such a
  folder with exit 2 and one line naming the file and `finetune-studio convert`, before any library opens it.
- An adapter trained on a base of other layer sizes is refused by name ("adapter X was trained on base Y; this base
  is Z"), where chat, eval and merge ended in a `size mismatch` traceback and training in `failed (crash)`.
- The one-shot `chat --prompt` says which base weights answer, as the interactive chat does.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from weights_folders import folders  # noqa: F401  (the module's fixture)


def _tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_line_refusal(result, *expected: str) -> str:
    """Exit 2 and one line saying why (after any progress line the command printed as it went), no traceback."""
    err = result.stderr.strip()
    assert result.returncode == 2, (result.returncode, result.stdout[-2000:], err[-4000:])
    lines = err.splitlines()
    said = [line for line in lines if line.startswith("finetune-studio ")]
    assert "Traceback" not in err and len(said) == 1 and lines[-1] == said[0], err
    for text in expected:
        assert text in said[0], (text, err)
    return said[0]


# --------------------------------------------------------------------------------------- item 3: pickles


def test_every_command_refuses_a_crafted_pickle_base_naming_the_file_and_the_convert_command(folders, demo_assets,
                                                                                             run_studio):
    crafted, marker, root = folders["crafted"], folders["marker"], folders["root"]
    named = (f"{crafted / 'pytorch_model.bin'}: pickle weights are not loaded",
             f"finetune-studio convert {crafted} --allow-pickle")
    _one_line_refusal(run_studio("chat", "--model", crafted, "--prompt", "hello"), *named)
    _one_line_refusal(run_studio("chat", "--model", folders["on_crafted"], "--prompt", "hello"), *named)
    _one_line_refusal(run_studio("eval", crafted, "--data", demo_assets.dataset_path, "--output",
                                 root / "eval-out"), *named)
    _one_line_refusal(run_studio("merge", folders["on_crafted"], "--output", root / "merged"), *named)
    _one_line_refusal(run_studio("merge", folders["adapter"], "--base", crafted, "--output", root / "merged"), *named)
    _one_line_refusal(run_studio("export", "gguf", folders["on_crafted"], "--output", root / "gguf" / "m.gguf"),
                      *named)
    assert not marker.exists(), "a crafted pickle ran its code"
    assert not (root / "merged").exists()


def test_a_crafted_pickle_adapter_is_refused_by_chat_eval_and_merge(folders, demo_assets, run_studio):
    crafted_adapter, marker, root = folders["crafted_adapter"], folders["marker"], folders["root"]
    named = (f"{crafted_adapter / 'adapter_model.bin'}: pickle weights are not loaded",
             f"finetune-studio convert {crafted_adapter} --allow-pickle")
    _one_line_refusal(run_studio("chat", "--model", folders["demo"], "--adapter", crafted_adapter, "--prompt", "hi"),
                      *named)
    _one_line_refusal(run_studio("eval", folders["adapter"], "--adapter", crafted_adapter, "--data",
                                 demo_assets.dataset_path, "--output", root / "eval-adapter"), *named)
    _one_line_refusal(run_studio("merge", crafted_adapter, "--output", root / "merged-adapter"), *named)
    assert not marker.exists(), "a crafted pickle ran its code"
    assert not (root / "merged-adapter").exists()


def test_with_the_opt_in_a_crafted_pickle_is_still_one_line_and_runs_nothing(folders, run_studio):
    err = _one_line_refusal(run_studio("chat", "--model", folders["crafted"], "--allow-pickle", "--prompt", "hi"),
                            "weights-only loader refused")
    assert str(folders["crafted"]) in err
    _one_line_refusal(run_studio("convert", folders["crafted"], "--allow-pickle", "--output",
                                 folders["root"] / "crafted-converted"), "weights-only loader refused")
    assert not folders["marker"].exists()
    assert not (folders["root"] / "crafted-converted").exists()
    assert not [p for p in folders["root"].iterdir() if p.name.startswith(".crafted-converted")], "a staging folder"


def test_plain_pickle_weights_load_only_with_the_opt_in_and_answer_like_the_safetensors_model(folders, run_studio):
    prompt = "Hello, my internet is down."
    _one_line_refusal(run_studio("chat", "--model", folders["plain"], "--prompt", prompt),
                      f"{folders['plain'] / 'pytorch_model.bin'}: pickle weights are not loaded")
    allowed = run_studio("chat", "--model", folders["plain"], "--allow-pickle", "--prompt", prompt)
    reference = run_studio("chat", "--model", folders["demo"], "--prompt", prompt)
    assert allowed.returncode == 0 and reference.returncode == 0, (allowed.stderr[-3000:], reference.stderr[-3000:])
    assert allowed.stdout == reference.stdout and allowed.stdout.strip()


def test_convert_writes_a_new_safetensors_folder_and_never_touches_the_users_files(folders, run_studio):
    plain, root = folders["plain"], folders["root"]
    before = _tree_digest(plain)
    _one_line_refusal(run_studio("convert", plain), "--allow-pickle")
    result = run_studio("convert", plain, "--allow-pickle")
    assert result.returncode == 0, result.stderr[-3000:]
    converted = Path(result.stdout.strip())
    assert converted == plain.with_name("pickled-model-safetensors")
    assert list(converted.glob("*.safetensors")) and not list(converted.glob("*.bin"))
    assert _tree_digest(plain) == before, "the pickle folder itself is left exactly as it was"

    # The copy loads without any opt-in and answers as the original safetensors model does.
    prompt = "My bill is wrong."
    assert run_studio("chat", "--model", converted, "--prompt", prompt).stdout == \
        run_studio("chat", "--model", folders["demo"], "--prompt", prompt).stdout

    # A second conversion to the same folder is refused: it holds the first one's files, untouched.
    converted_files = _tree_digest(converted)
    _one_line_refusal(run_studio("convert", plain, "--allow-pickle"), f"{converted}: already exists")
    assert _tree_digest(converted) == converted_files

    # An adapter's pickle converts file by file and then loads without the opt-in.
    adapter_bin = root / "adapter-bin"
    shutil.copytree(folders["adapter"], adapter_bin)
    import torch
    from safetensors.torch import load_file

    torch.save(load_file(str(adapter_bin / "adapter_model.safetensors")), adapter_bin / "adapter_model.bin")
    (adapter_bin / "adapter_model.safetensors").unlink()
    result = run_studio("convert", adapter_bin, "--allow-pickle", "--output", root / "adapter-converted")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (root / "adapter-converted" / "adapter_model.safetensors").is_file()
    chat = run_studio("chat", "--model", folders["demo"], "--adapter", root / "adapter-converted", "--prompt", "hi")
    assert chat.returncode == 0, chat.stderr[-3000:]


def test_train_takes_pickle_weights_only_with_allow_pickle_and_records_it(folders, demo_assets, tmp_path,
                                                                          run_studio):
    import tomllib

    refused = run_studio("train", demo_assets.config_path, "--model", folders["plain"], "--output", tmp_path / "r1")
    # The refusal names the flag that chose the model (--model), the file, and the opt-in.
    _one_line_refusal(refused, "--model", "pickle weights are not loaded", "model.allow_pickle = true")
    assert not (tmp_path / "r1").exists()
    run = tmp_path / "r2"
    trained = run_studio("train", demo_assets.config_path, "--model", folders["plain"], "--allow-pickle",
                         "--max-steps", "1", "--output", run)
    assert trained.returncode == 0, trained.stderr[-4000:]
    assert tomllib.loads((run / "run.toml").read_text())["model"]["allow_pickle"] is True
    # Chat with that run reads its pickle base with the run's own opt-in.
    chat = run_studio("chat", "--model", run, "--prompt", "hi")
    assert chat.returncode == 0, chat.stderr[-3000:]


# --------------------------------------------------------------------------------------- item 9: another base


def test_an_adapter_of_another_base_is_refused_by_name_in_chat_eval_and_merge(folders, demo_assets, run_studio):
    small_adapter, demo, root = folders["small_adapter"], folders["demo"], folders["root"]
    said = (f"adapter {small_adapter} was trained on base {folders['small']}; this base is {demo}",
            "64 inputs", "128")
    _one_line_refusal(run_studio("chat", "--model", demo, "--adapter", small_adapter, "--prompt", "hi"), *said)
    _one_line_refusal(run_studio("eval", folders["adapter"], "--adapter", small_adapter, "--data",
                                 demo_assets.dataset_path, "--output", root / "eval-small"), *said)
    _one_line_refusal(run_studio("merge", small_adapter, "--base", demo, "--output", root / "merged-small"), *said)
    assert not (root / "merged-small").exists()


def test_init_adapter_of_another_base_is_refused_before_a_run_folder_exists(folders, demo_assets, tmp_path,
                                                                             run_studio):
    from studio.core.config.settings import load_config, save_config

    config = load_config(demo_assets.config_path)
    config.model.init_adapter = str(folders["small_adapter"])
    save_config(config, tmp_path / "continue.toml")
    result = run_studio("train", tmp_path / "continue.toml", "--output", tmp_path / "run")
    _one_line_refusal(result, "model.init_adapter", f"was trained on base {folders['small']}; this base is")
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------------------- item 24: which weights


def test_one_shot_chat_says_which_base_weights_answer_on_stderr(folders, run_studio):
    result = run_studio("chat", "--model", folders["demo"], "--adapter", folders["adapter"], "--prompt", "hi")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{folders['demo']} (16-bit) with demo-adapter." in result.stderr.splitlines()
    assert "16-bit" not in result.stdout, "stdout is the reply alone"
