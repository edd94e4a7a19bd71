"""Greedy replies and the loss on the expected reply for a batch of cases, on one loaded ChatModel.

Prompts are rendered with the chat template exactly as training renders them (studio.core.data.tokens) and
left-padded into one batch, so every reply starts right after its own prompt. A reply that reaches
max_new_tokens without an end-of-turn token is marked truncated. The loss is the mean cross-entropy on the
expected reply's tokens given the prompt: the tokens training learns from (the last assistant turn's span).

Nothing runs past the model's context (`fit_to_context`): a prompt that leaves no room for max_new_tokens keeps
its last (context - max_new_tokens) tokens, and a max_new_tokens beyond the context is capped at what the prompt
leaves. Past its positions a model answers noise (or, with learned positions, fails), and a long record's loss
pass would ask for the logits of every token it holds (a 52 MB record asked for 26.8 GB).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from studio.core.chat.model import ChatModel
from studio.core.data.tokens import render
from studio.core.eval.cases import EvalCase
from studio.core.system.tasks import NO_TASK, TaskState

IGNORE = -100
CPU_BATCH_SIZE = 8
"""Fixed on a CPU (its free memory is not measured here); on the demo model batch 8 answered 4.4 times as many
examples per second as one by one (docs/BENCHMARKS.md, "Eval throughput")."""
MAX_GPU_BATCH_SIZE = 64
LOSS_CHUNK = 4
"""Rows per loss forward: the logits of a batch (rows × tokens × vocabulary) are the big tensor."""


class GenerationStopped(Exception):
    """The task was cancelled while a batch was being generated: the batch is dropped, not half-scored."""


@dataclass
class Generated:
    reply: str
    new_tokens: int
    truncated: bool
    loss: float | None
    loss_tokens: int
    prompt_cut: int = 0
    """Prompt tokens dropped from the front so that the prompt and the reply fit the context."""
    reply_limit: int = 0
    """The most tokens this reply could have: max_new_tokens, or less where the context left less."""


@dataclass(frozen=True)
class ContextFit:
    """How one prompt and its reply fit the model's context."""

    keep: int
    """Prompt tokens kept (its last ones)."""
    reply_limit: int

    def cut(self, prompt_length: int) -> int:
        return max(0, prompt_length - self.keep)


def context_length(chat: ChatModel) -> int | None:
    """The positions the model was built for (config.max_position_embeddings), None when it does not say."""
    value = getattr(getattr(chat.model, "config", None), "max_position_embeddings", None)
    return int(value) if isinstance(value, int) and value > 1 else None


