"""One rule for every place an adapter meets its base: use the weights it was trained on.

A QLoRA adapter learns corrections for the *quantised* base: put on the original 16-bit weights it
is a different model (measured on a 135M instruct model: 10/10 right tool calls on the NF4 base,
3/10 on the 16-bit one). So chat, compare, merge and every export read how the run loaded its base
(`run.toml`'s [quantization], and the compute dtype the run resolved) and load it the same way:

- chat and evaluation load the base quantised exactly as training did (same BitsAndBytesConfig);
- a merge loads it quantised the same way, dequantises every quantised layer
  (transformers' `PreTrainedModel.dequantize`, i.e. bitsandbytes' own `dequantize_4bit`) and adds the
  LoRA product to those weights, so the merged model computes what the trained model computed.

The original 16-bit weights stay an explicit choice (`BaseWeights.ORIGINAL`), never the silent default.
Every load here passes `trust_remote_code` explicitly: transformers never asks on stdin, and a model
that needs its own code without the user's opt-in is refused by name (`RemoteCodeRefused`). Every load of weights
goes through `core.models.weights`' rule: safetensors, or pickle files only with the user's opt-in.
"""

from __future__ import annotations

import enum
import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from studio.core.models.source import ModelLoadError
from studio.core.models.weights import PICKLE_FLAG, check_weights, unpickling_refused, use_safetensors_kwarg


class BaseWeights(str, enum.Enum):
    """Which weights an adapter is put on."""

    TRAINED = "trained"
    """The weights the adapter trained against: the base quantised as in training (the default)."""
    ORIGINAL = "original"
    """The original 16-bit weights, even for a run trained on a 4-bit base."""


TRUST_SETTING = "model.trust_remote_code"




class RemoteCodeRefused(ModelLoadError):
    """The model needs its own Python code, and the user did not opt in to running it."""


@dataclass(frozen=True)
class TrainedBase:
    """How a run loaded the base its adapter was trained on."""

    base: str
    quantization: str = "none"  # "4bit" | "8bit" | "none", as run.toml's quantization.mode
    quant_type: str = "nf4"
    double_quant: bool = True
    compute_dtype: str | None = None
    """The dtype the run resolved (float32 on a CPU, bfloat16 on most GPUs); None when the run did not say."""
    trust_remote_code: bool = False
    allow_pickle: bool = False
    """The run allowed pickle weights for its base (model.allow_pickle): chat and merge of it may read them too."""
    known: bool = True
    """False for an adapter folder with no run record: how it was trained is unknown (taken as 16-bit)."""

    @property
    def quantized(self) -> bool:
        return self.quantization in ("4bit", "8bit")

    def describe(self) -> str:
        if self.quantization == "4bit":
            return f"4-bit {self.quant_type.upper()}" + (" (double quantisation)" if self.double_quant else "")
        if self.quantization == "8bit":
            return "8-bit"
        return "16-bit"

    @classmethod
    def of_adapter(cls, adapter_dir: Path, base: str | None = None) -> TrainedBase:
        """Read it from the run the adapter belongs to (run.toml and its events), or from the record an export
        kept beside the adapter (finetune_studio.json); `base` overrides the recorded base model."""
        from studio.core.runs.record import RunRecord

        adapter_dir = Path(adapter_dir)
        summary = RunRecord.find(adapter_dir)
        recorded_base = base or _adapter_config_base(adapter_dir)
        if summary is None or not summary.settings:
            return cls(base=recorded_base, known=False)
        quant = summary.settings.get("quantization", {}) or {}
        model = summary.settings.get("model", {}) or {}
        dtype = summary.compute_dtype or quant.get("compute_dtype")
        return cls(
            base=recorded_base,
            quantization=str(quant.get("mode", "none")),
            quant_type=str(quant.get("bnb_4bit_quant_type", "nf4")),
            double_quant=bool(quant.get("bnb_4bit_use_double_quant", True)),
            compute_dtype=dtype if dtype in ("float32", "bfloat16", "float16") else None,
            trust_remote_code=bool(model.get("trust_remote_code", False)),
            allow_pickle=bool(model.get("allow_pickle", False)),
        )

    def quantization_config(self, compute_dtype: Any) -> Any | None:
        """The BitsAndBytesConfig training used (training.library_configs.quantization_config), or None."""
        from transformers import BitsAndBytesConfig

        if self.quantization == "8bit":
            return BitsAndBytesConfig(load_in_8bit=True)
        if self.quantization != "4bit":
            return None
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=self.quant_type,
                                  bnb_4bit_use_double_quant=self.double_quant, bnb_4bit_compute_dtype=compute_dtype)


