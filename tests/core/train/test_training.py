"""End-to-end training of the offline demo: the run directory, the adapter, stop, resume, failures.

The one full 60-step demo run of the session is the `trained_run` fixture (tests/conftest.py); the
other runs here train for a few steps only. Tests that train (or load the model) are marked slow.
"""

from __future__ import annotations


import pytest

from studio.core.runs.store import RunDirectory
from training_shared import _config_with  # noqa: F401  (shared with the other half)


def test_an_evaluation_leaves_a_4bit_layer_passing_its_gradient():
    """The layer-level cause of the above: after one eval-mode forward, the input's gradient through a 4-bit layer
    is the one of a layer never evaluated (before the fix it was None on an AVX512-BF16 CPU)."""
    import bitsandbytes as bnb
    import torch

    from studio.core.models.trained_base import keep_4bit_weights_unpacked

    weight = torch.randn(128, 128, generator=torch.Generator().manual_seed(0)) * 0.1
    inputs = torch.randn(4, 128, generator=torch.Generator().manual_seed(1))

    def layer():
        quantised = bnb.nn.Linear4bit(128, 128, bias=False, compute_dtype=torch.float32, quant_type="nf4")
        quantised.weight = bnb.nn.Params4bit(weight.clone(), requires_grad=False, quant_type="nf4")
        return torch.nn.Sequential(quantised.to("cpu"))

    def gradient(model, *, evaluated_first: bool):
        if evaluated_first:
            model.eval()
            with torch.no_grad():
                model(inputs)
            model.train()
        x = inputs.clone().requires_grad_(True)
        model(x).sum().backward()
        return x.grad

    fresh, evaluated = layer(), layer()
    assert keep_4bit_weights_unpacked(evaluated) == (1 if bnb.functional.has_avx512bf16() else 0)
    expected = gradient(fresh, evaluated_first=False)
    got = gradient(evaluated, evaluated_first=True)
    assert got is not None and torch.equal(got, expected)


# ------------------------------------------------------------------ (e) failures a user can act on




@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        ("data__train_file", "no-such-data.jsonl", "no such file or folder"),
        ("data__eval_file", "no-such-eval.jsonl", "no such file or folder"),
        ("model__name_or_path", "no-such-model", "no such folder"),
        ("model__name_or_path", ".", "not a model folder (no config.json in it)"),
    ],
)
def test_a_missing_model_or_data_is_bad_input_before_any_run_folder_exists(tmp_path, demo_assets, run_studio,
                                                                           key, value, reason):
    config = _config_with(demo_assets, tmp_path, **{key: str(tmp_path / value)})
    run = RunDirectory(tmp_path / "run")

    result = run_studio("train", config, "--output", run.path)

    assert result.returncode == 2, result.stderr[-3000:]
    assert f"{key.replace('__', '.')} = {str((tmp_path / value))!r}: {reason}" in result.stderr
    assert "Traceback" not in result.stderr
    assert not run.path.exists(), "a typo costs a message, not a failed run in the history"


@pytest.mark.parametrize(
    ("toml_line", "extra_args", "key"),
    [
        ("r = 0", (), "lora.r"),
        ('mode = "3bit"', (), "quantization.mode"),
        ("", ("--max-steps", "-5"), "training.max_steps"),
    ],
)
def test_a_bad_config_value_is_bad_input_naming_the_key(tmp_path, demo_assets, run_studio, toml_line,
                                                        extra_args, key):
    config = _config_with(demo_assets, tmp_path)
    if toml_line:
        name = toml_line.split(" =")[0]
        lines = config.read_text(encoding="utf-8").splitlines()
        assert any(line.startswith(f"{name} =") for line in lines)
        config.write_text("\n".join(toml_line if line.startswith(f"{name} =") else line for line in lines),
                          encoding="utf-8")

    result = run_studio("train", config, "--output", tmp_path / "run", *extra_args)

    assert result.returncode == 2, result.stderr[-3000:]
    assert key in result.stderr
    assert "Traceback" not in result.stderr


def test_evaluation_progress_is_reported_at_most_every_two_seconds_with_its_first_and_last_batch(monkeypatch):
    from types import SimpleNamespace

    from studio.core.train import callback

    events: list[dict] = []
    relay = callback.StudioCallback(events.append, lambda: False, config_digest="x", num_train_rows=10)
    state = SimpleNamespace(is_world_process_zero=True, global_step=4)
    clock = [100.0]
    monkeypatch.setattr(callback.time, "monotonic", lambda: clock[0])
    batches = list(range(7))
    for _ in batches:
        relay.on_prediction_step(None, state, None, eval_dataloader=batches)
        clock[0] += 0.9  # 7 batches over 6.3 s: the first, those 2 s apart, and the last
    assert [(e["event"], e["step"], e["done"], e["total"]) for e in events] == [
        ("evaluating", 4, 1, 7), ("evaluating", 4, 4, 7), ("evaluating", 4, 7, 7)]

    relay.on_evaluate(None, state, None)  # the next evaluation counts from its own first batch
    events.clear()
    relay.on_prediction_step(None, state, None, eval_dataloader=iter(batches))  # no length: total unknown
    assert [(e["done"], e["total"]) for e in events] == [(1, None)]


def test_the_cpu_thread_count_leaves_one_core_free_unless_set():
    from studio.core.config.settings import RunConfig
    from studio.core.train.factories import cpu_thread_count

    config = RunConfig()
    assert [cpu_thread_count(config, available=n) for n in (1, 2, 8)] == [1, 1, 7]
    config.training.cpu_threads = 2
    assert cpu_thread_count(config, available=8) == 2
