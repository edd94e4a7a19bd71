"""The window walked as a new user walks it (issue 22's walk): what the screen shows is what the studio uses."""

from __future__ import annotations

import json


from studio.core.runs.store import RunStore
from walk_shared import make_window  # noqa: F401  (shared with the other half)






# ------------------------------------------------------------ 3. the preset and every edit survive a relaunch


def _knobs(config):
    return (config.quantization, config.lora, config.training)


def test_the_preset_chosen_and_its_values_survive_a_relaunch_and_an_edit_marks_it(qtbot, make_window, demo_assets):
    win = make_window()
    assert win._load_config_file(demo_assets.config_path)
    tab = win.config_tab
    tab.apply_preset("cpu-demo")
    tab.apply_preset("8gb")  # as a user picks it in the box: no Start
    chosen = _knobs(win.config)
    win.close()

    again = make_window(clean=False)
    assert again.config_tab.preset_combo.currentData() == "8gb"
    assert _knobs(again.config) == chosen, "the fields hold the preset's values"
    qtbot.waitUntil(lambda: again.config_tab.preset_combo.currentText() == again.config_tab.selected_preset().label,
                    timeout=5_000)

    again.config_tab.max_length.setValue(again.config_tab.max_length.value() // 2)  # an edit, no Start
    qtbot.waitUntil(lambda: again.config_tab.preset_combo.currentText().endswith("edited"), timeout=5_000)
    edited = _knobs(again.config)
    qtbot.wait(700)  # the debounced save
    third = make_window(clean=False)
    assert _knobs(third.config) == edited
    assert third.config_tab.preset_combo.currentData() == "8gb"
    qtbot.waitUntil(lambda: third.config_tab.preset_combo.currentText().endswith("edited"), timeout=5_000)


# ------------------------------------------------------------------------ 4. the fit report clears when untrue


def test_the_fit_report_goes_when_another_preset_or_an_edit_changes_the_fields(qtbot, make_window, demo_assets):
    win = make_window()
    assert win._load_config_file(demo_assets.config_path)
    tab = win.config_tab
    tab.fit_to_gpu()
    assert not tab.fit_label.isHidden() and tab.fit_label.text().startswith("Fitted to"), tab.fit_label.text()

    tab.apply_preset("8gb")
    assert tab.fit_label.isHidden() and tab.fit_label.text() == ""

    tab.fit_to_gpu()
    assert not tab.fit_label.isHidden()
    tab.max_length.setValue(tab.max_length.value() + 64)
    assert tab.fit_label.isHidden()


# ------------------------------------------------------------- 5. a CPU-only estimate names RAM, not a card


def test_on_a_cpu_only_machine_the_cpu_demo_estimate_is_ram_within_the_models_positions(qtbot, make_window,
                                                                                        demo_assets):
    win = make_window()
    tab = win.config_tab
    tab.session.set_device(None)  # a machine without an NVIDIA GPU
    assert win._load_config_file(demo_assets.config_path)
    tab.apply_preset("cpu-demo")
    qtbot.waitUntil(lambda: tab.vram_panel.estimate is not None and bool(tab.context_label.text()), timeout=5_000)
    panel = tab.vram_panel
    assert "GPU" not in panel.title() and "RAM" in panel.title(), panel.title()
    assert "CUDA context" not in panel.estimate.breakdown
    assert "preset's card" not in panel.against_label.text() and "available" in panel.against_label.text()

    positions = json.loads((demo_assets.model_dir / "config.json").read_text())["max_position_embeddings"]
    longest = int(tab.context_label.text().split(":", 1)[1].split("tokens")[0].replace(",", ""))
    assert longest <= positions, tab.context_label.text()

    tab.max_length.setValue(positions * 4)
    qtbot.waitUntil(lambda: "max_position_embeddings" in panel.notes_label.text(), timeout=5_000)
    assert f"{positions:,} positions" in panel.notes_label.text()


def test_a_run_renamed_in_the_runs_view_moves_with_its_files_and_the_chat_field_follows(qtbot, make_window,
                                                                                        tmp_path):
    from studio.core.config.settings import RunConfig, load_config, save_config

    store = RunStore(tmp_path / "runs")
    run = store.new_run("demo-2")
    config = RunConfig(name="demo-2")
    config.model.name_or_path = "some-base"
    config.data.train_file = str(tmp_path / "chats.jsonl")
    save_config(config, run.config_path)
    run.adapter_dir.mkdir()
    (run.adapter_dir / "adapter_config.json").write_text("{}", encoding="utf-8")
    store.new_run("taken")
    win = make_window(store)
    win.chat_tab.set_model("some-base", run.adapter_dir)
    view = win.runs_view
    view.refresh_now()
    view.select_runs(["demo-2"])

    view.ask_new_name = lambda current: "taken"
    assert view.rename_selected() is None and "already exists" in view.info_label.text()
    view.ask_new_name = lambda current: "turkish-calls"
    renamed = view.rename_selected()

    assert renamed is not None and renamed.path == store.root / "turkish-calls" and not run.path.exists()
    assert (renamed.adapter_dir / "adapter_config.json").read_text(encoding="utf-8") == "{}"
    assert load_config(renamed.config_path).name == "turkish-calls"
    assert [view.table.item(r, 0).text() for r in range(view.table.rowCount())].count("turkish-calls") == 1
    assert win.chat_tab.adapter_edit.text() == str(renamed.adapter_dir)
