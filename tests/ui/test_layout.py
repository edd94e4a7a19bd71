"""The window fits a 1366×768 laptop (issue 22, item 5), in every method, with the 8 GB preset.

A laptop's 768 pixels lose a title bar and a task bar, so the window is shown at 1366×690 and no tab or dialog may
need more height than that (`minimumSizeHint`, the window's menu, tab and status bars included). At that size no
two visible widgets side by side in one layout overlap, and no label shows less than its text: a wrapped label is as
tall as its lines at its width, a one-line label as wide and as tall as its text. (superqt's QElidingLabel shortens
its text with "…" on purpose and shows it whole on hover; it is the one label allowed to be shorter.)

Each failure names the tab or dialog, the method and the widget (its class, object name or text, and the group box
it sits in).
"""

from __future__ import annotations

import html
import itertools
import re
from pathlib import Path

import pytest
from PySide6.QtCore import QCoreApplication, QRect, QSettings, QSize, QTimer
from PySide6.QtTest import QTest
from PySide6.QtWidgets import (
    QAbstractButton, QApplication, QGroupBox, QLabel, QLayout, QMenu, QWidget,
)
from superqt import QElidingLabel

from studio.core.runs.store import RunStore
from studio.core.system.gpu import HostTelemetry

SCREEN = QSize(1366, 690)
"""1366×768 less a title bar and a task bar."""
METHODS = ("sft", "dpo", "orpo", "kto", "grpo")
PRESET = "8gb"
TABS = ("Dataset", "Config", "Training", "Runs", "Evaluate", "Chat")
STEPS = 12
STARTED = 1_764_950_000.0  # 5 December 2025, as a run's events give it

# The live metrics each method's trainer logs (TRL's keys, as in tests/slow/test_preference_e2e.py): the Training tab
# shows a plot for each, so a method's run is drawn with its own plots.
METHOD_METRICS = {
    "sft": (),
    "dpo": ("rewards/margins", "rewards/accuracies", "logps/chosen", "logps/rejected"),
    "orpo": ("rewards/margins", "rewards/accuracies", "logps/chosen", "logps/rejected"),
    "kto": ("rewards/chosen", "rewards/rejected", "logps/chosen", "kl"),
    "grpo": ("reward", "reward_std", "rewards/contains/mean", "rewards/regex/mean", "completions/mean_length", "kl"),
}


# ----------------------------------------------------------------------------------------------- the rules


def _describe(widget: QWidget) -> str:
    """A widget as a reader finds it: its class, its name or text, and the group boxes around it."""
    text = ""
    if isinstance(widget, (QLabel, QAbstractButton)):
        text = re.sub(r"<[^>]+>", "", html.unescape(widget.text())).strip()
    elif isinstance(widget, QGroupBox):
        text = widget.title()
    name = type(widget).__name__ + (f"#{widget.objectName()}" if widget.objectName() else "")
    if text:
        name += f" {' '.join(text.split())[:60]!r}"
    boxes = []
    parent = widget.parentWidget()
    while parent is not None:
        if isinstance(parent, QGroupBox) and parent.title():
            boxes.append(parent.title())
        parent = parent.parentWidget()
    return name + (f" in {' > '.join(reversed(boxes))}" if boxes else "")


def _rect(r: QRect) -> str:
    return f"{r.width()}×{r.height()} at ({r.x()}, {r.y()})"


def _laid_out(layout: QLayout) -> list[QWidget]:
    """The widgets a layout places, those of its nested layouts included (they share the parent widget)."""
    widgets = []
    for index in range(layout.count()):
        item = layout.itemAt(index)
        if item.widget() is not None:
            widgets.append(item.widget())
        elif item.layout() is not None:
            widgets.extend(_laid_out(item.layout()))
    return widgets


def _on_screen(widget: QWidget) -> bool:
    """Shown, in a parent that is itself on screen: not in a collapsed section or a page scrolled away.

    (The widget's own height may be 0: that is a squashed widget, which the rules must see.)"""
    parent = widget.parentWidget()
    return widget.isVisible() and (parent is None or not parent.visibleRegion().isEmpty())


