"""The Config tab: live estimate, presets for the GPU, every knob bound both ways, model picker, copy as command."""

from __future__ import annotations

import json

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication

from studio.core.config.settings import RunConfig, load_config
from studio.core.system.gpu import GpuInfo
from studio.core.plan.vram import FITS
from studio.ui.background import running_tasks

MIB = 1024**2
TINY_LLAMA = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 256,
}


@pytest.fixture(autouse=True)
def private_folders(tmp_path, monkeypatch):
    """Each test gets its own user data folder and an empty Hugging Face cache."""
    monkeypatch.setenv("FINETUNE_STUDIO_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))


def _make_tab(qtbot, gpu=None):
    from studio.ui.tabs.config_tab import QtConfigTab

    tab = QtConfigTab(gpu=gpu)
    qtbot.addWidget(tab)
    tab.resize(1160, 720)
    return tab


@pytest.fixture
def tab(qtbot):
    tab = _make_tab(qtbot)
    yield tab
    tab.shutdown()
    qtbot.waitUntil(lambda: not running_tasks(), timeout=60_000)


def _config(model: str = "llama-3.1-8b") -> RunConfig:
    config = RunConfig()
    config.model.name_or_path = model
    config.data.train_file = "/data/train.jsonl"
    return config


def _estimate(tab):
    return tab.vram_panel.estimate


# ------------------------------------------------------------------ the live estimate


def test_the_estimate_follows_rank_and_max_length(qtbot, tab):
    tab.set_config(_config())
    qtbot.waitUntil(lambda: _estimate(tab) is not None)
    lora_before = _estimate(tab).breakdown["LoRA weights"]
    total_before = _estimate(tab).total
    assert tab.vram_panel.total_label.text().endswith("GiB")

    with qtbot.waitSignal(tab.changed):
        tab.r.setValue(64)
    qtbot.waitUntil(lambda: _estimate(tab).breakdown["LoRA weights"] == 4 * lora_before)
    assert _estimate(tab).total > total_before

    activations = _estimate(tab).breakdown["activations, gradient checkpointing"]
    tab.max_length.setValue(4096)
    qtbot.waitUntil(lambda: _estimate(tab).breakdown["activations, gradient checkpointing"] > 3 * activations)
    assert tab.vram_panel.total_label.text() == f"{_estimate(tab).total / 1024**3:.2f} GiB"


def test_without_a_gpu_the_cpu_demo_estimate_is_ram_and_a_gpu_preset_is_compared_with_its_card(qtbot, tab):
    assert tab.selected_preset().key == "cpu-demo", "no NVIDIA GPU: the CPU demo preset is selected"
    tab.set_config(_config("llama-3.2-1b"))
    qtbot.waitUntil(lambda: _estimate(tab) is not None)
    assert "available on this computer" in tab.vram_panel.against_label.text()
    assert "RAM" in tab.vram_panel.title() and "CUDA context" not in _estimate(tab).breakdown
    tab.apply_preset("8gb")  # planning for a card this computer lacks
    qtbot.waitUntil(lambda: "8.00 GiB" in tab.vram_panel.against_label.text())
    assert "no NVIDIA GPU detected" in tab.vram_panel.against_label.text()
    assert tab.vram_panel.title() == "GPU memory estimate"
    assert tab.vram_panel.verdict == FITS and tab.vram_panel.badge.text().strip() == FITS


def test_with_an_8gb_card_its_preset_is_selected_and_its_free_memory_used(qtbot):
    card = GpuInfo("NVIDIA GeForce RTX 4060", 8188 * MIB, 7000 * MIB)
    tab = _make_tab(qtbot, gpu=card)
    assert tab.selected_preset().key == "8gb"
    tab.set_config(_config())
    qtbot.waitUntil(lambda: _estimate(tab) is not None)
    assert "RTX 4060" in tab.vram_panel.against_label.text()
    assert tab.vram_panel.verdict == _estimate(tab).verdict(7000 * MIB)


def test_a_model_whose_shape_is_unknown_says_why(qtbot, tab):
    tab.set_config(_config("acme/not-downloaded"))
    qtbot.waitUntil(lambda: "No estimate" in tab.vram_panel.against_label.text())
    assert tab.vram_panel.estimate is None and not tab.vram_panel.badge.isVisible()


# ------------------------------------------------------------------ presets


def test_applying_a_preset_sets_the_knobs_and_keeps_model_and_data(qtbot, tab):
    tab.set_config(_config("org/my-model"))
    with qtbot.waitSignal(tab.changed):
        tab.apply_preset("16gb")
    config = tab.current_config()
    assert config.model.name_or_path == "org/my-model"
    assert config.data.train_file == "/data/train.jsonl"
    assert (config.lora.r, config.training.per_device_train_batch_size, config.training.max_length) == (32, 2, 2048)
    assert tab.r.value() == 32


def test_a_preset_fills_an_empty_model_with_the_one_it_was_sized_for(qtbot, tab):
    tab.apply_preset("8gb")
    assert tab.model_edit.text() == "meta-llama/Llama-3.2-3B-Instruct"
    qtbot.waitUntil(lambda: _estimate(tab) is not None)
    assert tab.vram_panel.verdict == FITS


def test_a_saved_preset_is_offered_and_applies(qtbot, tab):
    tab.set_config(_config())
    tab.r.setValue(24)
    path = tab.save_preset("Night runs")
    assert path.is_file()
    assert tab.preset_combo.currentText() == "Night runs (yours)"
    tab.r.setValue(8)
    tab.apply_preset("user:night-runs")
    assert tab.r.value() == 24


# ------------------------------------------------------------------ every knob, both ways


def test_every_knob_round_trips_through_the_form(qtbot, tab):
    config = _config("org/model")
    config.model.attn_implementation = "eager"
    q = config.quantization
    q.mode, q.bnb_4bit_quant_type, q.bnb_4bit_use_double_quant, q.compute_dtype = "4bit", "fp4", False, "float16"
    lora = config.lora
    lora.r, lora.lora_alpha, lora.lora_dropout, lora.bias = 12, 24, 0.1, "lora_only"
    lora.target_modules = ["q_proj", "v_proj"]
    lora.modules_to_save = ["lm_head"]
    lora.use_rslora, lora.use_dora = True, True
    t = config.training
    t.learning_rate, t.num_train_epochs, t.max_steps = 1.5e-4, 2.0, 300
    t.per_device_train_batch_size, t.gradient_accumulation_steps, t.max_length = 2, 3, 1536
    t.lr_scheduler_type, t.warmup_ratio, t.weight_decay, t.max_grad_norm = "linear", 0.05, 0.01, 0.5
    t.optim, t.gradient_checkpointing, t.seed, t.packing = "adamw_8bit", False, 7, True
    t.logging_steps, t.save_steps, t.save_total_limit = 5, 100, 4
    t.eval_strategy, t.eval_steps, t.early_stopping_patience = "steps", 25, 3

    tab.set_config(config)
    result = RunConfig()
    result.data.train_file = config.data.train_file
    tab.apply_to(result)
    assert result == config
    assert tab.effective_batch.text().startswith("6 ")


def test_set_config_does_not_emit_changed_but_edits_do(qtbot, tab):
    emitted = []
    tab.changed.connect(lambda: emitted.append(1))
    tab.set_config(_config())
    assert emitted == []
    tab.packing.setChecked(True)
    tab.optim.setCurrentIndex(tab.optim.findData("adamw_torch"))
    assert len(emitted) == 2


def test_the_first_screen_is_simple_and_advanced_is_collapsed(tab):
    assert not tab.advanced.isExpanded()
    assert tab.r.toolTip() and tab.packing.toolTip() and tab.early_stopping_patience.toolTip()


def test_target_module_shortcuts(qtbot, tab):
    tab.set_config(_config())
    qtbot.mouseClick(tab.attention_only_button, Qt.MouseButton.LeftButton)
    assert tab.current_config().lora.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj"]
    qtbot.mouseClick(tab.attention_mlp_button, Qt.MouseButton.LeftButton)
    assert len(tab.current_config().lora.target_modules) == 7
    qtbot.mouseClick(tab.all_linear_button, Qt.MouseButton.LeftButton)
    assert tab.current_config().lora.target_modules == ["all-linear"]


def test_the_models_linear_layers_are_detected(qtbot, tab, tmp_path):
    folder = tmp_path / "tiny-model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(TINY_LLAMA))
    with qtbot.waitSignal(tab.modules_detected, timeout=120_000) as detected:
        tab.set_config(_config(str(folder)))
    assert detected.args[0].mlp == ("gate_proj", "up_proj", "down_proj")
    assert "gate_proj" in tab.detected_label.text()


def test_after_a_relaunch_known_layer_names_show_at_once(qtbot, tmp_path):
    from studio.core.models.layers import detect_linear_modules

    folder = tmp_path / "tiny-model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(TINY_LLAMA))
    detect_linear_modules(str(folder))  # what the window read at an earlier start
    relaunched = _make_tab(qtbot)
    with qtbot.waitSignal(relaunched.modules_detected, timeout=5_000):
        relaunched.set_config(_config(str(folder)))
    assert relaunched.detect_worker is None, "no background read (and no torch import) was needed"
    assert "gate_proj" in relaunched.detected_label.text()
    relaunched.shutdown()


# ------------------------------------------------------------------ model picker


def test_trust_remote_code_is_given_to_one_model_only(qtbot, tab):
    config = _config("org/model")
    config.model.trust_remote_code = True
    tab.set_config(config)
    assert tab.trust_remote_code.isChecked() and not tab.model_picker.trust_warning.isHidden()
    tab.model_edit.setFocus()
    qtbot.keyClicks(tab.model_edit, "-v2")
    assert not tab.trust_remote_code.isChecked()
    assert tab.model_picker.trust_warning.isHidden()
    assert tab.current_config().model.trust_remote_code is False


def test_the_cache_menu_lists_cached_models_with_their_size(qtbot, tab, tmp_path):
    # The HF cache layout: blobs, refs/main and a snapshot folder of links to the blobs.
    repo = tmp_path / "hub" / "models--acme--tiny-llama"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "blobs").mkdir()
    (repo / "snapshots" / commit).mkdir(parents=True)
    for index, (name, content) in enumerate({"config.json": json.dumps(TINY_LLAMA).encode(),
                                             "model.safetensors": b"\0" * 2048}.items()):
        (repo / "blobs" / f"blob{index}").write_bytes(content)
        (repo / "snapshots" / commit / name).symlink_to(f"../../blobs/blob{index}")
    tab.model_picker.refresh_cache_menu()
    (action,) = tab.model_picker.cache_menu.actions()
    assert action.text().startswith("acme/tiny-llama") and "MiB" in action.text()
    with qtbot.waitSignal(tab.changed):
        action.trigger()
    assert tab.current_config().model.name_or_path == "acme/tiny-llama"
    qtbot.waitUntil(lambda: _estimate(tab) is not None and "cache" in tab.vram_panel.source_label.text())


