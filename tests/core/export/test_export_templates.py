"""One chat template from training to llama.cpp and Ollama: GGUF's Jinja and the Modelfile's Go template.

The Modelfile's TEMPLATE is rendered by Go's own text/template (tests/go/ollama_template, built with the `go`
command: Debian's golang-go, which .ci/run installs), with the data laid out as Ollama lays it out, and compared
with what the Jinja chat template renders for the same conversation — for the template families our users train
(Llama 3 and 3.1 with its tool turn, ChatML and Qwen 2.5, Mistral, Gemma), multi-turn, with tool results and
Turkish text.
"""

from __future__ import annotations


import jinja2
import pytest

from studio.core.data.tokens import FALLBACK_CHAT_TEMPLATE
from studio.core.export.ollama import (
    TemplateNotConvertible, go_template, measure_turn_format, modelfile_text, stop_tokens, strip_generation_markers,
)
from studio.core.system.demo import CHAT_TEMPLATE

from ollama_standin import ollama_prompt
from export_templates_shared import go_renderer, tokenizer  # noqa: F401  (shared with the other half)

QWEN25_STYLE = (
    "{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + messages[0]['content'] + "
    "'<|im_end|>\\n' }}{%- else %}{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a "
    "helpful assistant.<|im_end|>\\n' }}{%- endif %}{%- for message in messages %}{%- if (message.role == 'user') "
    "or (message.role == 'system' and not loop.first) or (message.role == 'assistant') %}{{- '<|im_start|>' + "
    "message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}"
    # Qwen 2.5 writes tool results as a user turn, consecutive results sharing one turn.
    "{%- elif message.role == 'tool' %}{%- if loop.index0 == 0 or messages[loop.index0 - 1].role != 'tool' %}"
    "{{- '<|im_start|>user' }}{%- endif %}{{- '\\n<tool_response>\\n' + message.content + '\\n</tool_response>' }}"
    "{%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}{{- '<|im_end|>\\n' }}{%- endif %}"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
LLAMA31_STYLE = (  # Llama 3.1: a system turn always, opened by the knowledge date; tool results as `ipython`
    "{{- bos_token }}{%- if messages[0]['role'] == 'system' %}{%- set system_message = messages[0]['content'] %}"
    "{%- set loop_messages = messages[1:] %}{%- else %}{%- set system_message = '' %}"
    "{%- set loop_messages = messages %}{%- endif %}"
    "{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' }}"
    "{{- 'Cutting Knowledge Date: December 2023\\nToday Date: 26 Jul 2024\\n\\n' }}"
    "{{- system_message + '<|eot_id|>' }}"
    "{%- for message in loop_messages %}{%- if message['role'] == 'tool' %}"
    "{{- '<|start_header_id|>ipython<|end_header_id|>\\n\\n' + message['content'] + '<|eot_id|>' }}"
    "{%- else %}{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] + "
    "'<|eot_id|>' }}{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)
MISTRAL_STYLE = (  # Mistral v0.1: no system turn, no header before the reply
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST] ' + "
    "message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}"
    "{% endif %}{% endfor %}"
)
GEMMA_STYLE = (  # Gemma 2/3: the system prompt opens the first user turn; the assistant is `model`
    "{{ bos_token }}{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}{%- set first_user_prefix = '' -%}{%- set loop_messages = messages -%}{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{%- endif -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else '') + message['content'] | trim "
    "+ '<end_of_turn>\\n' }}{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\\n' }}{%- endif -%}"
)

CONVERSATIONS = [
    [{"role": "user", "content": "What are your support hours?"}],
    [{"role": "system", "content": "Answer in one line."}, {"role": "user", "content": "Hello\nthere"}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"},
     {"role": "user", "content": "Do students get a discount?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "a"},
     {"role": "assistant", "content": "b"}, {"role": "user", "content": "İzmir'deki şubenin ışıkları açık mı?"}],
]
TOOL_CONVERSATIONS = [
    [{"role": "system", "content": "Sen bir çağrı merkezi asistanısın."},
     {"role": "user", "content": "Faturamı öğrenmek istiyorum, numaram 0532 123 45 67."},
     {"role": "assistant", "content": '<tool_code>{"name": "get_bill", "arguments": {"phone": "05321234567"}}'
                                      "</tool_code>"},
     {"role": "tool", "content": '{"amount": "1.250,50 TL"}'}],
    [{"role": "user", "content": "Hattımı kapatmanızı istiyorum."},
     {"role": "assistant", "content": '<tool_code>{"name": "close_line", "arguments": {}}</tool_code>'},
     {"role": "tool", "content": '{"ok": true}'},
     {"role": "assistant", "content": "Hattınız kapatıldı."},
     {"role": "user", "content": "Teşekkürler."}],
]

FAMILIES = {  # template, its end-of-turn stop tokens, the default system prompt, whether it renders tool turns
    "llama3": (CHAT_TEMPLATE, ["<|eot_id|>"], None, True),  # the demo's, with generation markers
    "llama3.1-tools": (LLAMA31_STYLE, ["<|eot_id|>"], "", True),
    "chatml": (FALLBACK_CHAT_TEMPLATE, ["<|im_end|>"], None, True),
    "qwen2.5-tools": (QWEN25_STYLE, ["<|im_end|>"],
                      "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.", True),
    "mistral": (MISTRAL_STYLE, ["<|eot_id|>"], None, False),  # its eos_token, in the demo's vocabulary
    "gemma": (GEMMA_STYLE, ["<end_of_turn>"], None, False),
}






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


@pytest.mark.parametrize("family", FAMILIES)
def test_ollama_builds_the_same_prompt_as_the_chat_template(tokenizer, go_renderer, family):
    template, stops, system, renders_tools = FAMILIES[family]
    tokenizer.chat_template = template
    conversations = CONVERSATIONS + (TOOL_CONVERSATIONS if renders_tools else [])
    fmt = measure_turn_format(tokenizer, conversations)
    go = go_template(fmt, include_bos=True)

    assert stop_tokens(fmt, tokenizer) == stops
    assert fmt.default_system == system
    for messages in conversations:
        expected = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert ollama_prompt(go_renderer, go, messages, fmt.default_system) == expected, (family, messages)
    # A reply the model is continuing is left open, as in Ollama's own templates.
    opened = ollama_prompt(go_renderer, go, CONVERSATIONS[2][:2], fmt.default_system)
    assert opened.endswith("Hello! How can I help?")


def test_the_tool_turn_is_measured_for_each_family(tokenizer):
    tokenizer.chat_template = LLAMA31_STYLE
    llama = measure_turn_format(tokenizer)
    tokenizer.chat_template = QWEN25_STYLE
    qwen = measure_turn_format(tokenizer)
    tokenizer.chat_template = GEMMA_STYLE
    gemma = measure_turn_format(tokenizer)

    assert llama.prefix["tool"] == "<|start_header_id|>ipython<|end_header_id|>\n\n"
    assert qwen.prefix["tool"] == "<|im_start|>user\n<tool_response>\n"
    assert qwen.suffix["tool"] == "\n</tool_response><|im_end|>\n"
    assert "tool" not in gemma.prefix and gemma.system_joiner == "\n\n" and gemma.trims_content
    assert not llama.trims_content and not qwen.trims_content


def test_a_trimming_template_notes_the_run_s_padded_messages(tokenizer):
    tokenizer.chat_template = GEMMA_STYLE
    padded = [{"role": "user", "content": "Faturam ne kadar? \n"}, {"role": "assistant", "content": "10 TL."}]

    assert measure_turn_format(tokenizer, CONVERSATIONS).notes == []
    notes = measure_turn_format(tokenizer, [*CONVERSATIONS, padded]).notes
    assert len(notes) == 1 and "1 of the run's conversations" in notes[0]


def test_the_run_s_own_conversations_are_checked(tokenizer):
    """Qwen 2.5 puts consecutive tool results in one user turn, which a turn-by-turn template cannot write: a run
    whose data has two results in a row gets no TEMPLATE, and the reason names the conversation."""
    tokenizer.chat_template = QWEN25_STYLE
    two_results = [{"role": "user", "content": "Hem faturamı hem tarifemi söyle."},
                   {"role": "assistant", "content": "<tool_code>…</tool_code>"},
                   {"role": "tool", "content": '{"amount": 10}'}, {"role": "tool", "content": '{"tariff": "M"}'},
                   {"role": "assistant", "content": "Faturanız 10 TL, tarifeniz M."}]
    measure_turn_format(tokenizer)  # the probes alone pass

    with pytest.raises(TemplateNotConvertible, match="the run's conversation 2"):
        measure_turn_format(tokenizer, [TOOL_CONVERSATIONS[1], two_results])


def test_bos_is_left_to_the_tokenizer_when_it_adds_one(tokenizer, go_renderer):
    fmt = measure_turn_format(tokenizer)
    assert fmt.bos == "<|begin_of_text|>"
    prompt = ollama_prompt(go_renderer, go_template(fmt, include_bos=False), CONVERSATIONS[0])
    assert prompt == tokenizer.apply_chat_template(CONVERSATIONS[0], tokenize=False,
                                                   add_generation_prompt=True).removeprefix("<|begin_of_text|>")


def test_a_template_that_is_not_turn_by_turn_is_refused(tokenizer):
    tokenizer.chat_template = (  # numbers each turn: no fixed text around a message
        "{% for message in messages %}{{ loop.index }}. {{ message['role'] }}: {{ message['content'] }}\n"
        "{% endfor %}{% if add_generation_prompt %}{{ (messages | length) + 1 }}. assistant:{% endif %}")
    with pytest.raises(TemplateNotConvertible):
        measure_turn_format(tokenizer)


def test_the_modelfile_names_the_gguf_the_template_and_the_stop_tokens(tokenizer):
    fmt = measure_turn_format(tokenizer)
    text = modelfile_text("demo-q8_0.gguf", template=go_template(fmt, include_bos=False), stops=["<|eot_id|>"])

    assert "FROM ./demo-q8_0.gguf" in text.splitlines()
    assert 'TEMPLATE """{{- range $i, $_ := .Messages }}' in text
    assert 'PARAMETER stop "<|eot_id|>"' in text.splitlines()
