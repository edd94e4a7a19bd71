"""Talking to a base model with adapters: the same chat template as training, replies streamed.

The tokenizer (and so the chat template) is taken from the adapter folder when it has one: the
studio saves the template a run trained with beside its adapter, so chat renders prompts exactly
as training did.

The base is loaded as the first adapter's run loaded it (trained_base): a QLoRA adapter answers
on the same 4-bit weights it learned against.

One copy of the base weights serves every adapter: adapters are loaded side by side into one
`PeftModel`, `set_adapter` switches between them and `disable_adapter()` gives the base model's
own answer (compare mode) — nothing is reloaded. Generations on one model never overlap (a lock),
since switching adapters while a reply is being generated would change it midway.
"""

from __future__ import annotations

import contextlib
import gc
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator, Sequence

from studio.core.models.adapters import adapter_display_name, check_adapter_fits, load_adapter, resolve_adapter_dir
from studio.core.models.source import ModelLoadError
from studio.core.models.weights import check_weights
from studio.core.models.trained_base import (
    BaseWeights,
    TrainedBase,
    check_remote_code,
    load_base_as_trained,
    load_trusted_tokenizer,
)

BASE_MODEL = "(base)"
"""Adapter choice meaning: no adapter, the base model's own weights."""


def check_model_source(name_or_path: str) -> None:
    """Fail early, with a clear message, on a local path that does not exist."""
    from studio.core.models.source import missing_local_model

    if (reason := missing_local_model(name_or_path)) is not None:
        raise ModelLoadError(f"{name_or_path}: {reason}")


def _has_tokenizer(folder: Path) -> bool:
    return (folder / "tokenizer_config.json").is_file()