def test_a_download_without_network_says_so(qtbot, tab, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    tab.set_config(_config("acme/not-cached"))
    assert tab.model_picker.download_button.isEnabled()
    with qtbot.waitSignal(tab.model_picker.download_failed, timeout=30_000) as failed:
        tab.model_picker.start_download()
    assert "offline" in failed.args[0]
    assert "offline" in tab.model_picker.status_label.text()
    qtbot.waitUntil(lambda: tab.model_picker.download_worker is None)
    assert not tab.model_picker.progress_bar.isVisible() and tab.model_picker.download_button.isEnabled()


def test_a_download_error_is_shown_whole_and_goes_once_a_local_folder_is_chosen(qtbot, tab, demo_assets):
    picker = tab.model_picker
    tab.resize(1000, 700)
    tab.show()
    tab.set_config(_config("acme/not-cached"))
    message = ("Could not download acme/not-cached: 401 Client Error: Unauthorized for url: "
               "https://huggingface.co/api/models/acme/not-cached/revision/main (a gated or private model: "
               "log in with `hf auth login` and ask for access on its page)")
    picker._on_download_failed(message)
    label = picker.status_label
    # Every wrapped line has room (the label is as tall as its text needs), and that is more than one line.
    qtbot.waitUntil(lambda: label.height() >= label.heightForWidth(label.width()) > 1.5 * label.fontMetrics().height())
    assert picker.status_label.text() == message and picker.status_label.wordWrap(), "wrapped, never elided"
    tab.grab().save("/tmp/h3-download-error.png")
    picker.choose(str(demo_assets.model_dir))  # the user picks a local folder instead
    assert picker.status_label.text() == ""


def test_an_unknown_layer_names_message_is_cut_between_words(qtbot, tab, tmp_path):
    folder = tmp_path / "a model folder whose config.json is missing, so its layer names cannot be read"
    folder.mkdir()
    tab.set_config(_config(str(folder)))
    qtbot.waitUntil(lambda: "Layer names unknown" in tab.detected_label.text(), timeout=10_000)
    tab.resize(1000, 700)
    tab.show()
    qtbot.wait(300)
    tab.grab().save("/tmp/h3-layer-names.png")
    lines = tab.detected_label.text().split("\n")
    # Lines short enough for the label beside the form (it clips, it does not wrap by itself).
    assert len(lines) > 1 and all(len(line) <= 80 for line in lines if " " in line), lines
    assert " ".join(lines) == tab.detected_label.toolTip(), "nothing is lost: the lines join to the message"


def test_a_folder_is_not_offered_for_download(qtbot, tab, tmp_path):
    tab.set_config(_config(str(tmp_path)))
    assert not tab.model_picker.download_button.isEnabled()


# ------------------------------------------------------------------ copy as command


def test_copy_as_command_saves_the_config_and_copies_the_line(qtbot, tab, tmp_path):
    tab.set_config(_config("org/model"))
    tab.r.setValue(8)
    command = tab.copy_command()
    assert command is not None and command.startswith("finetune-studio train ")
    assert QGuiApplication.clipboard().text() == command
    path = tab.command_config_path(tab.current_config())
    assert str(path) in command
    saved = load_config(path)
    assert saved.lora.r == 8 and saved.data.train_file == "/data/train.jsonl"


def test_copy_as_command_uses_the_windows_config_and_refuses_an_incomplete_one(qtbot, tab):
    window_config = _config("org/model")
    window_config.data.train_file = ""
    tab.config_source = lambda: window_config
    tab.set_config(window_config)
    assert tab.copy_command() is None
    assert "data.train_file" in tab.command_label.text()
    window_config.data.train_file = "/data/other.jsonl"
    assert tab.copy_command() is not None
    assert load_config(tab.command_config_path(tab.current_config())).data.train_file == "/data/other.jsonl"


def test_the_learning_rate_reads_and_shows_scientific_notation(qtbot, tab):
    tab.set_config(_config())
    box = tab.learning_rate
    box.lineEdit().selectAll()
    qtbot.keyClicks(box.lineEdit(), "3e-5")
    box.interpretText()
    assert box.value() == pytest.approx(3e-5)
    assert tab.current_config().training.learning_rate == pytest.approx(3e-5)
    box.stepBy(1)
    assert box.value() == pytest.approx(3.75e-5), "a step up multiplies by 1.25"
    assert box.text() == "3.75e-05"


def test_the_fast_path_toggle_reaches_the_config_and_says_what_it_gives_here(qtbot, tab):
    tab.set_config(_config())
    tab.per_device_train_batch_size.setValue(2)
    assert tab.fast_path.isChecked() and tab.current_config().training.fast_path is True
    assert tab.fast_path_label.text() == "nothing to gain here (hover for why)"
    assert "NVIDIA GPU" in tab.fast_path_label.toolTip(), "the tooltip says why Liger is off on this machine"

    tab.fast_path.setChecked(False)
    assert tab.current_config().training.fast_path is False
    assert tab.fast_path_label.text().startswith("off: plain")


def test_on_a_gpu_the_fast_path_line_names_what_applies(qtbot, monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    installed = {"liger_kernel", "triton", "flash_attn"}
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: object() if name in installed else real_find_spec(name, *a))
    card = GpuInfo(name="NVIDIA GeForce RTX 4060", total_bytes=8 << 30, free_bytes=7 << 30,
                   compute_capability=(8, 9))
    tab = _make_tab(qtbot, gpu=card)
    tab.set_config(_config())
    tab.per_device_train_batch_size.setValue(2)
    assert tab.fast_path_label.text() == "on here: Liger Kernel, FlashAttention-2, padding-free batches"
    installed.clear()
    tab.per_device_train_batch_size.setValue(1)
    assert tab.fast_path_label.text() == "Liger Kernel not installed (hover for how)"
    tab.shutdown()
    qtbot.waitUntil(lambda: not running_tasks(), timeout=60_000)


# ------------------------------------------------------------------ layout at common window sizes
# The tab's size inside the main window at 1024x640 and at 1280x800.
TAB_AT_1024 = (1006, 560)
TAB_AT_1280 = (1262, 720)


def _show_at(qtbot, tab, size, *, advanced=True):
    tab.set_config(_config())
    if advanced:
        tab.advanced.expand(animate=False)
    tab.resize(*size)
    tab.show()
    qtbot.waitExposed(tab)
    qtbot.wait(50)  # the layout settles (a reflow posts one more layout pass)


def _form_widgets(tab):
    """Every label and field of the forms in the scroll area, as (name, widget)."""
    from PySide6.QtWidgets import QFormLayout

    inner = tab.scroll_area.widget()
    for form in inner.findChildren(QFormLayout):
        for row in range(form.rowCount()):
            for role in (QFormLayout.ItemRole.LabelRole, QFormLayout.ItemRole.FieldRole,
                         QFormLayout.ItemRole.SpanningRole):
                item = form.itemAt(row, role)
                widget = item.widget() if item is not None else None
                if widget is not None and widget.isVisibleTo(tab):
                    name = getattr(widget, "text", lambda: "")() or type(widget).__name__
                    yield f"{form.parentWidget().title()}: {name}", widget


def _group_box(tab, title):
    from PySide6.QtWidgets import QGroupBox

    return next(box for box in tab.findChildren(QGroupBox) if box.title() == title)


@pytest.mark.parametrize("size", [TAB_AT_1024, TAB_AT_1280], ids=["1024x640", "1280x800"])
def test_every_field_lies_inside_the_viewport_and_is_not_squeezed(qtbot, tab, size):
    from PySide6.QtCore import QPoint
    from PySide6.QtWidgets import QLabel, QSizePolicy

    _show_at(qtbot, tab, size)
    scroll = tab.scroll_area
    inner, viewport = scroll.widget(), scroll.viewport()
    assert not scroll.horizontalScrollBar().isVisible(), "no sideways scrolling at this size"
    assert inner.width() <= viewport.width()
    checked = 0
    for name, widget in _form_widgets(tab):
        left = widget.mapTo(inner, QPoint(0, 0)).x()
        assert left >= 0 and left + widget.width() <= viewport.width(), f"{name} is cut off at the right"
        if widget.sizePolicy().horizontalPolicy() == QSizePolicy.Policy.Ignored:
            continue  # the detected layer names: clipped on purpose, the tooltip has them all
        if isinstance(widget, QLabel) and not widget.wordWrap():
            assert widget.width() >= widget.sizeHint().width(), f"{name!r} is truncated"
        else:
            assert widget.width() >= widget.minimumSizeHint().width(), f"{name} is squeezed"
        checked += 1
    assert checked > 40, "the advanced fields are checked too"


def test_wide_enough_the_columns_sit_side_by_side_and_narrow_they_stack(qtbot, tab):
    _show_at(qtbot, tab, TAB_AT_1280, advanced=False)
    lora, training = _group_box(tab, "LoRA adapter"), _group_box(tab, "Training")
    assert training.mapTo(tab, lora.rect().topLeft()).x() > lora.mapTo(tab, lora.rect().topRight()).x()
    assert training.mapTo(tab, training.rect().topLeft()).y() == lora.mapTo(tab, lora.rect().topLeft()).y()

    tab.resize(*TAB_AT_1024)
    qtbot.wait(50)
    assert training.mapTo(tab, training.rect().topLeft()).y() > lora.mapTo(tab, lora.rect().bottomLeft()).y()
    assert training.width() > 400, "one above the other, each column has the whole width"


def test_in_a_very_narrow_window_the_form_scrolls_sideways_rather_than_clipping(qtbot, tab):
    from PySide6.QtCore import QPoint

    _show_at(qtbot, tab, (720, 560))
    scroll = tab.scroll_area
    bar = scroll.horizontalScrollBar()
    assert bar.isVisible() and bar.maximum() > 0
    inner = scroll.widget()
    for name, widget in _form_widgets(tab):
        assert widget.mapTo(inner, QPoint(0, 0)).x() + widget.width() <= inner.width(), f"{name} unreachable"


def test_the_estimate_panel_keeps_its_width_for_the_breakdown(qtbot, tab):
    _show_at(qtbot, tab, TAB_AT_1024)
    qtbot.waitUntil(lambda: _estimate(tab) is not None)
    qtbot.wait(50)
    panel = tab.vram_panel
    assert panel.width() >= 350 and panel.width() >= panel.minimumSizeHint().width()


@pytest.mark.parametrize("size", [TAB_AT_1024, TAB_AT_1280], ids=["1024x640", "1280x800"])
def test_the_fast_path_note_takes_the_width_it_needs(qtbot, tab, size):
    _show_at(qtbot, tab, size, advanced=False)
    label = tab.fast_path_label
    assert label.text() == "nothing to gain here (hover for why)"
    metrics = label.fontMetrics()
    assert label.width() >= metrics.horizontalAdvance(label.text())
    assert label.height() < 2 * metrics.lineSpacing(), "one line, not a narrow column of three"

    # A note longer than the column wraps, and its box is as tall as its lines.
    label.setText("on here: Liger Kernel, FlashAttention-2, padding-free batches, and a little more besides")
    qtbot.wait(50)
    assert label.height() == label.heightForWidth(label.width())


def _menu_button_text_fits(button) -> bool:
    from PySide6.QtWidgets import QStyle

    style = button.style()
    needed = (button.fontMetrics().horizontalAdvance(button.text())
              + style.pixelMetric(QStyle.PixelMetric.PM_MenuButtonIndicator, None, button)
              + 2 * style.pixelMetric(QStyle.PixelMetric.PM_ButtonMargin, None, button))
    return button.sizeHint().width() >= needed and button.width() >= needed


def test_the_in_cache_button_has_room_for_its_text_and_menu_arrow(qtbot, tab):
    _show_at(qtbot, tab, TAB_AT_1024, advanced=False)
    button = tab.model_picker.cache_button
    assert button.menu() is tab.model_picker.cache_menu
    assert _menu_button_text_fits(button)


def test_the_estimate_panel_lays_its_text_out_before_it_is_painted(qtbot):
    from studio.ui.widgets.qt_vram_panel import NO_MODEL_TEXT, QtVramPanel

    panel = QtVramPanel()
    qtbot.addWidget(panel)
    panel.resize(350, 500)
    panel.show()
    qtbot.waitExposed(panel)
    label = panel.against_label
    assert label.text() == NO_MODEL_TEXT, "the first paint already says what to do"
    assert label.height() >= label.heightForWidth(label.width())

    # No event processing in between: a paint right now must not draw the new lines in the old box.
    panel.set_unavailable("No estimate: " + "the model's config.json could not be read here. " * 3)
    assert label.height() >= label.heightForWidth(label.width()), "the lines would overlap"


def test_the_collapsed_advanced_section_takes_no_focus_and_no_keys(qtbot, tab):
    assert not tab.advanced.isExpanded()
    assert not tab.bnb_4bit_quant_type.isEnabled(), "Tab would walk into a field nobody can see"
    tab.advanced.expand(animate=False)
    assert tab.bnb_4bit_quant_type.isEnabled()
    tab.advanced.collapse(animate=False)
    assert not tab.bnb_4bit_quant_type.isEnabled()
