"""The Evaluate tab with real demo runs: an eval of two runs and the base fills the chart and the table, the
regression filter shows the rows the results say, Cancel stops at once and Start resumes, Open in Chat."""

from __future__ import annotations

import shutil

import pytest

from studio.core.config.settings import load_config, save_config
from studio.core.eval.results import read_results
from studio.core.runs.store import RunStore
from studio.ui.tabs.evaluate_tab import HTML_ROLE


EVAL_TIMEOUT_MS = 240_000
# "The reply does not open like one of the demo's answers": the rambling base passes, a run that learned fails.
NOT_AN_ANSWER = r"^(?!Nimbus|Unplug|Let me|Yes|Evenings|You can|Sorry|Students|Hold|A technician)"


@pytest.fixture(scope="module")
def store(trained_run, demo_assets, run_studio, tmp_path_factory) -> RunStore:
    """A run store with the session's demo run (copied: evals write into the run) and a short second run."""
    root = tmp_path_factory.mktemp("eval-runs")
    shutil.copytree(trained_run, root / "full", ignore=shutil.ignore_patterns("checkpoints", "evals"))
    config = load_config(demo_assets.config_path)
    config.training.max_steps = 12  # learns a little: some answers right, most not
    config_path = root.parent / "short.toml"
    save_config(config, config_path)
    result = run_studio("train", config_path, "--output", root / "short")
    assert result.returncode == 0, result.stderr[-3000:]
    return RunStore(root)


@pytest.fixture
def tab(qtbot, store):
    from studio.ui.tabs.evaluate_tab import QtEvaluateTab

    widget = QtEvaluateTab(store)
    qtbot.addWidget(widget)
    widget.resize(1280, 860)
    widget.show()
    yield widget
    widget.shutdown()


def _choose(tab, store, runs, demo_assets, *, metrics, pattern="", max_new_tokens=40, base=True):
    tab.choose_runs([store.root / name for name in runs])
    tab.set_eval_file(demo_assets.dataset_path)
    for name, check in tab.metric_checks.items():
        check.setChecked(name in metrics)
    tab.pattern_edit.setText(pattern)
    tab.max_tokens.setValue(max_new_tokens)
    tab.base_check.setChecked(base)


def test_an_eval_of_two_runs_and_the_base_fills_chart_and_table_and_the_filters(qtbot, tab, store, demo_assets):
    assert sorted(tab.runs_list.item(i).text() for i in range(tab.runs_list.count())) == ["full", "short"]
    _choose(tab, store, ["full", "short"], demo_assets, metrics={"exact", "regex"}, pattern=NOT_AN_ANSWER)
    with qtbot.waitSignal(tab.eval_finished, timeout=EVAL_TIMEOUT_MS) as finished:
        assert tab.start() is not None
    assert finished.args == ["completed"], tab.status.text()
    assert tab.session.columns == ["base", "full", "short"]

    records = read_results(store.root / "full" / "evals" / "dataset" / "results.jsonl")
    assert len(records) == 30
    verdict = {(r["model"], r["case"], name): s["passed"] for r in records for name, s in r["scores"].items()}
    expected_labels = [f"{sum(verdict[(model, str(case), metric)] for case in range(1, 11))}/10"
                       for model in ("base", "full", "short") for metric in ("exact", "regex")]
    assert tab.bar_texts() == expected_labels, "one bar per model per metric, labelled with its count"
    assert len(tab.bars) == 3 and expected_labels[0] == "0/10" and int(expected_labels[2].split("/")[0]) >= 8

    headers = [tab.table.horizontalHeaderItem(c).text() for c in range(tab.table.columnCount())]
    assert headers == ["#", "Prompt", "Expected", "base", "full", "short"] and tab.table.rowCount() == 10
    assert tab.table.item(0, 1).text() == "What are your support hours?"
    verdicts = tab.table.item(0, 4).data(HTML_ROLE)
    assert ("✓ Exact" if verdict[("full", "1", "exact")] else "✗ Exact") in verdicts

    tab.judge_box.setCurrentIndex(tab.judge_box.findData("regex"))
    tab.filter_box.setCurrentIndex(tab.filter_box.findData("regressions"))
    regressions = [str(case) for case in range(1, 11) if verdict[("base", str(case), "regex")]
                   and not (verdict[("full", str(case), "regex")] and verdict[("short", str(case), "regex")])]
    assert regressions, "the full run answers like the demo: the base's 'not an answer' pass is lost"
    assert [tab.table.item(r, 0).text() for r in range(tab.table.rowCount())] == regressions
    assert tab.rows_label.text() == f"{len(regressions)} of 10 examples"

    tab.judge_box.setCurrentIndex(tab.judge_box.findData("exact"))
    tab.filter_box.setCurrentIndex(tab.filter_box.findData("tuned wrong"))
    tuned_wrong = [str(case) for case in range(1, 11)
                   if not (verdict[("full", str(case), "exact")] and verdict[("short", str(case), "exact")])]
    assert [tab.table.item(r, 0).text() for r in range(tab.table.rowCount())] == tuned_wrong
    tab.filter_box.setCurrentIndex(tab.filter_box.findData("regressions"))
    assert tab.table.rowCount() == 0, "the base never answers exactly: nothing to regress from"

    # A row opens in Chat: the run's adapter (or, for the base column, the base model) and the prompt.
    tab.filter_box.setCurrentIndex(tab.filter_box.findData("all"))
    with qtbot.waitSignal(tab.open_in_chat) as opened:
        tab.open_row_in_chat(2, "short")
    question = [{"role": "user", "content": "Is there an outage in İzmir right now?"}]
    assert opened.args == [store.root / "short", question]
    with qtbot.waitSignal(tab.open_in_chat) as opened:
        tab.open_row_in_chat(0, "base")
    assert opened.args[0] == tab.session.base_model() and isinstance(opened.args[0], str)


