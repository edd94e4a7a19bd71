"""The Config tab's "Fit to this GPU": the planner's choice written through the draft, the estimate before and after,
the reasons, and the longest context the chosen model fits on the card."""

from __future__ import annotations

import numpy as np
import pytest

from studio.core.config.settings import RunConfig
from studio.core.data.stats import TokenStats
from studio.core.system.gpu import GpuInfo
from studio.ui.background import running_tasks

MIB = 1024**2
RTX_4060 = GpuInfo("NVIDIA GeForce RTX 4060", 8188 * MIB, 8188 * MIB)


@pytest.fixture(autouse=True)
def private_folders(tmp_path, monkeypatch):
    monkeypatch.setenv("FINETUNE_STUDIO_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))


@pytest.fixture
def tab(qtbot):
    from studio.ui.tabs.config_tab import QtConfigTab

    tab = QtConfigTab(gpu=RTX_4060)
    qtbot.addWidget(tab)
    tab.resize(1160, 720)
    yield tab
    tab.shutdown()
    qtbot.waitUntil(lambda: not running_tasks(), timeout=60_000)


def _stats(lengths: list[int]) -> TokenStats:
    """What the Dataset tab measured: every row's token length."""
    n = len(lengths)
    return TokenStats(total_rows=n, max_length=1024, lengths=np.array(lengths, dtype=np.int32),
                      trained=np.array(lengths, dtype=np.int32) // 2, first_trained=np.zeros(n, dtype=np.int32),
                      line_numbers=np.arange(1, n + 1), complete=True)


def _start(qtbot, tab, model: str = "llama-3.1-8b") -> None:
    config = RunConfig()
    config.model.name_or_path = model
    config.data.train_file = "/data/train.jsonl"
    tab.set_config(config)
    assert tab.selected_preset().key == "8gb", "the 8 GB card's preset"
    tab.apply_preset("8gb")
    qtbot.waitUntil(lambda: tab.vram_panel.estimate is not None)


def test_fit_on_the_8gb_preset_with_the_8b_shape_changes_the_settings_and_the_estimate_and_says_why(qtbot, tab):
    _start(qtbot, tab)
    assert tab.max_length.value() == 1024 and not tab.activation_offloading.isChecked()
    qtbot.waitUntil(lambda: tab.context_label.text().startswith("Longest context that fits"))
    assert "on NVIDIA GeForce RTX 4060" in tab.context_label.text()
    before = tab.vram_panel.estimate.total
    tab.token_stats_source = lambda: _stats([600] * 199 + [2000])  # the data's longest example: 2,000 tokens

    with qtbot.waitSignal(tab.changed):
        tab.fit_button.click()

    # The settings: the form, the draft and the config a run gets all show the planner's choice.
    assert tab.max_length.value() == 2000 and tab.activation_offloading.isChecked()
    assert tab.gradient_checkpointing.isChecked()
    assert tab.per_device_train_batch_size.value() * tab.gradient_accumulation_steps.value() == 8
    config = tab.draft.config
    assert config.training.max_length == 2000 and config.training.activation_offloading
    # The estimate follows, and the panel with it.
    after = tab.last_fit.after.total
    assert after != before and after <= 0.9 * RTX_4060.free_bytes
    qtbot.waitUntil(lambda: tab.vram_panel.estimate is not None and tab.vram_panel.estimate.total == after)
    # What it did, before and after, and why.
    text = tab.fit_label.text()
    assert not tab.fit_label.isHidden()
    assert text.startswith("Fitted to 8.0 GiB free on NVIDIA GeForce RTX 4060: estimate ")
    assert "max_length 1,024 → 2,000" in text and "activation_offloading off → on" in text
    assert "covers the longest example (2,000 tokens)" in text and "Activation offloading on:" in text


def test_where_nothing_fits_the_settings_stay_and_it_says_what_would(qtbot, tab):
    _start(qtbot, tab)
    tab.token_stats_source = lambda: _stats([16_000] * 10)
    before = tab.current_config()
    tab.fit_button.click()
    assert tab.current_config() == before, "a run that cannot fit is not set up"
    text = tab.fit_label.text()
    assert text.startswith("Nothing fits 8.0 GiB free on NVIDIA GeForce RTX 4060")
    assert "What would fit:" in text and "A max_length of" in text and "A smaller model: llama-3.2-" in text


def test_without_measured_lengths_the_fit_keeps_max_length_and_says_so(qtbot, tab):
    _start(qtbot, tab, "llama-3.2-3b")
    tab.fit_button.click()
    assert tab.max_length.value() == 1024
    assert "no token lengths are measured yet" in tab.fit_label.text()


def test_a_fit_for_length_sets_lora_dropout_0_in_the_form_and_says_it_changes_training(qtbot, tab):
    """The 8B shape at 6,000 tokens on an 8 GB card needs every lever: the form, the draft and the run get LoRA
    dropout 0 and the input embedding in CPU RAM, and the reasons say that dropout 0 changes training."""
    _start(qtbot, tab)
    assert tab.lora_dropout.value() == 0.05 and not tab.embedding_on_cpu.isChecked()
    tab.token_stats_source = lambda: _stats([900] * 199 + [6000])
    with qtbot.waitSignal(tab.changed):
        tab.fit_button.click()
    assert tab.max_length.value() == 6000 and tab.lora_dropout.value() == 0.0 and tab.embedding_on_cpu.isChecked()
    config = tab.current_config()
    assert config.lora.lora_dropout == 0.0 and config.training.embedding_on_cpu
    text = tab.fit_label.text()
    assert "lora_dropout 0.05 → 0.0" in text and "embedding_on_cpu off → on" in text
    assert "LoRA dropout 0.05 → 0 to fit this length — this changes training" in text