@dataclass
class GenerationSettings:
    """How a reply is sampled; temperature 0 means greedy (deterministic)."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    seed: int | None = None

    def generate_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"max_new_tokens": self.max_new_tokens}
        if self.repetition_penalty != 1.0:
            kwargs["repetition_penalty"] = self.repetition_penalty
        if self.temperature > 0:
            kwargs.update(do_sample=True, temperature=self.temperature, top_p=self.top_p, top_k=self.top_k or None)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        return kwargs


@dataclass
class ReplyStats:
    """Filled in while a reply is generated: new tokens, seconds, and whether Stop cut it short."""

    tokens: int = 0
    seconds: float = 0.0
    stopped: bool = False

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


def _torch_dtype_for_chat() -> Any:
    import torch

    if torch.cuda.is_available():
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32  # CPUs compute in float32 anyway; half precision would only be slower there


@dataclass
class ChatModel:
    """A loaded base model, optionally wrapped with named LoRA adapters sharing its weights."""

    model: Any
    tokenizer: Any
    adapters: list[str] = field(default_factory=list)
    base_name: str = ""
    adapter_paths: dict[str, Path] = field(default_factory=dict)
    load_in_4bit: bool = False
    loaded_as: str = ""
    """How the base weights were loaded, in words ("4-bit NF4 (double quantisation), as it was trained")."""
    trained_base: TrainedBase | None = None
    notes: list[str] = field(default_factory=list)
    """What the user should know about this load (an adapter trained on differently quantised weights)."""
    allow_pickle: bool = False
    """Adapters added later may be pickle files (the user allowed it for this load)."""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @classmethod
    def load(cls, model: str | Path, adapters: Sequence[str | Path] = (), *, load_in_4bit: bool = False,
             weights: BaseWeights | str = BaseWeights.TRAINED, trust_remote_code: bool | None = None,
             allow_pickle: bool | None = None) -> "ChatModel":
        """Load a base (or a run directory: its base + adapter) and the given adapters.

        The base is loaded the way the first adapter's run loaded it (trained_base): a QLoRA run's adapter
        answers on the same 4-bit weights it trained against, unless `weights` is ORIGINAL. `load_in_4bit`
        quantises a base whose adapters (if any) say nothing of how they were trained. `trust_remote_code`
        None means: what the run allowed (False without a run); `allow_pickle` the same for pickle weights
        (core.models.weights). Every adapter is checked against the base's config.json before the base loads: one
        trained on a base of other layer sizes is refused by name, not met as a size mismatch minutes later.
        """
        import torch

        from studio.core.data.tokens import ensure_chat_template

        weights = BaseWeights(weights)
        adapter_dirs = [resolve_adapter_dir(Path(a)) for a in adapters]
        model_path = Path(str(model))
        base: str | None
        if (model_path / "run.toml").is_file() or (model_path / "adapter_config.json").is_file():
            adapter_dirs.insert(0, resolve_adapter_dir(model_path))
            base = None  # the one the adapter records
        else:
            base = str(model)
        if adapter_dirs:
            trained = TrainedBase.of_adapter(adapter_dirs[0], base=base)
        else:
            trained = TrainedBase(base=str(base), known=False)
        if load_in_4bit and not trained.quantized:
            trained = replace(trained, quantization="4bit", quant_type="nf4", double_quant=True)
        if allow_pickle is not None:  # the user's word overrides what the run allowed
            trained = replace(trained, allow_pickle=allow_pickle)
        check_model_source(trained.base)
        trust = trained.trust_remote_code if trust_remote_code is None else trust_remote_code
        check_remote_code(trained.base, trust)  # the base's own code first, then each adapter's files
        for folder in adapter_dirs:  # before minutes of loading the base
            check_weights(folder, allow_pickle=trained.allow_pickle)
            check_adapter_fits(folder, trained.base)

        device = "cuda" if torch.cuda.is_available() else "cpu"
        tokenizer_source = next((str(a) for a in adapter_dirs if _has_tokenizer(a)), trained.base)
        tokenizer = load_trusted_tokenizer(tokenizer_source, trust_remote_code=trust)
        loaded, how = load_base_as_trained(trained, weights=weights, dtype=_torch_dtype_for_chat(), device=device,
                                           trust_remote_code=trust)
        ensure_chat_template(tokenizer)
        loaded.eval()
        chat = cls(model=loaded, tokenizer=tokenizer, base_name=trained.base,
                   load_in_4bit=weights is BaseWeights.TRAINED and trained.quantization == "4bit",
                   loaded_as=how, trained_base=trained, allow_pickle=trained.allow_pickle)
        for folder in adapter_dirs:
            chat.add_adapter(folder)
        if chat.adapters:
            chat.set_adapter(chat.adapters[0])
        return chat

    def base_mismatch(self, folder: Path) -> str | None:
        """Why an adapter does not fit the loaded base's weights (trained on other quantisation), or None."""
        other = TrainedBase.of_adapter(folder, base=self.base_name)
        if not other.known or self.trained_base is None:
            return None
        if (other.quantization, other.quant_type) != (self.trained_base.quantization, self.trained_base.quant_type):
            return (f"{adapter_display_name(folder)} was trained on a {other.describe()} base, but the base is "
                    f"loaded {self.loaded_as}: its replies here may differ from the trained model's")
        return None

    # --- adapters on one copy of the base weights ------------------------------------------------------
    def add_adapter(self, folder: str | Path) -> str:
        """Load another adapter beside the others (the base weights are not reloaded); returns its name."""
        folder = resolve_adapter_dir(Path(folder))
        name, n = adapter_display_name(folder), 2
        while name in self.adapters:
            name, n = f"{adapter_display_name(folder)}_{n}", n + 1
        if self.adapters and (mismatch := self.base_mismatch(folder)) is not None:
            self.notes.append(mismatch)
        with self._lock:
            self.model = load_adapter(self.model, folder, allow_pickle=self.allow_pickle, base=self.base_name,
                                      adapter_name=name)
            self.model.eval()
        self.adapters.append(name)
        self.adapter_paths[name] = folder
        return name

    @property
    def active_adapter(self) -> str | None:
        if not self.adapters:
            return None
        active = getattr(self.model, "active_adapter", None)
        return active if isinstance(active, str) else self.adapters[0]

    def set_adapter(self, name: str) -> None:
        """Make `name` the adapter replies use (instant: only which LoRA weights apply changes)."""
        if name not in self.adapters:
            raise KeyError(f"no adapter named {name!r}; loaded: {', '.join(self.adapters) or 'none'}")
        with self._lock:
            self.model.set_adapter(name)

    def unload(self) -> None:
        """Drop the weights and give the memory back (CUDA's cache too)."""
        with self._lock:
            self.model = None
            self.tokenizer = None
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass

    # --- generation ---------------------------------------------------------------------------------------
    def end_token_ids(self) -> list[int]:
        """The tokens a reply ends at: the generation config's eos ids, the tokenizer's, and the chat template's end of
        turn (a model whose generation config names only <eos> still stops where training taught it to)."""
        from studio.core.data.tokens import end_of_turn_ids

        ids = set(end_of_turn_ids(self.tokenizer))
        for value in (getattr(getattr(self.model, "generation_config", None), "eos_token_id", None),
                      self.tokenizer.eos_token_id):
            ids.update([value] if isinstance(value, int) else list(value or []))
        return sorted(ids)

    def stream_reply(self, messages: list[dict[str, str]], settings: GenerationSettings | None = None, *,
                     adapter: str | None = None, stop: threading.Event | None = None,
                     stats: ReplyStats | None = None, **overrides: Any) -> Iterator[str]:
        """Yield the reply piece by piece as it is generated; greedy when temperature is 0.

        `adapter`: one of `adapters`, BASE_MODEL for the base alone (adapters disabled), or None
        for the active one. Keyword overrides (`max_new_tokens=`, `temperature=`, ...) patch `settings`.
        """
        from transformers import (
            StoppingCriteria,
            StoppingCriteriaList,
            TextIteratorStreamer,
        )

        if self.model is None:
            raise ModelLoadError("the model was unloaded; load it again")
        settings = GenerationSettings(**{**(settings.__dict__ if settings else {}), **overrides})
        stop = stop or threading.Event()
        stats = stats if stats is not None else ReplyStats()

        finished = threading.Event()  # set when the consumer stops reading; `stop` stays the caller's

        class StopOnEvent(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return stop.is_set() or finished.is_set()

        class CountingStreamer(TextIteratorStreamer):
            def put(self, value):
                if not self.next_tokens_are_prompt:
                    stats.tokens += int(value.numel())
                super().put(value)

        inputs = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                                    return_dict=True)
        inputs = {k: v.to(self.model.device) for k, v in inputs.items()}
        streamer = CountingStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        generate_kwargs: dict[str, Any] = dict(
            **inputs, streamer=streamer, stopping_criteria=StoppingCriteriaList([StopOnEvent()]),
            pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self.end_token_ids(),
            **settings.generate_kwargs(),
        )
        errors: list[BaseException] = []
        model = self.model

        def generate() -> None:
            import torch

            try:
                with self._lock:
                    if adapter == BASE_MODEL and self.adapters:
                        choice = model.disable_adapter()
                    else:
                        if adapter is not None and adapter != BASE_MODEL and adapter != self.active_adapter:
                            model.set_adapter(adapter)
                        choice = contextlib.nullcontext()
                    if settings.seed is not None:
                        torch.manual_seed(settings.seed)
                    started = time.perf_counter()
                    try:
                        with choice, torch.inference_mode():
                            model.generate(**generate_kwargs)
                    finally:
                        stats.seconds = time.perf_counter() - started
            except BaseException as error:  # re-raised in the consumer's thread below
                errors.append(error)
                streamer.end()

        worker = threading.Thread(target=generate, name="chat-generate", daemon=True)
        worker.start()
        try:
            for piece in streamer:
                if piece:
                    yield piece
        finally:
            finished.set()  # a consumer that stops reading early ends the generation with it
            worker.join()
            stats.stopped = stop.is_set()
        if errors:
            raise errors[0]

    def reply(self, messages: list[dict[str, str]], settings: GenerationSettings | None = None,
              **kwargs: Any) -> str:
        return "".join(self.stream_reply(messages, settings, **kwargs))


