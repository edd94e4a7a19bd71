"""One chat template from training to llama.cpp and Ollama: GGUF's Jinja and the Modelfile's Go template."""

from __future__ import annotations

import jinja2
import pytest
from _go_template import render as render_go

from studio.core.data.tokens import FALLBACK_CHAT_TEMPLATE
from studio.core.system.demo import CHAT_TEMPLATE
from studio.core.export.ollama import (
    TemplateNotConvertible, go_template, measure_turn_format, modelfile_text, stop_tokens, strip_generation_markers,
)

QWEN25_STYLE = (
    "{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + messages[0]['content'] + "
    "'<|im_end|>\\n' }}{%- else %}{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a "
    "helpful assistant.<|im_end|>\\n' }}{%- endif %}{%- for message in messages %}{%- if (message.role == 'user') "
    "or (message.role == 'system' and not loop.first) or (message.role == 'assistant') %}{{- '<|im_start|>' + "
    "message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
MISTRAL_STYLE = (
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST] ' + "
    "message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}"
    "{% endif %}{% endfor %}"
)

CONVERSATIONS = [
    [{"role": "user", "content": "What are your support hours?"}],
    [{"role": "system", "content": "Answer in one line."}, {"role": "user", "content": "Hello\nthere "}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"},
     {"role": "user", "content": "Do students get a discount?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "a"},
     {"role": "assistant", "content": "b\n\n"}, {"role": "user", "content": "  c"}],
]


@pytest.fixture
def tokenizer(demo_assets):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(demo_assets.model_dir))


def _ollama_prompt(template: str, messages: list[dict[str, str]], system: str | None = None) -> str:
    if system and messages[0]["role"] != "system":  # what Ollama does with a Modelfile SYSTEM
        messages = [{"role": "system", "content": system}, *messages]
    return render_go(template, {"Messages": [{"Role": m["role"], "Content": m["content"]} for m in messages]})


def test_the_embedded_template_renders_like_training_without_generation_markers(tokenizer):
    stripped = strip_generation_markers(CHAT_TEMPLATE)

    assert "{%- generation %}" in CHAT_TEMPLATE and "generation %}" not in stripped
    # Plain Jinja (no transformers extension) renders exactly what training rendered.
    plain = jinja2.Environment().from_string(stripped)
    for messages in CONVERSATIONS:
        for add_prompt in (False, True):
            expected = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_prompt)
            assert plain.render(messages=messages, bos_token=tokenizer.bos_token,
                                add_generation_prompt=add_prompt) == expected


@pytest.mark.parametrize("template, stops, system", [
    (CHAT_TEMPLATE, ["<|eot_id|>"], None),  # Llama 3 style, the demo's (with generation markers)
    (FALLBACK_CHAT_TEMPLATE, ["<|im_end|>"], None),  # ChatML
    (QWEN25_STYLE, ["<|im_end|>"], "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."),
], ids=["llama3", "chatml", "qwen2.5-default-system"])
def test_the_modelfile_template_builds_the_same_prompt_as_the_chat_template(tokenizer, template, stops, system):
    tokenizer.chat_template = template
    fmt = measure_turn_format(tokenizer)
    go = go_template(fmt, include_bos=True)

    assert stop_tokens(fmt, tokenizer) == stops
    assert fmt.default_system == system
    for messages in CONVERSATIONS:
        expected = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert _ollama_prompt(go, messages, fmt.default_system) == expected


def test_bos_is_left_to_the_tokenizer_when_it_adds_one(tokenizer):
    fmt = measure_turn_format(tokenizer)
    assert fmt.bos == "<|begin_of_text|>"
    prompt = _ollama_prompt(go_template(fmt, include_bos=False), CONVERSATIONS[0])
    assert prompt == tokenizer.apply_chat_template(CONVERSATIONS[0], tokenize=False,
                                                   add_generation_prompt=True).removeprefix("<|begin_of_text|>")


def test_a_template_that_is_not_role_headers_is_refused(tokenizer):
    tokenizer.chat_template = MISTRAL_STYLE
    with pytest.raises(TemplateNotConvertible):
        measure_turn_format(tokenizer)


def test_the_modelfile_names_the_gguf_the_template_and_the_stop_tokens(tokenizer):
    fmt = measure_turn_format(tokenizer)
    text = modelfile_text("demo-q8_0.gguf", template=go_template(fmt, include_bos=False), stops=["<|eot_id|>"])

    assert "FROM ./demo-q8_0.gguf" in text.splitlines()
    assert 'TEMPLATE """{{- range $i, $_ := .Messages }}' in text
    assert 'PARAMETER stop "<|eot_id|>"' in text.splitlines()
