"""Does a merged model or an export answer like the trained model? Greedy replies compared prompt by prompt.

The trained model is the run's adapter on the base loaded as it trained (trained_base); the prompts
are the run's own training examples (every conversation up to its last assistant turn). Greedy
decoding makes the comparison deterministic: an identical reply is the same model's reply.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

DEFAULT_EXAMPLES = 8
DEFAULT_NEW_TOKENS = 48


@dataclass
class Agreement:
    """How many greedy replies of a candidate equal the trained model's, on the same prompts."""

    identical: int
    total: int
    differing: list[dict[str, str]] = field(default_factory=list)
    """Up to three prompts whose replies differ: {"prompt", "trained", "candidate"}."""

    @property
    def fraction(self) -> float:
        return self.identical / self.total if self.total else 0.0

    def text(self) -> str:
        return (f"{self.identical}/{self.total} greedy replies identical to the trained model's on the run's own "
                "examples")


def run_prompts(adapter_or_run: Path, limit: int = DEFAULT_EXAMPLES) -> list[list[dict[str, str]]]:
    """The first `limit` prompts of the run's training data: each conversation without its last reply."""
    from studio.core.config.settings import ConfigError, load_config
    from studio.core.data.loading import load_with_settings

    folder = Path(adapter_or_run)
    run_dir = folder if (folder / "run.toml").is_file() else folder.parent
    if not (run_dir / "run.toml").is_file():
        raise FileNotFoundError(f"{folder}: no run.toml beside the adapter, so no training examples to compare on")
    try:
        config = load_config(run_dir / "run.toml")
    except ConfigError as error:
        raise FileNotFoundError(str(error)) from None
    data = load_with_settings(config.data)
    prompts = []
    for example in data.examples:
        messages = example.get("messages")
        if not messages:
            continue
        last = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=None)
        if last:
            prompts.append([{"role": m["role"], "content": m["content"]} for m in messages[:last]])
        if len(prompts) >= limit:
            break
    return prompts


def greedy_replies(model: Any, prompts: Sequence[list[dict[str, str]]], *,
                   max_new_tokens: int = DEFAULT_NEW_TOKENS) -> list[str]:
    """`model.reply` (a chat.ChatModel) for each prompt, greedy."""
    return [model.reply(list(prompt), max_new_tokens=max_new_tokens, temperature=0.0) for prompt in prompts]


def compare(reference: Sequence[str], candidate: Sequence[str],
            prompts: Sequence[list[dict[str, str]]]) -> Agreement:
    differing = [{"prompt": prompt[-1]["content"], "trained": a, "candidate": b}
                 for prompt, a, b in zip(prompts, reference, candidate) if a != b]
    return Agreement(identical=len(reference) - len(differing), total=len(reference), differing=differing[:3])


def agreement_with_trained(adapter_or_run: Path, candidate: Callable[[], Any], *,
                           limit: int = DEFAULT_EXAMPLES, max_new_tokens: int = DEFAULT_NEW_TOKENS) -> Agreement:
    """Load the trained model (adapter on the base as trained), answer the run's prompts, unload it, then do the
    same with `candidate()` (a ChatModel factory), one model in memory at a time."""
    from studio.core.chat.model import ChatModel

    prompts = run_prompts(adapter_or_run, limit)
    if not prompts:
        return Agreement(0, 0)
    trained = ChatModel.load(adapter_or_run)
    try:
        reference = greedy_replies(trained, prompts, max_new_tokens=max_new_tokens)
    finally:
        trained.unload()
    other = candidate()
    try:
        replies = greedy_replies(other, prompts, max_new_tokens=max_new_tokens)
    finally:
        other.unload()
    return compare(reference, replies, prompts)


def merged_agreement(adapter_or_run: Path, merged_dir: Path, **kwargs: Any) -> Agreement:
    """How a merged model folder answers the run's prompts compared with the trained model."""
    from studio.core.chat.model import ChatModel

    return agreement_with_trained(adapter_or_run, lambda: ChatModel.load(merged_dir), **kwargs)