def _adapter_config_base(adapter_dir: Path) -> str:
    from studio.core.models.adapters import adapter_base_model

    return adapter_base_model(adapter_dir)


# --------------------------------------------------------------------------------------- remote code


def needs_remote_code(name_or_path: str) -> bool:
    """Whether loading this model (a folder or a cached Hub id) would run Python code shipped with it: its
    config.json maps the Auto classes to its own modules and transformers has no built-in class for it."""
    from studio.core.models.source import ModelSourceError, find_model_config

    try:
        source = find_model_config(name_or_path)
    except ModelSourceError:
        return False  # not readable without the network: transformers itself refuses (never asks) below
    if source.origin == "bundled":
        return False
    return _config_needs_remote_code(source.config) or _tokenizer_needs_remote_code(source.path.parent)


def _config_needs_remote_code(config: dict[str, Any]) -> bool:
    auto_map = config.get("auto_map") or {}
    if not any(key in auto_map for key in ("AutoConfig", "AutoModelForCausalLM", "AutoModel")):
        return False
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    model_type = config.get("model_type")
    return model_type not in CONFIG_MAPPING_NAMES or model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES


def _tokenizer_needs_remote_code(folder: Path) -> bool:
    config_file = folder / "tokenizer_config.json"
    try:
        data = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    auto_map = data.get("auto_map") if isinstance(data, dict) else None
    # A tokenizer.json lets transformers' own fast tokenizer read it: the custom class is then not needed.
    return bool(auto_map) and "AutoTokenizer" in auto_map and not (folder / "tokenizer.json").is_file()


def check_remote_code(name_or_path: str, trust_remote_code: bool, *, setting: str = TRUST_SETTING) -> None:
    """Refuse, naming the setting, a model whose own code would run without the user's opt-in."""
    if not trust_remote_code and needs_remote_code(name_or_path):
        raise RemoteCodeRefused(
            f"{name_or_path}: this model needs its own Python code to load (auto_map in its config); Finetune "
            f"Studio runs such code only when you allow it: set {setting} = true if you trust its author")


def _load_error(base: str, error: BaseException, setting: str) -> ModelLoadError:
    text = str(error)
    if "trust_remote_code" in text:
        return RemoteCodeRefused(f"{base}: this model needs its own Python code to load; set {setting} = true "
                                 "if you trust its author")
    first = text.strip().splitlines()[0] if text.strip() else type(error).__name__
    return ModelLoadError(f"{base}: cannot load the model: {first}")


# --------------------------------------------------------------------------------------- loading


def load_trusted_tokenizer(source: str, *, trust_remote_code: bool, setting: str = TRUST_SETTING) -> Any:
    """AutoTokenizer with `trust_remote_code` always given: transformers then never prompts on stdin."""
    from transformers import AutoTokenizer

    check_remote_code(source, trust_remote_code, setting=setting)
    try:
        return AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as error:
        raise _load_error(source, error, setting) from None


