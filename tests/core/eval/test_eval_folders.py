"""Where an eval writes and what stops it, through `finetune-studio eval` on real folders: a name is a plain folder
name under <run>/evals, a folder has one writer and one set of settings (other settings go to NAME-2), a GGUF is
known by its content, a run still training is not evaluated, bad numbers and cut files are refused before anything
is generated or written, prompts longer than the context are cut to fit and counted, a full disk is one line."""

from __future__ import annotations


import pytest



# ------------------------------------------------------------------ the rules alone


def test_a_prompt_and_its_reply_fit_the_context():
    from studio.core.eval.generate import ContextFit, fit_to_context

    assert fit_to_context(100, 256, 512) == ContextFit(100, 256), "it fits: nothing changes"
    assert fit_to_context(20_000, 256, 512) == ContextFit(256, 256), "the prompt keeps its last 512 - 256 tokens"
    assert fit_to_context(300, 256, 512) == ContextFit(256, 256)
    assert fit_to_context(40, 10**9, 512) == ContextFit(40, 472), "a reply beyond the context: capped after the prompt"
    assert fit_to_context(900, 10**9, 512) == ContextFit(256, 256)
    assert fit_to_context(900, 10**9, None) == ContextFit(900, 10**9), "a model that states no context"


def test_an_eval_name_is_a_plain_folder_name():
    from studio.core.eval.runner import EvalError, check_eval_name, default_eval_name

    assert check_eval_name("held-out v2") == "held-out v2"
    for name in ("../../../x", "/tmp/x", "..", ".", "", " ", ".hidden", "a/b", "a\\b", "C:x"):
        with pytest.raises(EvalError, match="give a plain folder name"):
            check_eval_name(name)
    assert default_eval_name(".hidden") == "hidden" and default_eval_name("...") == "eval"


def test_an_eval_never_writes_into_or_removes_a_folder_holding_the_users_files(tmp_path):
    """A folder of the user's under evals/ is passed by (NAME-2), and a claim's clean-up removes only what it made."""
    from studio.core.eval.runner import EvalFolder

    asked = tmp_path / "evals" / "support"
    asked.mkdir(parents=True)
    (asked / "notes.txt").write_text("my notes", encoding="utf-8")

    claimed = EvalFolder.claim(asked, {"base": "demo"})
    assert claimed.path == tmp_path / "evals" / "support-2" and claimed.created
    (claimed.path / "notes.txt").write_text("the user's, written into the new folder", encoding="utf-8")
    claimed.release(keep=False)  # an early failure: the claim tidies what it made, and only that

    assert (asked / "notes.txt").read_text(encoding="utf-8") == "my notes"
    assert sorted(p.name for p in asked.iterdir()) == ["notes.txt"]
    assert (claimed.path / "notes.txt").is_file(), "a file it did not write keeps its folder"
