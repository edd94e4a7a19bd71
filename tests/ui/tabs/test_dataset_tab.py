"""The Dataset tab with the real demo tokenizer: rows, the token preview, problems, encodings, mapping, scale."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pytest
from PySide6.QtCore import QElapsedTimer, Qt, QTimer

from studio.core.config.settings import RunConfig
from studio.ui.tabs.dataset_tab import QtDatasetTab
from studio.ui.widgets.qt_token_view import TRAINED_COLOURS

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))
from _synthetic import write_chat_jsonl  # noqa: E402

EOT = "<|eot_id|>"
LOAD_TIMEOUT_MS = 60_000
CONVERSATIONS = [
    [{"role": "system", "content": "You are Nimbus support. Answer in one or two sentences."},
     {"role": "user", "content": "Is there an outage in İzmir right now?"},
     {"role": "assistant", "content": "No outage is reported in İzmir; the network is running normally."},
     {"role": "user", "content": "My modem still shows a red light."},
     {"role": "assistant", "content": "Unplug the modem for thirty seconds, plug it back in and wait for green."},
     {"role": "user", "content": "It is green now, thanks!"},
     {"role": "assistant", "content": "Glad to hear it. Anything else I can help with?"}],
    [{"role": "user", "content": "What are your support hours?"},
     {"role": "assistant", "content": "Every day from 08:00 to 22:00, holidays included."}],
    [{"role": "user", "content": "Can I upgrade to Fiber 500?"},
     {"role": "assistant", "content": "Yes: Fiber 500 costs 450 TL a month and the upgrade is free."}],
]


def _write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows),
                    encoding="utf-8")
    return path


@pytest.fixture
def config(demo_assets) -> RunConfig:
    config = RunConfig()
    config.model.name_or_path = str(demo_assets.model_dir)
    config.training.max_length = 256
    return config


@pytest.fixture
def tab(qtbot):
    widget = QtDatasetTab()
    qtbot.addWidget(widget)
    widget.resize(1180, 740)
    widget.show()
    yield widget
    widget.shutdown()


def _open(qtbot, tab, config, path) -> None:
    config.data.train_file = str(path)
    tab.set_config(config)
    qtbot.waitUntil(lambda: not tab.is_loading(), timeout=LOAD_TIMEOUT_MS)


def _wait_preview(qtbot, tab) -> None:
    qtbot.waitUntil(lambda: tab.preview is not None, timeout=LOAD_TIMEOUT_MS)


def test_a_multi_turn_conversation_shows_trained_tokens_highlighted(qtbot, tab, config, tmp_path):
    path = _write_jsonl(tmp_path / "chat.jsonl", ({"messages": c} for c in CONVERSATIONS))
    with qtbot.waitSignal(tab.dataset_chosen, timeout=LOAD_TIMEOUT_MS) as chosen:
        config.data.train_file = str(path)
        tab.set_config(config)
    assert chosen.args == [path]
    assert tab.rows_model.rowCount() == 3
    assert "OpenAI messages" in tab.summary_label.text() and "3 of the first 3 records" in tab.summary_label.text()
    _wait_preview(qtbot, tab)
    preview = tab.preview
    trained = "".join(p.text for p in preview.pieces if p.trained)
    replies = [m["content"] for m in CONVERSATIONS[0] if m["role"] == "assistant"]
    assert trained == "".join(reply + EOT for reply in replies)
    assert "Nimbus support" not in trained and "red light" not in trained
    assert f"{preview.trained_tokens} trained" in tab.preview_info.text()
    assert TRAINED_COLOURS[0] in tab.token_view.toHtml() or TRAINED_COLOURS[1] in tab.token_view.toHtml()
    assert "Is there an outage in İzmir right now?" in tab.token_view.plain_text()

    tab.select_row(1)
    assert "".join(p.text for p in tab.preview.pieces if p.trained) == CONVERSATIONS[1][1]["content"] + EOT


def test_turning_off_responses_only_updates_the_preview_at_once(qtbot, tab, config, tmp_path):
    path = _write_jsonl(tmp_path / "chat.jsonl", ({"messages": c} for c in CONVERSATIONS))
    _open(qtbot, tab, config, path)
    _wait_preview(qtbot, tab)
    assert tab.preview.trained_tokens < tab.preview.total_tokens
    with qtbot.waitSignal(tab.settings_changed):
        qtbot.mouseClick(tab.responses_only_check, Qt.MouseButton.LeftButton)
    assert tab.preview.trained_tokens == tab.preview.total_tokens
    tab.apply_to(config)
    assert config.data.train_on_responses_only is False


def test_the_errors_panel_lists_every_bad_row_and_skipping_is_saved(qtbot, tab, config, tmp_path):
    good = {"messages": CONVERSATIONS[1]}
    path = _write_jsonl(tmp_path / "bad.jsonl", [
        good, '{"messages": [', {"messages": []}, good,
        {"messages": [{"role": "wizard", "content": "x"}, {"role": "assistant", "content": "y"}]}, "[1, 2]"])
    _open(qtbot, tab, config, path)
    panel = tab.errors_panel
    assert tab.bottom_tabs.currentWidget() is panel
    assert tab.bottom_tabs.tabText(1) == "Problems (4)"
    shown = [panel.model.index(r, 0).data() for r in range(panel.model.rowCount())]
    assert shown == ["line 2", "line 3", "line 5", "line 6"]
    tooltips = [panel.model.index(r, 1).data(Qt.ItemDataRole.ToolTipRole) for r in range(4)]
    assert tooltips[0].startswith(f"{path}:2: malformed JSON")
    assert tooltips[2] == f"{path}:5: messages[0]: unknown role 'wizard' (expected one of system, user, assistant, tool)"
    assert "Training refuses this data" in panel.summary_label.text()
    assert tab.rows_model.rowCount() == 2

    with qtbot.waitSignal(tab.settings_changed):
        panel.skip_check.click()
    tab.apply_to(config)
    assert config.data.skip_bad_rows is True
    assert "Training will skip them" in panel.summary_label.text()


def test_a_windows_1254_file_is_detected_and_read_with_one_click(qtbot, tab, config, tmp_path):
    path = tmp_path / "turkish.csv"
    path.write_bytes("prompt,completion\nMerhaba,Selam\nİzmir'de hava nasıl?,Güneşli ve ılık.\n".encode("cp1254"))
    _open(qtbot, tab, config, path)
    panel = tab.errors_panel
    assert tab.data is None and "Cannot use this data" in tab.summary_label.text()
    assert panel.encoding_banner.isVisible()
    assert "Windows-1254 (Turkish)" in panel.encoding_label.text() and "İzmir'de" in panel.encoding_label.text()
    assert panel.model.index(0, 1).data(Qt.ItemDataRole.ToolTipRole).startswith(f"{path}:3: not UTF-8 text")

    panel.encoding_button.click()
    qtbot.waitUntil(lambda: not tab.is_loading(), timeout=LOAD_TIMEOUT_MS)
    assert tab.settings.encoding == "cp1254" and not panel.encoding_banner.isVisible()
    assert tab.data.examples[1]["messages"][0]["content"] == "İzmir'de hava nasıl?"
    assert "Windows-1254" in tab.summary_label.text()


def test_the_encoding_banner_names_the_encoding_the_file_was_read_with(qtbot, tab, config, tmp_path):
    path = tmp_path / "utf8.csv"
    path.write_bytes("prompt,completion\nŞimdi mi?,Evet, şimdi.\n".encode("utf-8"))  # Ş holds 0x9e: not cp1254
    config.data.encoding = "cp1254"
    _open(qtbot, tab, config, path)
    text = tab.errors_panel.encoding_label.text()
    assert text.startswith("This file is not Windows-1254 (Turkish) text; it looks like UTF-8"), text


def test_a_byte_that_is_not_utf8_is_listed_at_its_line(qtbot, tab, config, tmp_path):
    path = tmp_path / "turkish.csv"
    path.write_bytes("prompt,completion\nMerhaba,Selam\nİzmir'de hava nasıl?,Güneşli ve ılık.\n".encode("cp1254"))
    _open(qtbot, tab, config, path)
    model = tab.errors_panel.model
    assert model.rowCount() == 1  # once, at its line, not also as a whole-file problem
    assert model.index(0, 0).data() == "line 3"
    assert model.index(0, 1).data().startswith("not UTF-8 text (byte 0xdd)")
    assert "Cannot use this data" in tab.summary_label.text()
    assert "cannot be used" in tab.errors_panel.summary_label.text()


@pytest.mark.parametrize("source", ["unrecognised shape", "windows-1254", "hub id offline"])
def test_a_source_without_a_usable_row_clears_the_previous_rows_preview(qtbot, tab, config, tmp_path, monkeypatch,
                                                                        source):
    import studio.core.data.sources as data_sources

    good = _write_jsonl(tmp_path / "chat.jsonl", ({"messages": c} for c in CONVERSATIONS))
    _open(qtbot, tab, config, good)
    _wait_preview(qtbot, tab)
    assert "trained" in tab.preview_info.text()

    if source == "unrecognised shape":
        spec = tmp_path / "qa.csv"
        spec.write_text("question,answer\nWhat?,That.\nWho?,Me.\n", encoding="utf-8")
    elif source == "windows-1254":
        spec = tmp_path / "turkish.csv"
        spec.write_bytes("prompt,completion\nşüç,hello\n".encode("cp1254"))
    else:
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
        monkeypatch.setattr(data_sources, "hub_is_reachable", lambda *args, **kwargs: False)
        spec = "someorg/somedataset"
    tab.open_path(spec)
    qtbot.waitUntil(lambda: not tab.is_loading(), timeout=LOAD_TIMEOUT_MS)
    assert tab.preview is None and tab.rows_model.rowCount() == 0
    assert "tokens" not in tab.preview_info.text() and "Line 1" not in tab.preview_info.text()
    assert "No row to show" in tab.preview_info.text()
    shown = tab.token_view.plain_text()
    assert "Hello" not in shown and ("Problems" in shown or "Columns" in shown)


def test_the_token_length_plot_starts_at_zero_rows_until_rows_are_measured(qtbot, tab, config, tmp_path):
    histogram = tab.histogram
    plot = histogram.plot_widget.getPlotItem()
    qtbot.waitExposed(histogram)

    def y_range() -> list[float]:
        return plot.getViewBox().viewRange()[1]

    assert y_range() == [0.0, 1.0] and histogram.empty_text.isVisible()
    assert histogram.cutoff.value() <= plot.getViewBox().viewRange()[0][1]  # max_length stays in sight

    path = _write_jsonl(tmp_path / "chat.jsonl", ({"messages": c} for c in CONVERSATIONS))
    with qtbot.waitSignal(tab.stats_ready, timeout=LOAD_TIMEOUT_MS):
        _open(qtbot, tab, config, path)
    assert y_range()[0] == 0 and y_range()[1] >= 1 and not histogram.empty_text.isVisible()

    tab.open_path(tmp_path / "missing.jsonl")
    assert y_range() == [0.0, 1.0] and histogram.empty_text.isVisible()
    assert "cannot be read" in histogram.caption.text()


def test_the_mapping_panel_maps_columns_named_otherwise(qtbot, tab, config, tmp_path):
    path = tmp_path / "qa.csv"
    path.write_text("id,question,answer,notes\n1,Capital of France?,Paris,geo\n2,2+2?,4,math\n", encoding="utf-8")
    _open(qtbot, tab, config, path)
    panel = tab.mapping_panel
    assert tab.bottom_tabs.currentWidget() is panel
    assert "not recognised" in panel.evidence_label.text()
    assert panel.format_combo.currentData() == "prompt_completion"
    assert panel.field_combos["prompt"].currentData() == "question"
    assert panel.field_combos["completion"].currentData() == "answer"

    panel.field_combos["system"].setCurrentIndex(panel.field_combos["system"].findData("notes"))
    with qtbot.waitSignal(tab.loaded, timeout=LOAD_TIMEOUT_MS):
        panel.apply_button.click()
    assert tab.settings.format == "prompt_completion"
    assert tab.settings.column_mapping == ["prompt=question", "completion=answer", "system=notes"]
    assert tab.data.examples[0] == {"messages": [{"role": "system", "content": "geo"},
                                                 {"role": "user", "content": "Capital of France?"},
                                                 {"role": "assistant", "content": "Paris"}]}
    assert "with the column mapping" in panel.evidence_label.text()
    tab.apply_to(config)
    assert config.data.column_mapping == ["prompt=question", "completion=answer", "system=notes"]

    with qtbot.waitSignal(tab.loaded, timeout=LOAD_TIMEOUT_MS):
        panel.reset_button.click()
    assert tab.settings.format == "auto" and tab.settings.column_mapping == []


def test_a_saved_dataset_folder_and_its_split(qtbot, tab, config, tmp_path):
    import datasets

    folder = tmp_path / "saved"
    datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"prompt": ["What are your support hours?"], "completion": ["08-22."]}),
        "test": datasets.Dataset.from_dict({"text": ["held out", "also held out"]}),
    }).save_to_disk(str(folder))
    _open(qtbot, tab, config, folder)
    assert tab.split_edit.isVisible() and tab.rows_model.rowCount() == 1
    assert tab.rows_model.headerData(0, Qt.Orientation.Horizontal) == "Row"
    tab.split_edit.setText("test")
    tab.split_edit.editingFinished.emit()
    qtbot.waitUntil(lambda: not tab.is_loading(), timeout=LOAD_TIMEOUT_MS)
    assert tab.settings.split == "test" and tab.rows_model.rowCount() == 2
    assert "plain text" in tab.summary_label.text()


def test_the_eval_split_is_a_seeded_fraction_or_a_file(qtbot, tab, config, tmp_path):
    path = _write_jsonl(tmp_path / "chat.jsonl", ({"messages": c} for c in CONVERSATIONS * 10))
    _open(qtbot, tab, config, path)
    split = tab.split_panel
    split.fraction_radio.click()
    split.fraction_spin.setValue(0.2)
    assert (tab.settings.eval_fraction, tab.settings.eval_file) == (0.2, "")
    assert "24 rows train, 6 rows evaluate" in split.counts_label.text()
    split.file_radio.click()
    split.file_edit.setText(str(path))
    split.file_edit.editingFinished.emit()
    assert (tab.settings.eval_fraction, tab.settings.eval_file) == (0.0, str(path))
    tab.apply_to(config)
    config.validate()  # never both


def test_the_histogram_marks_max_length_and_counts_the_rows_it_cuts(qtbot, tab, config, tmp_path):
    path = _write_jsonl(tmp_path / "chat.jsonl", ({"messages": c} for c in CONVERSATIONS))
    with qtbot.waitSignal(tab.stats_ready, timeout=LOAD_TIMEOUT_MS):
        _open(qtbot, tab, config, path)
    stats = tab.stats
    assert stats.complete and stats.measured == 3
    assert tab.histogram.cutoff.value() == 256
    tab.set_max_length(60)
    longer = int((stats.lengths > 60).sum())
    assert longer >= 1 and tab.histogram.truncated_rows() == longer
    assert f"{longer:,}</b> row(s)" in tab.histogram.caption.text() and "max_length 60" in tab.histogram.caption.text()
    assert tab.histogram.cutoff.value() == 60


@pytest.fixture(scope="module")
def large_file(tmp_path_factory) -> Path:
    """100,000 conversations (~28 MB): big enough to measure, small enough for CI (the 1M figure is from
    benchmarks/dataset_load.py)."""
    return write_chat_jsonl(tmp_path_factory.mktemp("large") / "large.jsonl", 100_000)


def test_loading_a_large_file_keeps_the_event_loop_running(qtbot, tab, large_file, monkeypatch, tmp_path,
                                                           record_property):
    """A benchmark figure, not a timed assertion: the longest event-loop stall while the file loads."""
    monkeypatch.setenv("FINETUNE_STUDIO_HOME", str(tmp_path / "home"))  # no cached scan from another test
    clock = QElapsedTimer()
    clock.start()
    gaps: list[int] = []
    last = [clock.elapsed()]
    shown_while_reading: list[int] = []

    def probe() -> None:
        now = clock.elapsed()
        gaps.append(now - last[0])
        last[0] = now

    def on_reset() -> None:
        if tab.rows_model.rowCount() and tab.is_loading() and not shown_while_reading:
            shown_while_reading.append(clock.elapsed())

    tab.rows_model.modelReset.connect(on_reset)
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(probe)
    timer.start()
    start = clock.elapsed()
    with qtbot.waitSignal(tab.loaded, timeout=120_000):
        tab.open_path(large_file)
    total = clock.elapsed() - start
    timer.stop()
    stall = max(gaps) - 10
    record_property("longest_event_loop_stall_ms", stall)
    print(f"\n100k rows: first rows after {shown_while_reading[0] - start} ms, all read in {total} ms, "
          f"longest event-loop stall {stall} ms (QTimer probe every 10 ms, {len(gaps)} ticks)")
    assert shown_while_reading, "the first rows were on show while the rest was still being read"
    assert tab.rows_model.rowCount() == 100_000
    assert tab.data.lines[-1] == 100_000


def test_cancel_keeps_the_first_rows(qtbot, tab, large_file, monkeypatch, tmp_path):
    import studio.core.sessions.dataset as workers

    monkeypatch.setenv("FINETUNE_STUDIO_HOME", str(tmp_path / "home"))
    real_load = workers.load_data

    def slow_load(*args, should_stop, **kwargs):  # a slower disk: the read cannot end before Cancel is pressed
        def stop() -> bool:
            time.sleep(0.01)
            return should_stop()

        return real_load(*args, should_stop=stop, **kwargs)

    monkeypatch.setattr(workers, "load_data", slow_load)
    tab.open_path(large_file)
    qtbot.waitUntil(lambda: tab.rows_model.rowCount() > 0, timeout=LOAD_TIMEOUT_MS)
    assert tab.cancel_button.isVisible() and tab.progress_bar.isVisible()
    with qtbot.waitSignal(tab.load_failed, timeout=LOAD_TIMEOUT_MS):
        tab.cancel_button.click()
    assert not tab.is_loading() and not tab.cancel_button.isVisible()
    assert 0 < tab.rows_model.rowCount() < 100_000
    assert "Reading cancelled" in tab.summary_label.text()


def test_nothing_in_a_file_can_break_the_tab(qtbot, tab, config, tmp_path):
    garbage = tmp_path / "garbage.jsonl"
    garbage.write_bytes(os.urandom(20_000))
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 truncated")
    empty = tmp_path / "empty.json"
    empty.write_text("", encoding="utf-8")
    nulls = tmp_path / "null.json"
    nulls.write_text("null", encoding="utf-8")
    folder = tmp_path / "folder"
    folder.mkdir()
    for path in (garbage, broken, empty, nulls, folder, tmp_path / "missing.jsonl"):
        _open(qtbot, tab, config, path)
        assert tab.data is None or len(tab.data.examples) == 0, path
        assert "Cannot use this data" in tab.summary_label.text() or tab.errors_panel.model.rowCount(), path
    good = _write_jsonl(tmp_path / "ok.jsonl", [{"messages": CONVERSATIONS[1]}])
    _open(qtbot, tab, config, good)
    assert tab.rows_model.rowCount() == 1


def test_edits_in_the_tab_reach_the_run_config(qtbot, demo_assets, tmp_path):
    from studio.core.config.settings import load_config
    from studio.core.system.gpu import HostTelemetry
    from studio.core.runs.store import RunStore
    from studio.ui.main_window import QtMainWindow

    main = QtMainWindow(store=RunStore(tmp_path / "runs"), telemetry=HostTelemetry(), offer_demo=False)
    qtbot.addWidget(main)
    main.set_config(load_config(demo_assets.config_path))
    tab = main.dataset_tab
    qtbot.waitUntil(lambda: tab.data is not None and tab.data.complete, timeout=LOAD_TIMEOUT_MS)
    assert tab.rows_model.rowCount() == 10
    tab.responses_only_check.click()
    tab.errors_panel.skip_check.click()
    assert main.config.data.train_on_responses_only is False and main.config.data.skip_bad_rows is True
    other = _write_jsonl(tmp_path / "other.jsonl", [{"messages": CONVERSATIONS[1]}])
    tab.open_path(other)
    qtbot.waitUntil(lambda: not tab.is_loading(), timeout=LOAD_TIMEOUT_MS)
    assert main.config.data.train_file == str(other)
    main.close()


def test_screenshots_of_the_preview_and_the_errors_panel(qtbot, demo_assets, tmp_path):
    """Grabs the window as the user sees it; with FINETUNE_STUDIO_SCREENSHOTS=DIR they are saved there."""
    from studio.core.config.settings import load_config
    from studio.core.system.gpu import HostTelemetry
    from studio.core.runs.store import RunStore
    from studio.ui.main_window import QtMainWindow

    folder = Path(os.environ.get("FINETUNE_STUDIO_SCREENSHOTS", tmp_path))
    data_dir = Path(tempfile.mkdtemp(prefix="data-"))  # a short path reads better in the picture
    main = QtMainWindow(store=RunStore(tmp_path / "runs"), telemetry=HostTelemetry(), offer_demo=False)
    qtbot.addWidget(main)
    main.resize(1180, 780)
    main.show()
    tab = main.dataset_tab
    main.tabs.setCurrentWidget(tab)
    rows = [{"messages": c} for c in CONVERSATIONS] + [json.loads(line) for line in
                                                       demo_assets.dataset_path.read_text("utf-8").splitlines()]
    chat = _write_jsonl(data_dir / "support-chats.jsonl", rows)
    config = load_config(demo_assets.config_path)
    config.data.train_file = str(chat)
    config.training.max_length = 128
    with qtbot.waitSignal(tab.stats_ready, timeout=LOAD_TIMEOUT_MS):
        main.set_config(config)
    tab.select_row(0)
    tab.bottom_tabs.setCurrentIndex(0)
    qtbot.wait(200)
    first = main.grab()
    assert not first.isNull() and first.width() >= 1100
    first.save(str(folder / "dataset-tab.png"))

    good = [{"messages": c} for c in CONVERSATIONS] + rows[3:6]
    bad = _write_jsonl(data_dir / "support-chats-v2.jsonl", [
        good[0], '{"messages": [{"role": "user", "content": "Hi"}', good[1],
        {"messages": [{"role": "customer", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]},
        {"messages": []}, good[2],
        {"messages": [{"role": "user", "content": "Where is my bill?"}]},
        {"messages": [{"role": "user", "content": 42}, {"role": "assistant", "content": "x"}]},
        good[3], {"messages": [{"role": "user", "content": "   "}, {"role": "assistant", "content": "Hello"}]},
        "[\"not\", \"an\", \"object\"]", good[4], good[5], good[1]])
    with qtbot.waitSignal(tab.loaded, timeout=LOAD_TIMEOUT_MS):
        tab.open_path(bad)
    qtbot.wait(200)
    second = main.grab()
    assert not second.isNull()
    second.save(str(folder / "dataset-errors.png"))
    main.close()
    shutil.rmtree(data_dir, ignore_errors=True)


def test_a_long_row_shows_its_first_tokens_until_asked_for_all(qtbot, demo_assets):
    from PySide6.QtCore import QUrl

    from studio.core.train.prepare import load_tokenizer
    from studio.core.data.preview import preview_example
    from studio.ui.widgets.qt_token_view import MAX_SHOWN_TOKENS, QtTokenView

    tokenizer = load_tokenizer(str(demo_assets.model_dir))
    long_row = {"messages": [{"role": "user", "content": "Tell me everything. " * 300},
                             {"role": "assistant", "content": "Here it is. " * 300}]}
    preview = preview_example(tokenizer, long_row)
    view = QtTokenView()
    qtbot.addWidget(view)
    view.show_preview(preview)
    assert view.shown_tokens == MAX_SHOWN_TOKENS < preview.total_tokens
    assert f"{preview.total_tokens - MAX_SHOWN_TOKENS:,} more tokens not shown" in view.toPlainText()
    view.anchorClicked.emit(QUrl("#all"))
    assert view.shown_tokens == preview.total_tokens
    hovered = []
    view.token_hovered.connect(hovered.append)
    view.highlighted.emit(QUrl("#0"))
    assert hovered == [f"token 1 of {preview.total_tokens} · id {tokenizer.bos_token_id} · '<|begin_of_text|>' · masked"]


def test_a_plain_text_file_opens_from_the_dialog_and_its_documents_can_be_whole_files(qtbot, tab, config, tmp_path,
                                                                                      monkeypatch):
    from PySide6.QtWidgets import QFileDialog

    corpus = tmp_path / "corpus.md"
    corpus.write_text("# Nimbus\n\nFiber 500 costs 450 TL a month.\n\nSupport is open from 08:00 to 22:00.\n",
                      encoding="utf-8")
    offered = []

    def choose(parent, caption, folder, filters):
        offered.append(filters)
        return str(corpus), filters

    monkeypatch.setattr(QFileDialog, "getOpenFileName", choose)
    tab.set_config(config)
    tab.open_button.click()
    qtbot.waitUntil(lambda: tab.data is not None and tab.data.complete, timeout=LOAD_TIMEOUT_MS)
    assert "*.txt" in offered[0] and "*.md" in offered[0]
    assert tab.rows_model.rowCount() == 3 and tab.data.lines == [1, 3, 5]
    assert "plain text" in tab.summary_label.text()
    assert tab.text_split_combo.isVisible() and tab.text_split_combo.currentData() == "blank_lines"

    changed = []
    tab.settings_changed.connect(lambda: changed.append(1))
    tab.text_split_combo.setCurrentIndex(tab.text_split_combo.findData("file"))
    qtbot.waitUntil(lambda: tab.data is not None and tab.data.complete and tab.rows_model.rowCount() == 1,
                    timeout=LOAD_TIMEOUT_MS)
    assert tab.settings.text_split == "file" and changed
    applied = RunConfig()
    tab.apply_to(applied)
    assert applied.data.text_split == "file"

    _open(qtbot, tab, config, _write_jsonl(tmp_path / "chat.jsonl", [{"messages": CONVERSATIONS[1]}]))
    assert not tab.text_split_combo.isVisible()  # only plain text has documents to cut


def test_the_token_preview_wraps_between_tokens_never_inside_one(qtbot, demo_assets):
    from studio.core.train.prepare import load_tokenizer
    from studio.core.data.preview import preview_example
    from studio.ui.widgets.qt_token_view import QtTokenView

    token_break = "\u200b"  # a zero-width space: where a line may wrap

    tokenizer = load_tokenizer(str(demo_assets.model_dir))
    row = {"messages": [{"role": "user", "content": "Where is my order #1234-5678/B? It's late."},
                        {"role": "assistant", "content": "Sorry! Order #1234-5678/B ships on 2024-05-01."}] * 4}
    preview = preview_example(tokenizer, row)
    view = QtTokenView()
    qtbot.addWidget(view)
    view.resize(230, 900)  # a narrow pane: dozens of wrapped lines
    view.show()
    view.show_preview(preview)
    document = view.document()
    document.setTextWidth(view.viewport().width())
    wrapped_inside, lines = [], 0
    block = document.begin()
    while block.isValid():
        layout, text = block.layout(), block.text()
        for number in range(1, layout.lineCount()):
            start = layout.lineAt(number).textStart()
            lines += 1
            if text[start - 1] not in (token_break, "\u2028"):  # after a token or a shown line break
                wrapped_inside.append(text[max(0, start - 8):start] + "⏎" + text[start:start + 8])
        block = block.next()
    assert lines > 10, "the view must be narrow enough to wrap"
    assert wrapped_inside == []
    assert "<|eot_id|>" in view.plain_text()
    view.selectAll()
    copied = view.createMimeDataFromSelection().text()
    assert "<|eot_id|>" in copied and token_break not in copied