def overlaps(root: QWidget) -> list[str]:
    """Visible widgets placed by one layout whose rectangles intersect."""
    found = []
    for parent in [root, *root.findChildren(QWidget)]:
        if not _on_screen(parent) or parent.layout() is None:
            continue
        shown = [w for w in _laid_out(parent.layout()) if w.isVisible() and not w.geometry().isEmpty()]
        for a, b in itertools.combinations(shown, 2):
            if a.geometry().intersects(b.geometry()):
                found.append(f"{_describe(a)} ({_rect(a.geometry())}) overlaps {_describe(b)} "
                             f"({_rect(b.geometry())})")
    return found


def cut_labels(root: QWidget) -> list[str]:
    """Visible labels given less room than their text needs."""
    found = []
    labels = [root] if isinstance(root, QLabel) else []
    for label in labels + root.findChildren(QLabel):
        if not _on_screen(label) or not label.text() or isinstance(label, QElidingLabel):
            continue
        size = label.size()
        if label.wordWrap():
            needed = QSize(0, label.heightForWidth(size.width()))
        else:
            needed = label.sizeHint()
        if needed.width() > size.width() or needed.height() > size.height():
            found.append(f"{_describe(label)} needs {needed.width()}×{needed.height()}, has "
                         f"{size.width()}×{size.height()}")
    return found


def layout_problems(root: QWidget, chrome_height: int = 0) -> list[str]:
    """Everything this test refuses in `root` as shown: too tall for the screen, overlaps and cut labels.

    `chrome_height` is what the window adds around a tab (menu, tab and status bars)."""
    problems = []
    needed = root.minimumSizeHint().height() + chrome_height
    if needed > SCREEN.height():
        problems.append(f"needs {needed} px of height, more than the {SCREEN.height()} px a 1366×768 screen leaves")
    return problems + overlaps(root) + cut_labels(root)


def _settle(ms: int = 250) -> None:
    """Let the layouts, the deferred resizes and the debounced updates (the estimate, the saved settings) run."""
    QTest.qWait(ms)
    # A text set during the wait (a background task's result) has posted its layout request, not yet run: run it, and
    # those of the layouts around it, so the check sees what the next frame shows.
    for _ in range(3):
        QCoreApplication.sendPostedEvents()
        QApplication.processEvents()


# ---------------------------------------------------------------------------------------------- the window


@pytest.fixture(scope="module")
def private_settings(tmp_path_factory, qapp):
    """A private Qt settings store, so no saved geometry or preset of another test (or of the user) is restored."""
    QCoreApplication.setOrganizationName("finetune-studio-tests")
    QSettings.setPath(QSettings.Format.NativeFormat, QSettings.Scope.UserScope,
                      str(tmp_path_factory.mktemp("qt-settings")))
    QSettings().clear()
    yield
    QSettings().clear()


def _method_events(method: str) -> list[dict]:
    """A run of `method` as its events file tells it: started, then steps carrying the method's live metrics."""
    events = [{"event": "started", "time": STARTED, "total_steps": STEPS, "start_step": 0, "pid": None}]
    for step in range(1, STEPS + 1):
        metrics = {key: 0.1 * step for key in METHOD_METRICS[method]}
        event = {"event": "step", "time": STARTED + step, "step": step, "epoch": step / STEPS, "loss": 2.0 / step,
                 "learning_rate": 2e-4, "grad_norm": 1.0, "tokens_per_second": 500.0}
        if metrics:
            event["metrics"] = metrics
        events.append(event)
    return events


@pytest.fixture(scope="module")
def offline_hub(tmp_path_factory):
    """The 8 GB preset names a Hub model: this machine may have no network, and the window must not wait for it."""
    from huggingface_hub import constants

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(constants, "HF_HUB_OFFLINE", True)
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("HF_HUB_CACHE", str(tmp_path_factory.mktemp("hub")))
        yield


