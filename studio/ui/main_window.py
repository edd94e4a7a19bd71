"""The main window: Dataset, Config, Training, Runs, Evaluate and Chat tabs around one current RunConfig.

The config is a `RunDraft` (studio.core.sessions.draft) that the Dataset and Config tabs both edit and observe;
the window gives it a new config (an opened file, a run's settings, the demo) and hands it to a run. The runs are a
`RunsSession` (studio.core.sessions.runs): the window scans the runs folder through it, in the background, and the
Runs view, Evaluate and Chat observe it, so a run that starts, ends, is renamed or deleted shows in each of them
without a signal from one tab to another.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QFileSystemWatcher, QRect, QSettings, QSize, QUrl
from PySide6.QtGui import QAction, QCloseEvent, QDesktopServices, QGuiApplication, QKeySequence
from PySide6.QtWidgets import QFileDialog, QLabel, QMainWindow, QMessageBox, QTabWidget
from superqt.utils import qdebounced

from studio.core.config.settings import ConfigError, RunConfig, load_config, save_config
from studio.core.sessions.continuation import opened_settings_text
from studio.core.sessions.dataset import DatasetSession
from studio.core.sessions.draft import Change, RunDraft
from studio.core.sessions.launch import document, keep_settings, last_config_path, prepare_demo
from studio.core.sessions.run_name import RunNaming
from studio.core.sessions.runs import RunsChange, RunsSession
from studio.core.system.gpu import TelemetrySource
from studio.ui.background import BackgroundTask, TaskRunner, wait_for_all
from studio.ui.tabs.chat_tab import QtChatTab
from studio.ui.tabs.config_tab import QtConfigTab
from studio.ui.tabs.dataset_tab import QtDatasetTab
from studio.ui.tabs.evaluate_tab import QtEvaluateTab
from studio.ui.tabs.runs_view import QtRunsView
from studio.ui.tabs.system_check import QtSystemCheck
from studio.ui.tabs.training_tab import QtTrainingTab

__all__ = ["QtMainWindow", "last_config_path"]

PRESET_SETTING = "config/preset"  # the preset chosen on the Config tab, restored with the last config
SAVE_DEBOUNCE_MS = 500
RESCAN_DEBOUNCE_MS = 300
"""A burst of changes in the runs folder (another process creating a run, files moving) is one scan."""
DEFAULT_SIZE = QSize(1180, 780)
# Room left around a default-sized window for what the window manager adds (title bar, borders), which is
# not part of the size given to resize() and not known before the window is shown.
FRAME_ALLOWANCE = QSize(16, 48)
DEMO_SELECTED = "The offline demo is selected"


class QtMainWindow(QMainWindow):
    def __init__(self, *, store=None, telemetry: TelemetrySource | None = None, offer_demo: bool = True):
        """`store`: the RunStore whose runs the window shows (default: the user data folder's)."""
        super().__init__()
        self.setWindowTitle("Finetune Studio")
        self.resize(DEFAULT_SIZE)
        self.draft = RunDraft()
        self.runs = RunsSession(store)
        self.store = self.runs.store
        self._runs_tasks = TaskRunner(self)  # the scans of the runs folder, off the GUI thread
        self._rescan_after = False
        self.runs.set_scanner(self._scan_runs)
        self._demo_tasks = TaskRunner(self)
        self._demo_choice: tuple[str, str] | None = None  # the demo's model and data, while the banner offers it

        # Both tabs show the one draft (the documented defaults from the first paint).
        self.dataset_tab = QtDatasetTab(session=DatasetSession(self.draft))
        self.config_tab = QtConfigTab(draft=self.draft)
        self.config_tab.token_stats_source = lambda: self.dataset_tab.session.stats  # max_length for "Fit to this GPU"
        self.config_tab.rows_source = lambda: (None if self.dataset_tab.session.data is None
                                               else len(self.dataset_tab.session.data.examples))
        self.training_tab = QtTrainingTab(self.store, telemetry)
        self.run_naming = RunNaming(self.draft)  # the Name field: the user's name, or the data's and the model's
        self.training_tab.bind_naming(self.run_naming)
        self.runs_view = QtRunsView(self.runs)
        self.evaluate_tab = QtEvaluateTab(self.runs)
        self.chat_tab = QtChatTab(runs=self.runs)
        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        for widget, title in ((self.dataset_tab, "Dataset"), (self.config_tab, "Config"),
                              (self.training_tab, "Training"), (self.runs_view, "Runs"),
                              (self.evaluate_tab, "Evaluate"), (self.chat_tab, "Chat")):
            self.tabs.addTab(widget, title)
        self.setCentralWidget(self.tabs)
        self.banner = QLabel()
        self.statusBar().addWidget(self.banner, 1)

        self.draft.subscribe(self._on_draft_changed)
        self.dataset_tab.dataset_chosen.connect(self._on_dataset_chosen)
        self.dataset_tab.loaded.connect(lambda _: self.config_tab.refresh_evaluation())  # "5 of 47 rows held out"
        self.training_tab.start_button.clicked.connect(self.start_training)
        # The Training tab's run goes to the runs session, which every tab showing runs observes.
        self.training_tab.run_started.connect(self._on_run_started)
        self.training_tab.run_ended.connect(self._on_run_ended)
        self.training_tab.config_adjusted.connect(self._on_config_adjusted)
        self.runs.subscribe(self._on_runs_changed)
        self.runs_view.open_config_requested.connect(self._open_run_config)
        self.runs_view.resume_requested.connect(self._resume_run)
        self.evaluate_tab.open_in_chat.connect(self._open_in_chat)
        self.chat_tab.export_requested.connect(self.open_export_dialog)
        self._export_dialog = None
        # Issue 24, the doctor: its banner at the top, its checks off the GUI thread at a first launch or a new device.
        self.system_check = QtSystemCheck(self, config=lambda: self.config,
                                          runs=lambda: [row.path for row in self.runs.rows])
        # The Config tab's presets and fit plan for the card runs will train on: none under a CPU-only torch.
        self.system_check.session.subscribe(self._on_system_report)
        self._build_menus()

        # The one scan at launch: the folder is listed and each run's status, model and adapter read on this thread
        # (a run still training is re-attached, the newest adapter offered in Chat, before the window shows); the
        # rest of each row (curves, times, scores) is read in the background. Later scans run in the background;
        # another process creating or removing a run folder asks for one.
        self.runs.scan_quickly()
        self._read_runs_fully()
        self._rescan_soon = qdebounced(self.runs.request_refresh, timeout=RESCAN_DEBOUNCE_MS, parent=self)
        self._runs_folder_watch = QFileSystemWatcher(self)
        self._runs_folder_watch.directoryChanged.connect(lambda _path: self._rescan_soon())
        self._watch_runs_folder(scanned=True)

        geometry = QSettings().value("window/geometry")
        if geometry is None or not self.restoreGeometry(geometry):
            self.fit_to_screen()

        if last_config_path().is_file() and self._load_config_file(last_config_path(), quiet=True):
            self.banner.setText("Restored your last settings.")
            if (preset := QSettings().value(PRESET_SETTING)) is not None:
                self.config_tab.show_preset(str(preset))
            self._offer_latest_adapter()
        elif offer_demo:
            self.prepare_demo()
        # Every change of the settings is kept as it happens (not only on Start), with the preset it came from, so a
        # relaunch shows what the window showed when it closed.
        self._save_settings_soon = qdebounced(self._save_settings, timeout=SAVE_DEBOUNCE_MS, parent=self)
        self.draft.subscribe(lambda _change: self._save_settings_soon())
        self.config_tab.preset_chosen.connect(lambda key: QSettings().setValue(PRESET_SETTING, key))
        self._reattach_running_run()

    def fit_to_screen(self, available: QRect | None = None) -> None:
        """The default size, shrunk to what the screen leaves free (panels, docks, the title bar), centred.

        On a 1366x768 laptop the default 780-pixel height would put the status bar below the screen.
        `available` is the screen's free area; by default that of the screen the window is on.
        """
        if available is None:
            screen = self.screen() or QGuiApplication.primaryScreen()
            if screen is None:
                return
            available = screen.availableGeometry()
        size = DEFAULT_SIZE.boundedTo(available.size() - FRAME_ALLOWANCE)
        self.resize(size.expandedTo(self.minimumSizeHint()))
        # A window's position is that of its frame: centre the frame, the allowance included.
        self.move(available.left() + max(0, (available.width() - self.width() - FRAME_ALLOWANCE.width()) // 2),
                  available.top() + max(0, (available.height() - self.height() - FRAME_ALLOWANCE.height()) // 2))

    # --- menus --------------------------------------------------------------------------------------
    def _on_system_report(self, report) -> None:
        self.config_tab.session.set_device(report.training_gpu)

    def _build_menus(self) -> None:
        file_menu = self.menuBar().addMenu("&File")
        for text, shortcut, slot in (
            ("Open dataset…", QKeySequence.StandardKey.Open, self._open_dataset_dialog),
            ("Open config…", None, self._open_config_dialog),
            ("Save config as…", QKeySequence.StandardKey.SaveAs, self._save_config_dialog),
            ("Use the offline demo", None, self.prepare_demo),
            ("Quit", QKeySequence.StandardKey.Quit, self.close),
        ):
            action = QAction(text, self)
            if shortcut is not None:
                action.setShortcut(shortcut)
            action.triggered.connect(slot)
            file_menu.addAction(action)
        export_menu = self.menuBar().addMenu("&Export")
        self.export_action = QAction("Export a trained model…", self)
        self.export_action.setShortcut("Ctrl+E")
        self.export_action.setToolTip("Adapter folder or zip, merged 16-bit model, GGUF + Ollama Modelfile")
        self.export_action.triggered.connect(lambda: self.open_export_dialog(self.chat_tab.export_source()))
        export_menu.addAction(self.export_action)
        help_menu = self.menuBar().addMenu("&Help")
        self.help_actions: dict[str, QAction] = {}
        for key, text, tip in (
            ("README.md", "Getting started (README)", "Setting up, the tabs one by one, export, the command line"),
            ("docs/CONFIG.md", "Settings reference (CONFIG.md)", "Every setting of a run's config, with its default"),
        ):
            action = QAction(text, self)
            action.setToolTip(tip)
            action.triggered.connect(lambda _=False, key=key: self._open_location(document(key)))
            help_menu.addAction(action)
            self.help_actions[key] = action
        self.open_runs_folder_action = QAction("Open the runs folder (each run's train.log)", self)
        self.open_runs_folder_action.setToolTip(f"{self.store.root}: one folder per run, with its log, "
                                                "events, checkpoints and adapter")
        self.open_runs_folder_action.triggered.connect(self._open_runs_folder)
        help_menu.addAction(self.open_runs_folder_action)
        self.system_check.add_actions(help_menu)  # Help → System check…, Help → Copy diagnostics (issue 24)
        help_menu.addSeparator()
        about = QAction("About Finetune Studio", self)
        about.triggered.connect(lambda: QMessageBox.about(self, "Finetune Studio", self.about_text()))
        help_menu.addAction(about)

    def about_text(self) -> str:
        from studio import __version__

        return (f"Finetune Studio {__version__}\nPoint-and-click LoRA/QLoRA fine-tuning on one GPU.\nTraining runs in "
                f"its own process; runs are kept in {self.store.root}.")

    def _open_location(self, location: Path | str) -> None:
        url = QUrl.fromLocalFile(str(location)) if isinstance(location, Path) else QUrl(location)
        if not QDesktopServices.openUrl(url):
            self.banner.setText(f"Could not open {location}: no application is set to open it.")

    def _open_runs_folder(self) -> None:
        self.store.root.mkdir(parents=True, exist_ok=True)  # before the first run it does not exist yet
        self._open_location(self.store.root)

    # --- the current config -----------------------------------------------------------------------
    @property
    def config(self) -> RunConfig:
        """The draft's config: what the tabs show and Start trains."""
        return self.draft.config

    def set_config(self, config: RunConfig) -> None:
        # The tabs follow the draft: the Dataset tab reads the data (in the background) if what is read changed.
        self.draft.set_config(config)
        self.chat_tab.set_model(config.model.name_or_path)

    def _offer_latest_adapter(self) -> None:
        """The Chat tab starts with the newest finished adapter trained on the current base model."""
        base = self.config.model.name_or_path
        if (adapter := self.runs.latest_adapter_for(base)) is not None:
            self.chat_tab.set_model(base, adapter)

    def _clear_demo_banner_unless(self, model: str, train_file: str) -> None:
        # "The offline demo is selected… press Start" stops being true once the user picks other data or model.
        if self.banner.text().startswith(DEMO_SELECTED) and (model, train_file) != self._demo_choice:
            self.banner.clear()

    def _on_draft_changed(self, change: Change) -> None:
        if change.touches("model", "name_or_path") or change.touches("data", "train_file"):
            self._clear_demo_banner_unless(self.config.model.name_or_path, self.config.data.train_file)

    def _on_dataset_chosen(self, path: Path) -> None:
        self._clear_demo_banner_unless(self.config.model.name_or_path, str(path))

    def _load_config_file(self, path: Path, *, quiet: bool = False) -> bool:
        try:
            config = load_config(path)
        except ConfigError as error:
            if not quiet:
                QMessageBox.warning(self, "Cannot open config", str(error))
            return False
        self.set_config(config)
        return True

    def _open_dataset_dialog(self) -> None:
        self.tabs.setCurrentWidget(self.dataset_tab)  # where the file will show
        self.dataset_tab._browse()

    def _open_config_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open config", "", "Run configs (*.toml)")
        if path:
            self._load_config_file(Path(path))

    def _save_config_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save config", "run.toml", "Run configs (*.toml)")
        if path:
            save_config(self.config, Path(path))

    # --- first launch: the offline demo --------------------------------------------------------------
    def prepare_demo(self) -> BackgroundTask:
        """Build the demo (seconds, once) in the background and select it, so Start works at once."""
        self.banner.setText("Preparing the offline demo model and dataset…")
        return self._demo_tasks.start(
            lambda state: prepare_demo(state.progress), on_progress=lambda message: self.banner.setText(f"Preparing the offline demo: {message}"),
            on_result=self._on_demo_ready,
            on_error=lambda error: self.banner.setText(
                f"The demo could not be built: {type(error).__name__}: {error}"),
            name="build the demo")

    def _on_demo_ready(self, assets) -> None:
        if self._load_config_file(assets.config_path):
            self._demo_choice = (self.config.model.name_or_path, self.config.data.train_file)
            self.banner.setText(f"{DEMO_SELECTED}: a tiny model and 10 support-desk conversations. "
                                "Press Start training on the Training tab.")
            self.tabs.setCurrentWidget(self.training_tab)

    # --- training ------------------------------------------------------------------------------------------
    def _save_settings(self) -> None:
        """Keep the current settings where the next launch restores them from."""
        try:
            keep_settings(self.config)
        except OSError as error:
            self.banner.setText(f"Could not keep your settings for the next launch: {error}")

    def start_training(self):
        """Start the draft's run on the Training tab; its RunDirectory, or None when it did not start."""
        run_dir = self.training_tab.start(self.config)
        if run_dir is not None:
            self._save_settings()
        return run_dir

    def _on_run_started(self, run_dir) -> None:
        # "Press Start training" and an earlier run's "Run X: stopped." are stale once a run is under way.
        self.banner.clear()
        self.runs.run_started(run_dir.path)
        self._watch_runs_folder()  # the first run made the folder

    def _on_run_ended(self, run_dir, status: str, message: str) -> None:
        self.banner.setText(f"Run {run_dir.name}: {status}.")
        self.runs.run_ended(run_dir.path)  # Runs, Evaluate and Chat follow the session

    def _on_runs_changed(self, change: RunsChange) -> None:
        """The Training tab has no session of its own yet: the window tells it of runs renamed or deleted."""
        if change.removed:
            self.training_tab.forget_runs(list(change.removed))
        for old, new in change.renamed:
            self.training_tab.follow_rename(old, new)

    # --- the runs folder ---------------------------------------------------------------------------------
    def _scan_runs(self) -> None:
        """The runs session's scan, on a background thread; one at a time, and one more after it when asked
        meanwhile (the running one may have missed the latest change)."""
        if self._runs_tasks.busy:
            self._rescan_after = True
            return
        since = self.runs.generation
        self._runs_tasks.start(lambda state: self.runs.scan(),
                               on_result=lambda rows: self._apply_scan(rows, since),
                               on_error=lambda error: self.banner.setText(f"Cannot read the runs folder: {error}"),
                               on_done=self._after_scan, name="scan the runs folder")

    def _read_runs_fully(self) -> None:
        """Complete the launch scan's quick rows on a background thread (no second listing of the folder)."""
        rows, since = list(self.runs.rows), self.runs.generation
        self._runs_tasks.start(lambda state: self.runs.read_fully(rows),
                               on_result=lambda full: self._apply_scan(full, since),
                               on_error=lambda error: self.banner.setText(f"Cannot read the runs folder: {error}"),
                               on_done=self._after_scan, name="read the runs")

    def _apply_scan(self, rows, since: int) -> None:
        if self.runs.apply(rows, since=since) is None:
            self._rescan_after = True  # a run was renamed or deleted here while the scan ran: scan again

    def _after_scan(self) -> None:
        self._watch_runs_folder(scanned=True)
        if self._rescan_after:
            self._rescan_after = False
            self._scan_runs()

    def _watch_runs_folder(self, *, scanned: bool = False) -> None:
        """Watch the runs folder for runs made, renamed or removed by another process; before the folder exists,
        its parent, for the folder's making (a run copied in, the first run of `finetune-studio train`)."""
        root, watched = self.runs.root, set(self._runs_folder_watch.directories())
        if root.is_dir():
            if str(root.parent) in watched:
                self._runs_folder_watch.removePath(str(root.parent))  # a change it saw but did not tell yet is lost
            if str(root) not in watched:
                self._runs_folder_watch.addPath(str(root))
                if not scanned:
                    self._rescan_soon()  # the folder appeared since the last scan: what is in it was never read
        elif root.parent.is_dir() and str(root.parent) not in watched:
            self._runs_folder_watch.addPath(str(root.parent))

    def open_export_dialog(self, source: Path | None = None):
        """The Export dialog for a run or adapter folder (Chat's Export model…, the Export menu)."""
        from studio.ui.tabs.export_dialog import QtExportDialog

        if self._export_dialog is not None:
            self._export_dialog.shutdown()
        self._export_dialog = QtExportDialog(source, runs=[row.path for row in self.runs.finished_runs()],
                                             parent=self)
        self._export_dialog.show()
        return self._export_dialog

    def _open_in_chat(self, model, messages) -> None:
        """An eval case in the Chat tab, to ask again (the Evaluate tab's "Open in Chat")."""
        self.chat_tab.open_prompt(model, messages)
        self.tabs.setCurrentWidget(self.chat_tab)

    def _reattach_running_run(self) -> None:
        """A run kept training after a window closed shows up again, live, with its whole curve so far."""
        for run_dir in self.runs.running_runs():
            if self.training_tab.reattach(run_dir):
                self.tabs.setCurrentWidget(self.training_tab)
                self.banner.setText(f"Run {run_dir.name} is still training: showing it live again.")
                return

    def _on_config_adjusted(self, config: RunConfig) -> None:
        config.name = self.config.name  # the retry changed a setting, not the user's run name
        self.set_config(config)

    def _open_run_config(self, config: RunConfig) -> None:
        self.set_config(config)
        self.tabs.setCurrentWidget(self.config_tab)
        self.banner.setText(opened_settings_text(config))

    def _resume_run(self, run_dir) -> None:
        if self.training_tab.resume(run_dir):
            self.tabs.setCurrentWidget(self.training_tab)
        elif self.training_tab.is_running:
            self.banner.setText(f"Cannot resume {run_dir.name} while another run is training.")
        elif (busy := run_dir.busy_message()) is not None:
            self.banner.setText(f"Cannot resume {run_dir.name}: {busy}")

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt API
        if not self.training_tab.confirm_close():
            event.ignore()
            return
        self.dataset_tab.shutdown()
        QSettings().setValue("window/geometry", self.saveGeometry())
        self._save_settings_soon.flush(restart_timer=False)  # an edit made less than the debounce before quitting
        self._demo_tasks.shutdown()
        self.training_tab.shutdown()
        self.evaluate_tab.shutdown()
        self.chat_tab.shutdown()
        self.config_tab.shutdown()
        self._runs_tasks.shutdown()
        if self._export_dialog is not None:
            self._export_dialog.shutdown()
        wait_for_all()  # whatever else still runs (a layer-name read): no thread may outlive the window
        event.accept()
