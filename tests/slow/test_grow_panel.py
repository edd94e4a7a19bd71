"""The Dataset tab's Grow panel on a small tool-call file (issue 25): slots shown, variants previewed, written,
listed apart, one dropped; then a training run uses them and its folder holds the recipe's record."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from PySide6.QtCore import Qt

from studio.core.config.settings import load_config, save_config
from studio.ui.tabs.dataset_tab import QtDatasetTab
ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())
sys.path.insert(0, str(ROOT / "benchmarks"))

from _callcentre import write_callcentre  # noqa: E402

LOAD_TIMEOUT_MS = 60_000


def test_grow_panel_writes_variants_apart_and_a_run_trains_on_them(qtbot, tmp_path, demo_assets, run_studio):
    tab = QtDatasetTab()
    qtbot.addWidget(tab)
    tab.resize(1180, 740)
    tab.show()
    try:
        _grow_and_train(qtbot, tab, tmp_path, demo_assets, run_studio)
    finally:
        tab.shutdown()


def _grow_and_train(qtbot, tab, tmp_path, demo_assets, run_studio):
    config = load_config(demo_assets.config_path)
    config.training.max_steps = 6
    tab.session.draft.set_config(config)
    source = write_callcentre(tmp_path / "calls.jsonl", 10, seed=6)
    tab.open_path(str(source))
    qtbot.waitUntil(lambda: not tab.is_loading() and tab.data is not None, timeout=LOAD_TIMEOUT_MS)
    panel = tab.grow_panel
    tab.bottom_tabs.setCurrentWidget(panel)
    assert not panel.write_button.isEnabled()  # nothing to write before slots are found

    qtbot.mouseClick(panel.take_button, Qt.MouseButton.LeftButton)
    shown = {panel.slots_table.item(r, 0).text(): panel.slots_table.item(r, 2).text()
             for r in range(panel.slots_table.rowCount())}
    assert shown["phone"] == "05#########" and shown["order_id"] == "SP########"
    preview = panel.preview_list.topLevelItem(0)
    assert preview.text(0).startswith("Preview") and preview.childCount() > 0
    assert "→" in preview.child(0).text(1)
    assert "held-out originals kept apart" in panel.status_label.text()

    # A shape edited in its cell: the preview follows.
    row = next(r for r in range(panel.slots_table.rowCount()) if panel.slots_table.item(r, 0).text() == "phone")
    panel.slots_table.item(row, 2).setText("0555#######")
    phones = [panel.preview_list.topLevelItem(0).child(i).text(1)
              for i in range(panel.preview_list.topLevelItem(0).childCount())]
    assert all("→ 0555" in text for text in phones if text.startswith("phone"))

    qtbot.mouseClick(panel.write_button, Qt.MouseButton.LeftButton)
    originals, generated = panel.preview_list.topLevelItem(0), panel.preview_list.topLevelItem(1)
    assert originals.text(0).startswith("Originals") and generated.text(0).startswith("Generated")
    count = generated.childCount()
    assert count > 0 and all(generated.child(i).text(1) != "the original" for i in range(count))
    # The run now trains on the grown rows and evaluates on the held-out originals; the tab re-reads them.
    settings = tab.session.settings
    assert settings.train_file.endswith("calls.grown.jsonl") and settings.eval_file.endswith("calls.held-out.jsonl")
    qtbot.waitUntil(lambda: not tab.is_loading() and tab.data is not None and len(tab.data.examples) > 10,
                    timeout=LOAD_TIMEOUT_MS)

    dropped = generated.child(0).data(0, Qt.ItemDataRole.UserRole)
    panel.preview_list.setCurrentItem(generated.child(0))
    qtbot.mouseClick(panel.drop_row_button, Qt.MouseButton.LeftButton)
    assert panel.preview_list.topLevelItem(1).childCount() == count - 1
    written = [json.loads(line) for line in Path(settings.train_file).read_text(encoding="utf-8").splitlines()]
    assert dropped not in {f"{r['grown']['original']}:{r['grown']['variant']}" for r in written}

    save_config(tab.session.draft.snapshot(), tmp_path / "grown.toml")
    run = tmp_path / "run"
    trained = run_studio("train", tmp_path / "grown.toml", "--output", run)
    assert trained.returncode == 0, trained.stderr[-3000:]
    record = (run / "grow.toml").read_text(encoding="utf-8")
    assert dropped in record and "[held_out]" in record and 'phone = "0555#######"' in record
