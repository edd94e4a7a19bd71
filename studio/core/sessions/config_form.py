"""The Config tab's form as data: which config field sits in which box under which label, and how each is shown.

The widget of a field follows from the field itself (its type and its metadata's choices; a number's range, step and
decimals are the metadata's too), so the tab builds every widget and binds it with one generic binder; this module
only adds what the dataclasses do not say: the labels, the boxes, a choice's words, a number's text at its minimum.
What the methods need (their words, their own settings' labels) comes from `sessions.config`, the one place that
knows the methods.
"""

from __future__ import annotations

import importlib.util
import typing
from dataclasses import dataclass

from studio.core.config.settings import RunConfig, config_field, field_bounds, field_help
from studio.core.sessions.config import method_fields, method_labels

__all__ = ["ADVANCED_BELOW", "ADVANCED_COLUMNS", "FIRST_COLUMNS", "FormBox", "FormField", "FormNote",
           "form_fields", "form_values", "offered_choices"]


@dataclass(frozen=True)
class FormField:
    """One config field in the form."""

    section: str
    name: str
    label: str = ""
    """The form's label; "" for a check box, which says `text` itself."""
    text: str = ""
    special: str = ""
    """What a number box shows at its minimum ("use epochs", "off")."""
    placeholder: str = ""
    choices: dict[str, str] | None = None
    """A choice's words by value; None: the values themselves."""
    rate: bool = False
    """A small rate, shown and stepped on a log scale (2e-05)."""
    attr: str = ""
    """The tab's attribute for the widget; the field's name when empty."""

    @property
    def key(self) -> str:
        return self.attr or self.name

    @property
    def help(self) -> str:
        return field_help(self.section, self.name)

    @property
    def bounds(self) -> tuple[float, float]:
        return field_bounds(self.section, self.name)

    @property
    def step(self) -> float | None:
        """How far one step of a number box goes (None: Qt's default, 1)."""
        return config_field(self.section, self.name).metadata.get("step")

    @property
    def decimals(self) -> int | None:
        return config_field(self.section, self.name).metadata.get("decimals")

    def choices_offered(self) -> list[tuple[str, str]]:
        return offered_choices(self)

    @property
    def kind(self) -> str:
        """check, choice, int, float, rate, list, rewards or text: from the field's type and metadata."""
        if config_field(self.section, self.name).metadata.get("widget") == "reward_picker":
            return "rewards"  # metric=weight entries, shown as a weight per metric
        annotation = typing.get_type_hints(typing.get_type_hints(RunConfig)[self.section])[self.name]
        if annotation is bool:
            return "check"
        if "choices" in config_field(self.section, self.name).metadata:
            return "choice"
        if annotation is int:
            return "int"
        if annotation is float:
            return "rate" if self.rate else "float"
        return "list" if typing.get_origin(annotation) is list else "text"


@dataclass(frozen=True)
class FormNote:
    """A line the tab fills itself (not a config field): `key` names it, `label` is the form's label."""

    key: str
    label: str | None = ""
    """None: the row spans the label column too."""


@dataclass(frozen=True)
class FormBox:
    title: str
    rows: tuple[FormField | FormNote, ...]


def _training(name: str, label: str = "", **extra) -> FormField:
    return FormField("training", name, label, **extra)


QUANT_MODE_TEXT = {"4bit": "4-bit NF4 (QLoRA)", "8bit": "8-bit", "none": "16-bit (plain LoRA)"}
OPTIM_TEXT = {"auto": "auto (paged 8-bit AdamW on a GPU)", "paged_adamw_8bit": "paged 8-bit AdamW",
              "adamw_8bit": "8-bit AdamW", "adamw_torch": "AdamW (fp32 states)",
              "adamw_torch_fused": "fused AdamW", "sgd": "SGD"}
ATTN_TEXT = {"sdpa": "sdpa (PyTorch)", "eager": "eager", "flash_attention_2": "FlashAttention 2"}
EVAL_TEXT = {"steps": "every N steps", "epoch": "every epoch", "no": "never"}

LORA = FormBox("LoRA adapter", (
    FormField("lora", "r", "Rank (r)"),
    FormField("lora", "lora_alpha", "Alpha"),
    FormField("lora", "lora_dropout", "Dropout"),
    FormField("lora", "target_modules", "Target modules", placeholder="all-linear, or e.g. q_proj, v_proj"),
    FormNote("shortcuts"),
    FormNote("detected", None),
))
QUANTIZATION = FormBox("Base weights", (
    FormField("quantization", "mode", "Stored as", choices=QUANT_MODE_TEXT, attr="quantization_mode"),))