def _finished_run(store: RunStore, name: str, method: str) -> None:
    """A finished run of `method` in the runs folder, as its training wrote it: config, events and adapter files."""
    from studio.core.config.settings import RunConfig, save_config
    from studio.core.runs.events import EventWriter

    run = store.new_run(name)
    config = RunConfig(name=name)
    config.model.name_or_path = "meta-llama/Llama-3.2-3B-Instruct"
    config.data.train_file = "/data/turkish-call-centre.jsonl"
    config.training.method = method
    save_config(config, run.config_path)
    with EventWriter(run.events_path) as writer:
        for event in _method_events(method):
            writer.write(event)
        writer.write({"event": "finished", "time": STARTED + STEPS + 1, "status": "completed", "step": STEPS,
                      "final_loss": 2.0 / STEPS})
    run.adapter_dir.mkdir()
    (run.adapter_dir / "adapter_config.json").write_text("{}", encoding="utf-8")
    (run.adapter_dir / "adapter_model.safetensors").write_bytes(b"\0" * 4096)


@pytest.fixture(scope="module", params=METHODS)
def window(request, private_settings, offline_hub, tmp_path_factory):
    """The real window at 1366×690 with the 8 GB preset, two finished runs of the method in the runs folder and a run of
    the method drawn on the Training tab."""
    from studio.ui.main_window import QtMainWindow, last_config_path

    method = request.param
    last_config_path().unlink(missing_ok=True)
    store = RunStore(tmp_path_factory.mktemp("runs"))
    for name in (f"turkish-call-centre-{method}", f"turkish-call-centre-{method}-with-a-longer-name-2"):
        _finished_run(store, name, method)
    win = QtMainWindow(store=store, telemetry=HostTelemetry(), offer_demo=False)
    win.chat_tab.gpu_info = lambda: None  # the CPU path, whatever machine runs the tests
    win.config_tab.apply_preset(PRESET)
    win.draft.update("training", method=method)
    for event in _method_events(method):
        win.training_tab.handle_event(event)
    # Held at the screen's size: a tab that needs more is squeezed as the screen would cut it, so each tab is checked
    # at 1366×690 whatever another tab needs (the height rule reports that one).
    win.setFixedSize(SCREEN)
    win.show()
    _settle()
    win.method = method
    yield win
    win.close()
    win.training_tab.shutdown()
    win.chat_tab.shutdown()
    win.config_tab.shutdown()
    win.deleteLater()
    last_config_path().unlink(missing_ok=True)


def _show_tab(win, title: str) -> QWidget:
    index = [win.tabs.tabText(i) for i in range(win.tabs.count())].index(title)
    win.tabs.setCurrentIndex(index)
    _settle()
    return win.tabs.widget(index)


@pytest.mark.parametrize("tab", TABS)
def test_every_tab_fits_1366x768_in_every_method(window, tab):
    page = _show_tab(window, tab)
    chrome = window.height() - page.height()
    problems = layout_problems(page, chrome)
    assert not problems, f"{tab} tab, method {window.method}, 8 GB preset:\n  " + "\n  ".join(problems)


def test_the_config_tab_fits_with_its_advanced_section_open(window):
    page = _show_tab(window, "Config")
    window.config_tab.advanced.expand(animate=False)
    try:
        _settle()
        problems = layout_problems(page, window.height() - page.height())
    finally:
        window.config_tab.advanced.collapse(animate=False)
    assert not problems, (f"Config tab, Advanced open, method {window.method}, 8 GB preset:\n  "
                          + "\n  ".join(problems))


# ------------------------------------------------------------------------------------------------ the dialogs


def _check_modal(open_it) -> tuple[str, list[str]]:
    """Open a modal dialog as the window does (`open_it` blocks while it is up), check it while it is shown, and close
    it as Cancel would; returns its title and what the rules refuse in it."""
    seen: dict[str, object] = {}

    def check(tries: int = 100) -> None:
        dialog = QApplication.activeModalWidget()
        if dialog is None or not dialog.isVisible():
            if tries:
                QTimer.singleShot(50, lambda: check(tries - 1))
            return
        QApplication.processEvents()
        seen["title"], seen["problems"] = dialog.windowTitle(), layout_problems(dialog)
        dialog.done(0)

    QTimer.singleShot(50, check)
    open_it()
    assert "title" in seen, "no dialog opened"
    return str(seen["title"]), list(seen["problems"])


def _action(win, text: str):
    return next(a for menu in win.menuBar().findChildren(QMenu) for a in menu.actions() if a.text() == text)