def test_a_wrong_reply_is_marked_in_its_cell(qtbot, tab, store, demo_assets):
    from studio.core.sessions.evaluate import segments

    _choose(tab, store, ["short"], demo_assets, metrics={"exact"}, base=False)
    with qtbot.waitSignal(tab.eval_finished, timeout=EVAL_TIMEOUT_MS):
        tab.start()
    tab.filter_box.setCurrentIndex(tab.filter_box.findData("tuned wrong"))
    assert tab.table.rowCount() > 0, "twelve steps do not learn all ten answers"
    row = tab.shown_rows[0]
    record = row.records["short"]
    marked = [text for text, span in segments(record["reply"], tab.session.highlight(record).reply) if span]
    cell = tab.table.item(0, 3).data(HTML_ROLE)
    assert marked and all(f">{piece}</span>" in cell for piece in marked[:3] if "<" not in piece and "&" not in piece)
    assert "✗ Exact" in cell


def test_cancel_stops_within_a_second_and_start_resumes(qtbot, tab, store, demo_assets):
    _choose(tab, store, ["full"], demo_assets, metrics={"exact"}, max_new_tokens=400)
    earlier = store.root / "full" / "evals" / "dataset"
    earlier_results = (earlier / "results.jsonl").read_bytes()  # the first test's eval: other settings
    folder = store.root / "full" / "evals" / "dataset-2"  # so this one goes beside it, never into it
    tab.start()
    # The base column goes first and rambles to max tokens: cancel once its first batch is scored.
    qtbot.waitUntil(lambda: len(tab.session.records) >= 1, timeout=EVAL_TIMEOUT_MS)
    assert tab.is_running and tab.cancel_button.isEnabled()
    tab.cancel_button.click()
    qtbot.waitUntil(lambda: not tab.is_running, timeout=1000)
    qtbot.waitUntil(lambda: "Cancelled" in tab.status.text(), timeout=1000)
    assert tab.start_button.isEnabled() and not tab.cancel_button.isEnabled()
    on_disk = len(read_results(folder / "results.jsonl"))
    assert 1 <= on_disk < 20

    with qtbot.waitSignal(tab.eval_finished, timeout=EVAL_TIMEOUT_MS) as finished:
        tab.start()
    assert finished.args == ["completed"]
    assert tab.session.outcome.resumed == on_disk and tab.session.outcome.generated == 20 - on_disk
    assert len(tab.session.records) == 20 and f"{on_disk} kept from the last run" in tab.status.text()
    assert tab.bar_texts()[0] == "0/10" and tab.progress.value() == 20
    assert tab.session.outcome.folder == folder and "a new folder: dataset holds an eval with other settings" in (
        tab.status.text())
    assert (earlier / "results.jsonl").read_bytes() == earlier_results


def test_the_window_has_the_evaluate_tab_between_runs_and_chat_and_opens_a_row_in_chat(qtbot, store, tmp_path):
    from studio.ui.main_window import QtMainWindow

    window = QtMainWindow(store=store, offer_demo=False)
    qtbot.addWidget(window)
    titles = [window.tabs.tabText(i) for i in range(window.tabs.count())]
    assert titles == ["Dataset", "Config", "Training", "Runs", "Evaluate", "Chat"]
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Hours?"}]
    window.evaluate_tab.open_in_chat.emit(store.root / "short", messages)
    chat = window.chat_tab
    assert window.tabs.currentWidget() is chat
    assert chat.adapter_edit.text() == str(store.root / "short" / "adapter")
    assert chat.system_prompt.toPlainText() == "Be brief." and chat.history == messages[1:3]
    assert chat.prompt_edit.text() == "Hours?"
    window.close()