# The method's box: the choice, what data it reads, then the methods' own settings, all from the one place that
# knows the methods (sessions.config).
METHOD = FormBox("Method", (
    _training("method", "Method", choices=method_labels()),
    FormNote("method_note"),
    # each method's own settings, in its section ([dpo] beta...); the tab shows the chosen method's
    *(FormField(section, f.name, f.metadata.get("label", f.name), placeholder=f.metadata.get("placeholder", ""),
                attr=f"{section}_{f.name}") for section, f in method_fields()),  # tab.dpo_beta, tab.grpo_rewards
))
TRAINING = FormBox("Training", (
    _training("learning_rate", "Learning rate", rate=True),
    _training("num_train_epochs", "Epochs"),
    _training("max_steps", "Max steps", special="use epochs"),
    _training("per_device_train_batch_size", "Batch size"),
    _training("gradient_accumulation_steps", "Gradient accumulation"),
    FormNote("effective_batch", "Effective batch"),
    _training("max_length", "Max length (tokens)"),
    _training("gradient_checkpointing", text="Gradient checkpointing"),
    _training("activation_offloading", text="Offload activations to CPU RAM"),
    _training("checkpointing_every_n_layers", "Checkpoint every n layers"),
    _training("embedding_on_cpu", text="Input embedding in CPU RAM"),
    _training("fast_path", text="Fast path"),
    FormNote("fast_path_note"),  # under the box; wraps rather than widen the column
))
ADVANCED_QUANTIZATION = FormBox("Quantisation", (
    FormField("quantization", "bnb_4bit_quant_type", "4-bit type"),
    FormField("quantization", "bnb_4bit_use_double_quant", text="Double quantisation"),
    FormField("quantization", "compute_dtype", "Compute dtype"),
))
ADVANCED_ADAPTER = FormBox("Adapter", (
    FormField("lora", "bias", "Bias"),
    FormField("lora", "modules_to_save", "Modules to save", placeholder="none, or e.g. lm_head, embed_tokens"),
    FormField("lora", "use_rslora", text="rsLoRA (alpha / √r)"),
    FormField("lora", "use_dora", text="DoRA"),
))
OPTIMISATION = FormBox("Optimisation", (
    _training("optim", "Optimizer", choices=OPTIM_TEXT),
    _training("lr_scheduler_type", "Scheduler"),
    _training("warmup_ratio", "Warmup ratio"),
    _training("weight_decay", "Weight decay"),
    _training("max_grad_norm", "Max grad norm"),
    FormField("model", "attn_implementation", "Attention", choices=ATTN_TEXT),
    FormField("model", "allow_pickle", text="Load pickle weights (only files you trust)"),
    _training("seed", "Seed"),
    _training("packing", text="Pack short examples together"),
))
EVALUATION = FormBox("Evaluation and checkpoints", (
    _training("eval_strategy", "Evaluate", choices=EVAL_TEXT),
    _training("eval_steps", "Eval steps"),
    FormNote("eval_summary"),
    _training("early_stopping_patience", "Early stopping patience", special="off"),
    _training("score_examples", "Score held-out examples", special="off"),
    _training("score_steps", "Score every (steps)", special="at each evaluation"),
    _training("score_metric", "Score by"),
    _training("save_steps", "Save every (steps)"),
    _training("save_total_limit", "Checkpoints kept"),
    _training("logging_steps", "Log every (steps)"),
))

FIRST_COLUMNS = ((LORA, QUANTIZATION, METHOD), (TRAINING,))
"""The first screen: two columns (the method under the shorter one: SFT shows one row, GRPO a few more)."""
ADVANCED_COLUMNS = ((ADVANCED_QUANTIZATION, ADVANCED_ADAPTER), (OPTIMISATION,))
ADVANCED_BELOW = (EVALUATION,)


def form_fields() -> list[FormField]:
    """Every config field the form shows, in the form's order."""
    boxes = [box for columns in (FIRST_COLUMNS, ADVANCED_COLUMNS) for column in columns for box in column]
    return [row for box in (*boxes, *ADVANCED_BELOW) for row in box.rows if isinstance(row, FormField)]


def offered_choices(field: FormField) -> list[tuple[str, str]]:
    """(value, words) of each choice this machine offers: FlashAttention 2 only where flash_attn is installed."""
    values = config_field(field.section, field.name).metadata.get("choices", [])
    if field.name == "attn_implementation" and importlib.util.find_spec("flash_attn") is None:
        values = [value for value in values if value != "flash_attention_2"]
    if field.choices is None:
        return [(value, value) for value in values]
    return [(value, field.choices[value]) for value in values if value in field.choices]


def form_values(config: RunConfig) -> dict[str, dict[str, typing.Any]]:
    """The values of the form's fields in `config`, by section."""
    values: dict[str, dict[str, typing.Any]] = {}
    for field in form_fields():
        values.setdefault(field.section, {})[field.name] = getattr(getattr(config, field.section), field.name)
    return values