MODAL_DIALOGS = {
    "About": lambda win: _action(win, "About Finetune Studio").trigger(),
    "Save as preset": lambda win: win.config_tab.save_preset_button.click(),
    "Rename run": lambda win: win.runs_view.ask_new_name("llama-3.2-3b-chat-data"),
    "Delete runs": lambda win: win.runs_view.ask_delete_choice([f"run-{n}" for n in range(12)]),
    "Training in progress": lambda win: win.training_tab.ask_close_choice(),
}


@pytest.mark.parametrize("name", MODAL_DIALOGS)
def test_every_dialog_the_window_opens_fits_1366x768(window, name):
    title, problems = _check_modal(lambda: MODAL_DIALOGS[name](window))
    assert not problems, f"{name} dialog ({title!r}), method {window.method}:\n  " + "\n  ".join(problems)


def _verification(export: Path, folder: Path):
    """A finished check of a GGUF export in which 3 of 10 replies differ (the longest result the dialog shows)."""
    from studio.core.eval.verify import CaseCheck, ExportVerification

    cases = [CaseCheck(case=f"train-{n}", question=f"What does the call-centre script say to customer {n} first?",
                       studio="Good morning, thank you for calling; how can I help you today?",
                       export="Good morning, thank you for calling; how can I help you today?" if n > 2 else
                       "Hello, thanks for calling. What can I do for you today, and may I have your number?")
             for n in range(10)]
    return ExportVerification(export=export, kind="gguf", engine="llama.cpp (llama-cpp-python 0.3)",
                              status="completed", folder=folder, cases_from="10 of the run's training examples",
                              cases=cases, readme=export.with_suffix(".md"))


def test_the_export_dialog_fits_1366x768_before_and_after_verify(window, tmp_path):
    from studio.core.export.jobs import ExportKind
    from studio.ui.tabs.export_dialog import QtExportDialog

    window.export_action.trigger()
    _settle()
    dialog = next(w for w in QApplication.topLevelWidgets() if isinstance(w, QtExportDialog) and w.isVisible())
    try:
        problems = layout_problems(dialog)
        assert not problems, f"Export dialog, method {window.method}:\n  " + "\n  ".join(problems)

        # An export written and verified: the dialog's own handlers of the two results, as its tasks call them.
        source, written = tmp_path / "runs" / "llama-3.2-3b-chat-data", tmp_path / "exports" / "chat-data-f16.gguf"
        dialog._offer_verify(ExportKind.GGUF_F16, source, written)
        dialog._finish("succeeded", f"Written to {written}\nOllama: ollama create my-model -f {written.parent}/Modelfile")
        _settle()
        dialog._on_verified(_verification(written, tmp_path / "exports"))
        _settle()
        assert dialog.verify_label.isVisible()
        problems = layout_problems(dialog)
        assert not problems, f"Export dialog after Verify, method {window.method}:\n  " + "\n  ".join(problems)
    finally:
        dialog.close()


# ------------------------------------------------------------------------------------------- the rules themselves


def test_the_rules_see_a_squeezed_wrapped_label_a_clipped_line_and_overlapping_widgets(qtbot):
    """The rules above fail where they must: a panel held below its layout's minimum, as a short screen holds it."""
    from PySide6.QtWidgets import QPushButton, QVBoxLayout

    panel = QWidget()
    qtbot.addWidget(panel)
    layout = QVBoxLayout(panel)
    wrapped = QLabel("A note long enough to wrap onto several lines at this width, " * 4)
    wrapped.setWordWrap(True)
    line = QLabel("One line that must be shown whole")
    # Widgets that hold their own minimum height (as plots do) overlap once the layout has less room than they need.
    upper, lower = QPushButton("Upper button"), QPushButton("Lower button")
    for widget in (wrapped, line, upper, lower):
        layout.addWidget(widget)
    for button in (upper, lower):
        button.setMinimumHeight(30)
    panel.setFixedSize(120, 40)
    panel.show()
    qtbot.waitExposed(panel)
    _settle(50)

    cut = cut_labels(panel)
    assert any("A note long enough" in problem for problem in cut), cut
    assert any("One line that must" in problem for problem in cut), cut
    assert any("'Upper button'" in p and "'Lower button'" in p for p in overlaps(panel)), overlaps(panel)
    assert "more than the 690 px" in layout_problems(panel, chrome_height=690)[0]

    panel.setFixedSize(900, 300)
    _settle(50)
    assert layout_problems(panel) == []