def load_causal_lm(name_or_path: str, *, trust_remote_code: bool, allow_pickle: bool = False,
                   setting: str = TRUST_SETTING, pickle_opt_in: str = PICKLE_FLAG, **kwargs: Any) -> Any:
    """AutoModelForCausalLM.from_pretrained with `trust_remote_code` always given, pickle weights read only when
    allowed (checked by file name first, then `use_safetensors` for what transformers would fetch), errors made
    readable. `pickle_opt_in` names the caller's way to allow pickles, for the refusal."""
    from transformers import AutoModelForCausalLM

    check_remote_code(name_or_path, trust_remote_code, setting=setting)
    check_weights(name_or_path, allow_pickle=allow_pickle, opt_in=pickle_opt_in)
    try:
        return AutoModelForCausalLM.from_pretrained(name_or_path, trust_remote_code=trust_remote_code,
                                                    use_safetensors=use_safetensors_kwarg(allow_pickle), **kwargs)
    except pickle.UnpicklingError as error:
        raise unpickling_refused(name_or_path, error) from None
    except (OSError, ValueError) as error:
        raise _load_error(name_or_path, error, setting) from None


def keep_4bit_weights_unpacked(model: Any) -> int:
    """Stop bitsandbytes repacking the 4-bit weights for its CPU inference kernel; returns the layers changed.

    On a CPU with AVX512-BF16, bitsandbytes (0.49+) repacks a Linear4bit's weight in place on its first forward
    in eval mode (`Linear4bit.forward` → `_convert_weight_packed_for_cpu`, block scales cast to bfloat16) and from
    then on computes it with `gemv_4bit`, training mode included. That op has no autograd kernel, so after the
    first evaluation of a run, or a GRPO generation or a score while training, no gradient flows through any
    base layer (torch warns "gemv_4bit: an autograd kernel was not registered … silently incorrect behavior") and
    the layers compute on other weights than the adapter is saved for. Measured on the demo: the input gradient of
    a repacked layer is None instead of the dequantised weight's. The flag is bitsandbytes' own switch for it.
    """
    changed = 0
    for module in model.modules():
        if getattr(module, "support_avx512bf16_for_cpu", False):
            module.support_avx512bf16_for_cpu = False
            changed += 1
    return changed


def load_base_as_trained(trained: TrainedBase, *, weights: BaseWeights, dtype: Any, device: str,
                         trust_remote_code: bool | None = None) -> tuple[Any, str]:
    """The base for chat or evaluation: quantised as in training unless `weights` says ORIGINAL.
    Returns (model, how it was loaded, in words). Pickle weights load only if `trained.allow_pickle`."""
    trust = trained.trust_remote_code if trust_remote_code is None else trust_remote_code
    kwargs: dict[str, Any] = {"dtype": dtype}
    quant = trained.quantization_config(dtype) if weights is BaseWeights.TRAINED else None
    if quant is not None:
        kwargs["quantization_config"] = quant
        kwargs["device_map"] = {"": "cuda:0" if device == "cuda" else "cpu"}
    model = load_causal_lm(trained.base, trust_remote_code=trust, allow_pickle=trained.allow_pickle, **kwargs)
    if quant is None and device == "cuda":
        model = model.to("cuda")
    how = (f"{trained.describe()}, as it was trained" if quant is not None
           else "16-bit" + (" (the original weights, not the 4-bit ones it trained on)" if trained.quantized else ""))
    return model, how


def load_dequantized_trained_base(trained: TrainedBase, *, trust_remote_code: bool | None = None) -> Any:
    """The base for a merge: the weights the adapter trained against, in plain (unquantised) layers.

    The base is quantised on the CPU exactly as training did (same BitsAndBytesConfig and load dtype, so the
    same NF4 codes and block scales) and every quantised layer is dequantised before any forward pass
    (bitsandbytes' CPU kernels repack the weights on their first inference call). Memory peaks near the
    16-bit model's size: each layer is dequantised in turn.
    """
    import torch

    trust = trained.trust_remote_code if trust_remote_code is None else trust_remote_code
    # Quantisation rounds the weights as loaded in the run's compute dtype; float32 when the run did not say
    # (a bf16 round first would move a few values across an NF4 boundary, the other way round no worse).
    dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(trained.compute_dtype or "", torch.float32)
    model = load_causal_lm(trained.base, trust_remote_code=trust, allow_pickle=trained.allow_pickle, dtype=dtype,
                           quantization_config=trained.quantization_config(dtype), device_map={"": "cpu"})
    model.dequantize()
    return model
