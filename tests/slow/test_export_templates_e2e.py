"""One chat template from training to llama.cpp and Ollama: GGUF's Jinja and the Modelfile's Go template.

The Modelfile's TEMPLATE is rendered by Go's own text/template (tests/go/ollama_template, built with the `go`
command: Debian's golang-go, which .ci/run installs), with the data laid out as Ollama lays it out, and compared
with what the Jinja chat template renders for the same conversation — for the template families our users train
(Llama 3 and 3.1 with its tool turn, ChatML and Qwen 2.5, Mistral, Gemma), multi-turn, with tool results and
Turkish text.
"""

from __future__ import annotations




from ollama_standin import ollama_prompt
from export_templates_shared import go_renderer, tokenizer  # noqa: F401  (shared with the other half)






def test_an_exported_modelfile_builds_the_run_s_own_prompts_in_go(trained_run, tmp_path, go_renderer):
    """The product path end to end: `export gguf` from a run writes a Modelfile whose TEMPLATE, rendered by Go,
    builds exactly the prompts the run trained on for its own conversations (from its data file)."""
    import re

    from transformers import AutoTokenizer

    from studio.core.export.gguf import export_gguf, run_conversations

    done = export_gguf(trained_run, tmp_path / "bot.gguf", gguf_type="f16")
    modelfile = (tmp_path / "bot.Modelfile").read_text(encoding="utf-8")
    template = re.search(r'TEMPLATE """(.*?)"""', modelfile, re.DOTALL).group(1)
    system = re.search(r'SYSTEM """(.*?)"""', modelfile, re.DOTALL)
    tokenizer = AutoTokenizer.from_pretrained(str(trained_run / "adapter"))
    conversations = run_conversations(trained_run)

    assert done.path.is_file() and len(conversations) >= 10
    for messages in conversations:
        asked = messages[:-1] if messages[-1]["role"] == "assistant" else messages  # the prompt before a reply
        expected = tokenizer.apply_chat_template(asked, tokenize=False, add_generation_prompt=True)
        got = ollama_prompt(go_renderer, template, asked, system.group(1) if system else None)
        assert got == expected.removeprefix(tokenizer.bos_token or ""), messages
