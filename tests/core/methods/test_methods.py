"""The methods wing (studio/core/methods/): every method has each part, its settings live in its own TOML section
(schema 2, version-1 files still read), and the layers contract places each half where it belongs."""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import sys
import typing
from pathlib import Path

import pytest

import studio
from studio.core.config.settings import (
    SCHEMA_VERSION,
    ConfigError,
    RunConfig,
    dumps,
    field_bounds,
    load_config,
    loads,
    save_config,
)
from studio.core.methods import registry
from studio.core.methods.registry import METHODS, method_names

REPO = Path(studio.__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

V1_FILE = '''\
schema_version = 1
name = "tool-calls-grpo"

[model]
name_or_path = "models/demo"
trust_remote_code = false
allow_pickle = false
init_adapter = ""
attn_implementation = "sdpa"

[quantization]
mode = "4bit"
bnb_4bit_quant_type = "nf4"
bnb_4bit_use_double_quant = true
compute_dtype = "auto"

[lora]
r = 16
lora_alpha = 32
lora_dropout = 0.05
target_modules = [
    "all-linear",
]
bias = "none"
modules_to_save = []
use_rslora = false
use_dora = false

[data]
train_file = "data/prompts.jsonl"
eval_file = ""
eval_fraction = 0.0
eval_auto = true
train_on_responses_only = true
format = "auto"
column_mapping = []
encoding = "utf-8"
skip_bad_rows = false
split = "train"
text_split = "blank_lines"

[training]
method = "grpo"
beta = 0.25
dpo_sft_weight = 1.5
num_generations = 2
max_completion_length = 48
rewards = [
    "contains=0.5",
    "tool_call=1",
]
reward_pattern = "<tool_code>"
length_penalty = 0.2
generation_temperature = 0.7
kl_coefficient = 0.04
learning_rate = 0.0002
num_train_epochs = 3.0
max_steps = -1
per_device_train_batch_size = 2
gradient_accumulation_steps = 1
max_length = 1024
lr_scheduler_type = "cosine"
warmup_ratio = 0.03
weight_decay = 0.0
max_grad_norm = 1.0
optim = "auto"
gradient_checkpointing = true
checkpointing_every_n_layers = 1
seed = 42
logging_steps = 1
save_steps = 50
save_total_limit = 3
eval_steps = 50
eval_strategy = "steps"
early_stopping_patience = 0
score_examples = 0
score_steps = 0
score_metric = "auto"
activation_offloading = false
embedding_on_cpu = false
fast_path = true
packing = false
cpu_threads = 0
'''
"""A GRPO run's run.toml as the studio before schema 2 wrote it (`dumps` of main at 58a9686), byte for byte."""


def _minimal(method: str = "sft") -> RunConfig:
    config = RunConfig()
    config.model.name_or_path, config.data.train_file = "model", "data.jsonl"
    config.training.method = method
    return config


# ------------------------------------------------------------------------------------------------ the registry

def test_every_method_has_each_part():
    assert method_names() == ("sft", "dpo", "orpo", "kto", "grpo")
    hints = typing.get_type_hints(RunConfig)
    for spec in METHODS:
        assert spec.title and spec.label and spec.help and spec.continue_label, spec.name
        assert spec.data.note and spec.data.columns and spec.data.kind, spec.name
        assert hints[spec.name] is spec.settings, f"RunConfig has a [{spec.name}] section of the method's own type"
        for f in dataclasses.fields(spec.settings):
            assert f.metadata.get("help") and f.metadata.get("label"), f"{spec.name}.{f.name}"
            if typing.get_type_hints(spec.settings)[f.name] in (int, float):
                assert field_bounds(spec.name, f.name), f"{spec.name}.{f.name} has both bounds for its number box"
        own_fields = {f.name for f in dataclasses.fields(spec.settings)}
        assert {new for _, new in spec.schema_1_keys} <= own_fields, spec.name
        if spec.name != registry.default_method():
            assert spec.plots, f"{spec.name} draws its live metrics"
            assert spec.data.detect is not None and spec.data.needs or spec.data.kind == "prompt"
        # The trainer half: TRL's trainer class and its config, from the shared arguments and the method's own.
        from studio.core.methods.trainers import method_training

        training = method_training(_minimal(spec.name))
        assert training.spec is spec and training.trainer_class().__name__.endswith("Trainer")
        args = training.args({"output_dir": "/tmp/out", "use_cpu": True, "report_to": "none"}, offloading=False)
        assert type(args).__name__.startswith(spec.title.upper()), (spec.name, type(args).__name__)


def test_the_method_settings_reach_the_trl_config():
    from studio.core.methods.trainers import method_training

    common = {"output_dir": "/tmp/out", "use_cpu": True, "report_to": "none"}
    dpo = _minimal("dpo")
    dpo.dpo.beta, dpo.dpo.sft_weight = 0.3, 1.0
    args = method_training(dpo).args(common, offloading=False)
    assert args.beta == 0.3 and args.loss_type == ["sigmoid", "sft"] and args.loss_weights == [1.0, 1.0]
    grpo = _minimal("grpo")
    grpo.grpo.num_generations, grpo.grpo.kl_coefficient, grpo.grpo.generation_temperature = 2, 0.04, 0.7
    grpo.training.per_device_train_batch_size = 2
    args = method_training(grpo).args(common, offloading=False)
    assert (args.num_generations, args.beta, args.temperature) == (2, 0.04, 0.7)
    assert [f.__name__ for f in method_training(grpo).trainer_kwargs()["reward_funcs"]] == ["tool_call"]


def test_the_live_plots_come_from_the_methods():
    assert registry.plot_of("rewards/margins").title == "Reward margin"
    assert registry.plot_of("rewards/tool_call/mean").title == "Reward per function"
    assert registry.plot_of("rewards/tool_call/std") is None, "a reward's spread is not plotted on its own"
    assert registry.plot_of("kl", "dpo") is None and registry.plot_of("kl", "grpo").title == "KL from the base"
    assert registry.plot_of("rewards/tool_call/mean").label("rewards/tool_call/mean") == "tool_call"
    assert [p.title for p in registry.all_plots()] == [
        "Reward margin", "Reward accuracy", "Log-probabilities", "Reward per function", "Reward", "Reply length",
        "KL from the base"]


def test_no_module_outside_the_wing_names_a_method_in_the_parts_it_left():
    """The modules the wing took its tables and if-chains from name no method any more."""
    pattern = re.compile(r"\"(sft|dpo|orpo|kto|grpo)\"|'(sft|dpo|orpo|kto|grpo)'")
    cleared = ["core/config/settings.py", "core/config/presets.py", "core/config/docs.py", "core/plan/vram.py",
               "core/plan/fit.py", "core/data/shape.py", "core/sessions/continuation.py", "core/sessions/config.py",
               "core/train/run.py", "core/train/factories.py", "core/train/preflight.py", "core/train/init_adapter.py",
               "ui/tabs/config_tab.py", "cli.py"]
    naming = [name for name in cleared if pattern.search((REPO / "studio" / name).read_text(encoding="utf-8"))]
    assert naming == []


# ------------------------------------------------------------------------------------------------- the TOML

def test_a_version_1_file_reads_with_the_same_values(tmp_path):
    path = tmp_path / "run.toml"
    path.write_bytes(V1_FILE.encode())
    config = load_config(path)
    assert config.training.method == "grpo"
    assert (config.dpo.beta, config.orpo.beta, config.kto.beta) == (0.25, 0.25, 0.25), "v1's one beta served each"
    assert config.dpo.sft_weight == 1.5
    g = config.grpo
    assert (g.num_generations, g.max_completion_length, g.rewards, g.reward_pattern, g.length_penalty,
            g.generation_temperature, g.kl_coefficient) == (2, 48, ["contains=0.5", "tool_call=1"], "<tool_code>", 0.2,
                                                            0.7, 0.04)
    assert config.training.per_device_train_batch_size == 2 and config.data.train_file.endswith("data/prompts.jsonl")
    # Saved again, it is a version-2 file with each method's section, which reads back the same.
    save_config(config, tmp_path / "v2.toml")
    text = (tmp_path / "v2.toml").read_text(encoding="utf-8")
    assert text.startswith(f"schema_version = {SCHEMA_VERSION}\n") and SCHEMA_VERSION == 2
    assert "\n[grpo]\nnum_generations = 2\n" in text and "\n[dpo]\nbeta = 0.25\nsft_weight = 1.5\n" in text
    assert "beta" not in text.split("[training]")[1].split("\n[")[0], "nothing of a method is left in [training]"
    assert load_config(tmp_path / "v2.toml") == config


def test_a_file_without_a_version_and_with_v1_keys_reads_as_version_1():
    """A user preset or a hand-written file from before carries no schema_version."""
    text = V1_FILE.replace("schema_version = 1\n", "")
    assert loads(text).grpo.num_generations == 2


@pytest.mark.parametrize("method", method_names())
def test_every_methods_toml_round_trips(method):
    config = _minimal(method)
    spec = registry.method(method)
    for f in dataclasses.fields(spec.settings):  # a value other than the default in every own setting
        value = getattr(getattr(config, method), f.name)
        changed = {bool: lambda: not value, int: lambda: 2 if f.name == "num_generations" else value + 2,
                   float: lambda: value + 0.5, str: lambda: "x+", list: lambda: ["exact=0.5"]}[type(value)]()
        setattr(getattr(config, method), f.name, changed)
    config.training.per_device_train_batch_size = 2  # whole GRPO groups per step
    text = dumps(config)
    assert loads(text) == config
    if dataclasses.fields(spec.settings):
        assert f"\n[{method}]\n" in text
    else:
        assert f"[{method}]" not in text, "a method without settings writes no empty table"


def test_an_unknown_key_in_a_method_section_names_it(tmp_path, run_studio):
    text = dumps(_minimal("dpo")).replace("[dpo]\n", "[dpo]\nbeat = 0.2\n")
    with pytest.raises(ConfigError) as error:
        loads(text)
    assert error.value.key == "dpo.beat" and "known in [dpo]: beta, sft_weight" in str(error.value)
    # The CLI: exit 2 and one line naming the file and the key.
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    result = run_studio("train", path, "--output", tmp_path / "run")
    assert result.returncode == 2
    assert f"{path}: dpo.beat = 0.2: unknown key" in result.stderr and "Traceback" not in result.stderr


def test_a_v1_key_in_a_version_2_file_says_where_it_moved():
    text = dumps(_minimal()).replace("[training]\n", "[training]\nbeta = 0.2\n")
    moved = r"training.beta = 0.2: unknown key .*moved to its own section .*\[dpo\] beta"
    with pytest.raises(ConfigError, match=moved):
        loads(text)


def test_a_setting_written_where_it_no_longer_is_raises():
    """Code from before schema 2 that still writes config.training.beta must fail, not set nothing."""
    config = _minimal()
    with pytest.raises(AttributeError):
        config.training.beta = 0.3
    with pytest.raises(AttributeError):
        config.grpo.beta = 0.3


def test_a_methods_own_rule_names_its_section():
    config = _minimal("grpo")
    config.grpo.num_generations = 3
    with pytest.raises(ConfigError, match=r"grpo.num_generations = 3: batch size × gradient accumulation \(4\)"):
        config.validate()
    config.training.method = "dpo"
    config.validate()  # another method's section is not checked by GRPO's rule


def test_presets_and_copy_as_command_carry_the_method_sections(tmp_path, monkeypatch):
    from studio.core.config.presets import KNOB_SECTIONS, load_user_preset, save_user_preset

    monkeypatch.setenv("FINETUNE_STUDIO_HOME", str(tmp_path))
    assert set(method_names()) <= set(KNOB_SECTIONS)
    config = _minimal("grpo")
    config.grpo.num_generations, config.training.gradient_accumulation_steps = 2, 2
    preset = load_user_preset(save_user_preset("mine", config))
    assert preset.apply(_minimal()).grpo.num_generations == 2
    # "Copy as command" saves the config the command trains: its [grpo] section, read back the same.
    from studio.core.sessions.config import command_config_path

    config.name = "grpo-run"
    save_config(config, command_config_path(config))
    assert "\n[grpo]\nnum_generations = 2\n" in command_config_path(config).read_text(encoding="utf-8")
    assert load_config(command_config_path(config)).grpo == config.grpo
    # A preset saved before schema 2 (no version, the method's settings under [training]) still loads.
    old = tmp_path / "old.toml"
    old.write_text('[preset]\nlabel = "old"\n\n[training]\nmethod = "dpo"\nbeta = 0.3\n', encoding="utf-8")
    assert load_user_preset(old).apply(_minimal()).dpo.beta == 0.3


# ------------------------------------------------------------------------------------------- the contracts

def _lint_imports(root: Path) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(root), "PATH": str(LINT_IMPORTS.parent), "NO_COLOR": "1"}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", str(REPO / "pyproject.toml")], cwd=root, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def studio_copy(tmp_path):
    shutil.copytree(REPO / "studio", tmp_path / "studio", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def _append(root: Path, module: str, code: str) -> None:
    path = root / "studio" / "core" / module
    path.write_text(path.read_text(encoding="utf-8") + "\n\n" + code + "\n", encoding="utf-8")


def test_the_contracts_break_when_the_config_imports_a_trainer_half(studio_copy):
    _append(studio_copy, "config/settings.py", "def _trainer():\n    from studio.core.methods.dpo import trainer")
    result = _lint_imports(studio_copy)
    assert result.returncode != 0
    assert "studio.core packages depend only downwards BROKEN" in result.stdout.replace("\n", " ")
    assert "studio.core.config.settings -> studio.core.methods.dpo.trainer" in result.stdout


def test_the_contracts_break_when_a_settings_half_imports_trl(studio_copy):
    _append(studio_copy, "methods/grpo/settings.py", "def _trl():\n    import trl")
    result = _lint_imports(studio_copy)
    assert result.returncode != 0
    assert "settings halves never import torch" in result.stdout and "studio.core.methods.grpo.settings -> trl" \
        in result.stdout


def test_the_contracts_break_when_one_method_imports_another(studio_copy):
    _append(studio_copy, "methods/orpo/trainer.py", "def _other():\n    from studio.core.methods.dpo import trainer")
    result = _lint_imports(studio_copy)
    assert result.returncode != 0
    assert "studio.core.methods.orpo.trainer -> studio.core.methods.dpo.trainer" in result.stdout