def estimate_chat_memory(config: dict[str, Any], *, load_in_4bit: bool, context_tokens: int = 4096) -> int:
    """Bytes of GPU memory chatting with this model needs: weights, a KV cache, the CUDA context."""
    from studio.core.plan.vram import CUDA_CONTEXT_BYTES, ModelShape

    shape = ModelShape.from_config(config)
    if load_in_4bit:  # NF4 + double quantisation for decoder linears, 16-bit for the rest
        weights = shape.decoder_linear_params * 4.127 / 8 + (shape.parameter_count - shape.decoder_linear_params) * 2
    else:
        weights = shape.parameter_count * 2
    kv_cache = 2 * shape.num_hidden_layers * shape.kv_dim * context_tokens * 2
    return int(weights + kv_cache + CUDA_CONTEXT_BYTES)


def chat_memory_warning(needed_bytes: int, gpu: Any, *, training_running: bool) -> str | None:
    """A warning to show before loading, or None: no GPU (CPU chat), or plenty of free memory.

    `gpu` is a `studio.core.system.gpu.GpuInfo` (None without an NVIDIA GPU).
    """
    from studio.core.system.units import format_bytes

    if gpu is None:
        return None
    need, free = format_bytes(needed_bytes, style='estimate'), format_bytes(gpu.free_bytes, style='estimate')
    if training_running:
        return (f"A training run is using {gpu.name}. Chatting with this model needs about {need} of GPU memory "
                f"and {free} is free now: loading it may run out of memory and stop the run, or slow it down.")
    if needed_bytes > gpu.free_bytes:
        return f"This model needs about {need} of GPU memory but only {free} is free on {gpu.name}."
    return None
