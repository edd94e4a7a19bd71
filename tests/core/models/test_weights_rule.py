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


import pytest
from weights_folders import folders  # noqa: F401  (the module's fixture)


def test_without_the_opt_in_no_pickle_reaches_torch_load(folders, monkeypatch, capsys):
    """Not even torch's weights-only loader is asked: the file is judged by its name first."""
    import torch

    from studio.cli import main

    calls = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(a) or real_load(*a, **k))
    assert main(["chat", "--model", str(folders["crafted"]), "--prompt", "hi"]) == 2
    assert main(["merge", str(folders["crafted_adapter"]), "--output", str(folders["root"] / "m2")]) == 2
    assert main(["convert", str(folders["crafted"])]) == 2
    assert calls == []
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all("pickle" in line for line in err), err
    assert not folders["marker"].exists()


def test_an_adapter_of_another_base_added_to_a_loaded_model_is_refused_before_peft_reads_it(folders):
    from studio.core.chat.model import ChatModel
    from studio.core.models.adapters import AdapterBaseMismatch

    chat = ChatModel.load(folders["demo"], [folders["adapter"]])
    with pytest.raises(AdapterBaseMismatch, match="was trained on base .*small-base; this base is"):
        chat.add_adapter(folders["small_adapter"])
    assert chat.adapters == ["demo-adapter"]