def fit_to_context(prompt_length: int, max_new_tokens: int, context: int | None) -> ContextFit:
    """The prompt tokens kept and the reply's limit, so that both fit `context` positions.

    A reply of max_new_tokens fits after the prompt: nothing changes. Otherwise, with max_new_tokens inside the
    context, the prompt keeps its last (context - max_new_tokens) tokens: the end of a conversation is what the
    reply answers. A max_new_tokens of the context or more cannot be honoured at all: the reply is capped at what
    the whole prompt leaves, and a prompt that leaves nothing keeps its last half of the context."""
    if context is None or prompt_length + max_new_tokens <= context:
        return ContextFit(prompt_length, max_new_tokens)
    if max_new_tokens < context:
        return ContextFit(context - max_new_tokens, max_new_tokens)
    if prompt_length < context:
        return ContextFit(prompt_length, context - prompt_length)
    return ContextFit(context // 2, context - context // 2)


def prompt_ids(tokenizer: Any, case: EvalCase) -> list[int]:
    text = render(tokenizer, case.messages(), add_generation_prompt=True)
    # The template holds the special tokens (BOS, headers) already, as in training's encoding.
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def loss_ids(tokenizer: Any, case: EvalCase) -> tuple[list[int], list[int]] | None:
    """(input_ids, labels) of the prompt followed by the expected reply, labels on the reply only; None when
    the template renders the prompt differently once the reply follows (no span to score)."""
    messages = case.messages()
    prompt = render(tokenizer, messages, add_generation_prompt=True)
    full = render(tokenizer, messages + [{"role": "assistant", "content": case.expected}])
    if not full.startswith(prompt) or len(full) == len(prompt):
        return None
    encoded = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = list(encoded["input_ids"]), encoded["offset_mapping"]
    # As training labels a token: it starts inside the reply's span (tokens.assistant_char_spans).
    labels = [token if end > start >= len(prompt) else IGNORE for token, (start, end) in zip(ids, offsets)]
    return ids, labels


def end_token_ids(chat: ChatModel) -> set[int]:
    """Every token that ends a reply (ChatModel.end_token_ids: the generation config's, the tokenizer's and the chat
    template's end of turn), as the batched generation stops the same way the chat does."""
    return set(chat.end_token_ids())


def choose_batch_size(chat: ChatModel, longest_tokens: int, requested: int | None = None) -> int:
    """`requested` if given; on a CPU a small fixed batch; on a GPU as many rows as half the free memory holds
    (each row's KV cache for prompt + reply, and a step's logits)."""
    import torch

    if requested:
        return max(1, int(requested))
    device = getattr(chat.model, "device", None)
    if device is None or getattr(device, "type", "cpu") != "cuda":
        return CPU_BATCH_SIZE
    config = chat.model.config
    layers = int(getattr(config, "num_hidden_layers", 32))
    heads = int(getattr(config, "num_attention_heads", 32))
    kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // heads)
    per_row = 2 * layers * kv_heads * head_dim * max(1, longest_tokens) * 2 + int(config.vocab_size) * 4 * 2
    free, _ = torch.cuda.mem_get_info(device)
    return max(1, min(MAX_GPU_BATCH_SIZE, int(free * 0.5) // per_row))


@contextlib.contextmanager
def using(chat: ChatModel, adapter: str | None):
    """The model with `adapter` active, or with every adapter disabled for None (the base column)."""
    if adapter is None:
        with chat.model.disable_adapter() if chat.adapters else contextlib.nullcontext():
            yield chat.model
    else:
        chat.model.set_adapter(adapter)
        yield chat.model


def generate_batch(chat: ChatModel, adapter: str | None, cases: Sequence[EvalCase], *, max_new_tokens: int,
                   task: TaskState = NO_TASK, with_loss: bool = True) -> list[Generated]:
    """Greedy replies (and losses) for `cases` with `adapter` (None: the base), each fitted to the context.

    The batch generates up to its longest reply limit and each row is cut at its own; so that no row runs past
    the context, give a batch cases of one reply limit (the runner does: `fit_to_context`)."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    tokenizer = chat.tokenizer
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    context = context_length(chat)
    full = [prompt_ids(tokenizer, case) for case in cases]
    fits = [fit_to_context(len(ids), max_new_tokens, context) for ids in full]
    prompts = [ids[len(ids) - fit.keep:] for ids, fit in zip(full, fits)]
    width = max(len(p) for p in prompts)
    device = chat.model.device
    input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=device)
    attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)

    class StopWhenAsked(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return task.cancelled()

    ends = end_token_ids(chat)
    with chat._lock, using(chat, adapter) as model, torch.inference_mode():
        output = model.generate(input_ids=input_ids, attention_mask=attention,
                                max_new_tokens=max(fit.reply_limit for fit in fits),
                                do_sample=False, temperature=None, top_p=None, top_k=None, num_beams=1,
                                pad_token_id=pad, stopping_criteria=StoppingCriteriaList([StopWhenAsked()]))
        if task.cancelled():
            raise GenerationStopped
        losses = _losses(model, tokenizer, cases, pad, context) if with_loss else [(None, 0)] * len(cases)
    results = []
    for row, (loss, loss_tokens), fit, ids in zip(output[:, width:].tolist(), losses, fits, full):
        row = row[:fit.reply_limit]
        cut = next((i for i, token in enumerate(row) if token in ends), None)
        new = row if cut is None else row[:cut]
        truncated = cut is None and len(row) >= fit.reply_limit
        results.append(Generated(tokenizer.decode(new, skip_special_tokens=True), len(new), truncated, loss,
                                 loss_tokens, fit.cut(len(ids)), fit.reply_limit))
    return results


def _losses(model: Any, tokenizer: Any, cases: Sequence[EvalCase], pad: int,
            context: int | None = None) -> list[tuple[float | None, int]]:
    import torch
    import torch.nn.functional as F

    encoded = [loss_ids(tokenizer, case) for case in cases]
    if context is not None:  # the last `context` tokens: the expected reply, and as much of its prompt as fits
        encoded = [None if e is None else (e[0][-context:], e[1][-context:]) for e in encoded]
    out: list[tuple[float | None, int]] = [(None, 0)] * len(cases)
    rows = [i for i, e in enumerate(encoded) if e is not None and any(label != IGNORE for label in e[1][1:])]
    for start in range(0, len(rows), LOSS_CHUNK):
        chunk = rows[start:start + LOSS_CHUNK]
        width = max(len(encoded[i][0]) for i in chunk)
        ids = torch.tensor([encoded[i][0] + [pad] * (width - len(encoded[i][0])) for i in chunk], device=model.device)
        labels = torch.tensor([encoded[i][1] + [IGNORE] * (width - len(encoded[i][1])) for i in chunk],
                              device=model.device)
        mask = (torch.arange(width, device=model.device)[None, :]
                < torch.tensor([len(encoded[i][0]) for i in chunk], device=model.device)[:, None]).long()
        logits = model(input_ids=ids, attention_mask=mask).logits
        for row, index in enumerate(chunk):
            targets = labels[row, 1:]
            nll = F.cross_entropy(logits[row, :-1].float(), targets, ignore_index=IGNORE, reduction="sum")
            count = int((targets != IGNORE).sum())
            out[index] = (float(nll) / count, count)
    return out
