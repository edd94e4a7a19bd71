"""Talking to a base model with adapters: the same chat template as training, replies streamed.

The tokenizer (and so the chat template) is taken from the adapter folder when it has one: the
studio saves the template a run trained with beside its adapter, so chat renders prompts exactly
as training did.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence


class ModelLoadError(ValueError):
    """A model or adapter the user named cannot be found or read."""


def adapter_base_model(adapter_dir: Path) -> str:
    """The base model an adapter was trained on, from its adapter_config.json."""
    config_file = Path(adapter_dir) / "adapter_config.json"
    try:
        data = json.loads(config_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelLoadError(f"{adapter_dir}: not an adapter folder (no adapter_config.json)") from None
    except (OSError, json.JSONDecodeError) as error:
        raise ModelLoadError(f"{config_file}: cannot be read: {error}") from None
    base = data.get("base_model_name_or_path")
    if not base:
        raise ModelLoadError(f"{config_file}: names no base model; pass the base explicitly")
    return base


def resolve_adapter_dir(path: Path) -> Path:
    """Accept either an adapter folder or a run directory holding `adapter/`."""
    path = Path(path)
    if (path / "adapter_config.json").is_file():
        return path
    if (path / "adapter" / "adapter_config.json").is_file():
        return path / "adapter"
    raise ModelLoadError(f"{path}: neither an adapter folder nor a run directory with a finished adapter")


def check_model_source(name_or_path: str) -> None:
    """Fail early, with a clear message, on a local path that does not exist."""
    path = Path(name_or_path).expanduser()
    looks_local = path.is_absolute() or name_or_path.startswith((".", "~")) or name_or_path.count("/") > 1
    if looks_local and not (path / "config.json").is_file():
        raise ModelLoadError(f"{name_or_path}: no model there (config.json not found)")


def _has_tokenizer(folder: Path) -> bool:
    return (folder / "tokenizer_config.json").is_file()


@dataclass
class ChatModel:
    """A loaded base model, optionally wrapped with named LoRA adapters."""

    model: Any
    tokenizer: Any
    adapters: list[str] = field(default_factory=list)
    base_name: str = ""

    @classmethod
    def load(cls, model: str | Path, adapters: Sequence[str | Path] = (), *, load_in_4bit: bool = False) -> "ChatModel":
        """Load a base (or a run directory: its base + adapter) and the given adapters."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from studio.core.chat_tokens import ensure_chat_template

        adapter_dirs = [resolve_adapter_dir(Path(a)) for a in adapters]
        model_path = Path(str(model))
        if (model_path / "run.toml").is_file() or (model_path / "adapter_config.json").is_file():
            adapter_dirs.insert(0, resolve_adapter_dir(model_path))
            base = adapter_base_model(adapter_dirs[0])
        else:
            base = str(model)
        check_model_source(base)

        cuda = torch.cuda.is_available()
        dtype = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else (torch.float16 if cuda else torch.float32)
        kwargs: dict[str, Any] = {"dtype": dtype}
        if load_in_4bit:
            from transformers import BitsAndBytesConfig

            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=dtype)
            kwargs["device_map"] = {"": "cuda:0" if cuda else "cpu"}
        try:
            tokenizer_source = next((str(a) for a in adapter_dirs if _has_tokenizer(a)), base)
            tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
            loaded = AutoModelForCausalLM.from_pretrained(base, **kwargs)
        except OSError as error:
            raise ModelLoadError(f"{base}: cannot load the model: {error}") from None
        if cuda and not load_in_4bit:
            loaded = loaded.to("cuda")
        ensure_chat_template(tokenizer)

        names = []
        if adapter_dirs:
            from peft import PeftModel

            names = [f"adapter{i}" if i else "default" for i in range(len(adapter_dirs))]
            loaded = PeftModel.from_pretrained(loaded, str(adapter_dirs[0]), adapter_name=names[0])
            for name, folder in zip(names[1:], adapter_dirs[1:]):
                loaded.load_adapter(str(folder), adapter_name=name)
        loaded.eval()
        return cls(model=loaded, tokenizer=tokenizer, adapters=names, base_name=base)

    def stream_reply(self, messages: list[dict[str, str]], *, max_new_tokens: int = 256, temperature: float = 0.0,
                     top_p: float = 1.0, stop: threading.Event | None = None) -> Iterator[str]:
        """Yield the reply piece by piece as it is generated; greedy when temperature is 0."""
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        stop = stop or threading.Event()

        class StopOnEvent(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return stop.is_set()

        inputs = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                                    return_dict=True)
        inputs = {k: v.to(self.model.device) for k, v in inputs.items()}
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        generate_kwargs: dict[str, Any] = dict(
            **inputs, max_new_tokens=max_new_tokens, streamer=streamer,
            stopping_criteria=StoppingCriteriaList([StopOnEvent()]),
            pad_token_id=self.tokenizer.pad_token_id,
        )
        if temperature > 0:
            generate_kwargs.update(do_sample=True, temperature=temperature, top_p=top_p)
        else:
            generate_kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        errors: list[BaseException] = []

        def generate() -> None:
            import torch

            try:
                with torch.inference_mode():
                    self.model.generate(**generate_kwargs)
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
            stop.set()
            worker.join()
        if errors:
            raise errors[0]

    def reply(self, messages: list[dict[str, str]], **kwargs: Any) -> str:
        return "".join(self.stream_reply(messages, **kwargs))
