"""Window start to first paint: the studio's main window against a bare Qt window, in one run.

Each launch is a new process. The harness reads time.time() just before Popen and hands it to the
child in an environment variable; the child starts the window and, when the window's first paint has
completed (its Paint event has been delivered and the event loop has come back, so the frame has been
painted and flushed), prints the elapsed time with the list of heavy modules already imported, and
exits at once. Launches alternate between

  * studio   -- `finetune-studio` with no arguments, i.e. studio.cli.main([]) -> studio.ui.app.run_app
               -> QtMainWindow (1180x780), in a private FINETUNE_STUDIO_HOME where the offline demo is
               already built, so the first-launch demo build is not counted;
  * baseline -- a bare PySide6 QMainWindow (1180x780) with one QLabel: the floor that Python and Qt
               impose, measured the same way;
  * first launch (optional, on by default) -- the studio in an empty home: the window starts building the
               demo in a background thread while it opens, as on a user's very first launch.

The home's demo is built once beforehand with `finetune-studio demo` (not timed; --home reuses a home that
has one). Nothing of the user's is touched: FINETUNE_STUDIO_HOME and the QSettings path point at a temporary
folder (the window's saved geometry is never written: the child exits at the first paint). Besides the first
painted frame, each launch reports when the window's construction began (every import done and the
QApplication made), when show() was called and when the Paint event arrived; --importtime N reruns one
studio launch under `python -X importtime` to name the slowest imports.

    python benchmarks/first_paint.py                     # 5 launches of each, alternating, offscreen
    python benchmarks/first_paint.py --repeats 9 --json
    python benchmarks/first_paint.py --importtime 20     # also: the 20 slowest imports before the first paint
    QT_QPA_PLATFORM=xcb python benchmarks/first_paint.py # on a desktop, painting to the screen

Target: under 1.5 s to the first paint on a CPU-only machine, with torch, transformers, trl, peft and
datasets not imported before it.
"""

from __future__ import annotations

import os
import sys
import time

TARGET_S = 1.5
T0_ENV = "FIRST_PAINT_T0"
SETTINGS_ENV = "FIRST_PAINT_QSETTINGS"
TIMEOUT_ENV = "FIRST_PAINT_TIMEOUT_S"
HOME_ENV = "FINETUNE_STUDIO_HOME"  # studio.core.system.paths.HOME_ENV_VAR (not imported: the parent stays light)
KINDS = ("studio", "baseline")
# Must not be imported before the window has painted: each costs seconds on a CPU-only machine.
MUST_BE_DEFERRED = ("torch", "transformers", "trl", "peft", "datasets")
# Also watched (reported, not judged); sys.modules cannot tell which thread imported a module, so a
# background thread's imports (the first launch's demo build, the Dataset tab's reader) count too.
HEAVY_MODULES = MUST_BE_DEFERRED + ("bitsandbytes", "accelerate", "tokenizers", "safetensors", "huggingface_hub",
                                    "pyarrow", "pandas", "pyqtgraph", "numpy")
WINDOW_SIZE = (1180, 780)  # QtMainWindow's own default size; the baseline window is given the same


# --------------------------------------------------------------------------------------------- child


def _child(kind: str) -> None:
    """Runs in the launched process: start the window, report its first paint as one JSON line, exit."""
    import json
    import threading

    t0 = float(os.environ[T0_ENV])
    timeout_s = float(os.environ.get(TIMEOUT_ENV, "60"))
    marks: dict[str, float] = {}
    reported = threading.Lock()

    def finish(result: dict) -> None:
        if not reported.acquire(blocking=False):
            return  # the other thread (paint or watchdog) reports and ends the process
        print("FIRST_PAINT " + json.dumps(result), flush=True)
        sys.stderr.flush()
        os._exit(0)  # no teardown: nothing is saved, and the next launch starts from the same state

    def give_up() -> None:
        finish({"kind": kind, "painted": False, "seconds": None, "phases": dict(marks),
                "error": f"no paint within {timeout_s:g} s"})

    # A Python timer, timeout_s after Popen: it fires even when the window never reaches its event loop.
    watchdog = threading.Timer(max(0.0, t0 + timeout_s - time.time()), give_up)
    watchdog.daemon = True
    watchdog.start()

    from PySide6.QtCore import QEvent, QObject, QSettings, QTimer
    from PySide6.QtWidgets import QMainWindow

    QSettings.setPath(QSettings.Format.NativeFormat, QSettings.Scope.UserScope, os.environ[SETTINGS_ENV])

    class FirstPaint(QObject):
        def eventFilter(self, obj, event):  # noqa: N802 - Qt API
            if event.type() == QEvent.Type.Paint and "paint" not in marks:
                marks["paint"] = time.time() - t0
                heavy = [name for name in HEAVY_MODULES if name in sys.modules]
                obj.removeEventFilter(self)

                def frame_done() -> None:  # the event loop is back: the whole first frame is painted and flushed
                    marks["frame"] = time.time() - t0
                    finish({"kind": kind, "window_class": type(obj).__name__, "painted": True,
                            "seconds": round(marks["frame"], 4),
                            "phases": {name: round(value, 4) for name, value in marks.items()},
                            "heavy_imported": heavy, "modules": len(sys.modules),
                            "platform": QApplication.platformName()})

                QTimer.singleShot(0, frame_done)
            return False

    watcher = FirstPaint()
    original_init, original_show = QMainWindow.__init__, QMainWindow.show

    # QtMainWindow is a QMainWindow: wrapping these two reports when its construction starts (every import
    # done, the QApplication made) and when show() is called (construction done), and installs the paint
    # filter on the window alone (an application-wide filter would run Python for ~16,000 startup events).
    def init(self, *args, **kwargs):
        marks.setdefault("window_init", time.time() - t0)
        original_init(self, *args, **kwargs)

    def show(self):
        if "show" not in marks:
            marks["show"] = time.time() - t0
            self.installEventFilter(watcher)
        original_show(self)

    QMainWindow.__init__ = init
    QMainWindow.show = show
    from PySide6.QtWidgets import QApplication

    if kind == "studio":
        sys.argv = sys.argv[:1]
        from studio.cli import main  # what the `finetune-studio` console script calls

        main([])
    else:
        from PySide6.QtWidgets import QLabel

        app = QApplication(sys.argv[:1])
        window = QMainWindow()
        window.setWindowTitle("Baseline")
        window.setCentralWidget(QLabel("A bare QMainWindow with one QLabel"))
        window.resize(*WINDOW_SIZE)
        window.show()
        app.exec()
    finish({"kind": kind, "painted": False, "seconds": None, "phases": marks, "error": "event loop ended"})


# -------------------------------------------------------------------------------------------- parent


def prepare_home(home, demo_source=None):
    """A private studio home with the offline demo built (copied from `demo_source`, or `finetune-studio demo`)."""
    import shutil
    import subprocess
    from pathlib import Path

    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)
    if demo_source is not None:
        shutil.copytree(demo_source, home / "demo", dirs_exist_ok=True)
        return home
    env = dict(os.environ, **{HOME_ENV: str(home)})
    result = subprocess.run([sys.executable, "-m", "studio", "demo"], env=env, capture_output=True, text=True,
                            timeout=600)
    if result.returncode != 0:
        raise RuntimeError(f"could not build the demo in {home}:\n{result.stderr[-3000:]}")
    return home


def launch(kind: str, home, settings_dir, *, timeout_s: float = 60.0, importtime: bool = False) -> dict:
    """One launch in a new process; returns the child's report (seconds to the first painted frame, etc.)."""
    import json
    import subprocess
    from pathlib import Path

    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    env = dict(os.environ)
    env.setdefault("QT_QPA_PLATFORM", "offscreen")
    env[HOME_ENV] = str(home)
    env[SETTINGS_ENV] = str(settings_dir)
    env[TIMEOUT_ENV] = str(timeout_s)
    command = [sys.executable, *(["-X", "importtime"] if importtime else []), str(Path(__file__).resolve()),
               "--child", kind]
    env[T0_ENV] = repr(time.time())
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout_s + 30)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
    for line in stdout.splitlines():
        if line.startswith("FIRST_PAINT "):
            result = json.loads(line[len("FIRST_PAINT "):])
            if importtime:
                result["importtime"] = _parse_importtime(stderr)
            return result
    raise RuntimeError(f"the {kind} launch reported nothing (exit {process.returncode}):\n{stderr[-3000:]}")


def _parse_importtime(stderr: str) -> list[tuple[str, float, float]]:
    """`-X importtime` lines as (module, self ms, cumulative ms)."""
    rows = []
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "imported package" in line:
            continue
        _, self_us, cumulative_us, name = (part.strip() for part in line.replace("import time:", "|", 1).split("|"))
        rows.append((name, int(self_us) / 1000, int(cumulative_us) / 1000))
    return rows


def _summary(launches: list[dict]) -> dict:
    import statistics

    seconds = [round(run["seconds"], 4) for run in launches]
    phases = {name: round(statistics.median(run["phases"][name] for run in launches), 4)
              for name in launches[0]["phases"] if all(name in run["phases"] for run in launches)}
    return {"median_s": round(statistics.median(seconds), 4), "min_s": min(seconds),
            "max_s": max(seconds), "runs_s": seconds, "median_phases_s": phases,
            "heavy_imported": sorted({name for run in launches for name in run["heavy_imported"]}),
            "modules": max(run["modules"] for run in launches), "window_class": launches[0]["window_class"]}


def measure(*, repeats: int = 5, warmup: int = 1, first_launch: bool = True, home=None, workdir=None,
            timeout_s: float = 60.0, importtime: int = 0) -> dict:
    """Alternate baseline / studio (/ first-launch studio) launches; medians, ratio and the heavy-import check.

    Without `workdir`, the homes and the Qt settings live in a temporary folder removed at the end.
    """
    import shutil
    import tempfile
    from pathlib import Path

    if repeats < 1:
        raise ValueError("repeats must be at least 1")
    if workdir is None:
        temporary = Path(tempfile.mkdtemp(prefix="first-paint-"))
        try:
            return measure(repeats=repeats, warmup=warmup, first_launch=first_launch, home=home, workdir=temporary,
                           timeout_s=timeout_s, importtime=importtime)
        finally:
            shutil.rmtree(temporary, ignore_errors=True)
    workdir = Path(workdir)
    settings = workdir / "qt-settings"
    home = prepare_home(workdir / "home") if home is None else Path(home)
    runs: dict[str, list[dict]] = {"baseline": [], "studio": [], "first_launch": []}
    for index in range(warmup + repeats):
        measured = index >= warmup
        for name in ("baseline", "studio", "first_launch"):
            if name == "first_launch":
                if not first_launch:
                    continue
                result = launch("studio", workdir / f"empty-home-{index}", settings, timeout_s=timeout_s)
            else:
                result = launch(name, home, settings, timeout_s=timeout_s)
            if not result.get("painted"):
                raise RuntimeError(f"the {name} window did not paint: {result}")
            if measured:
                runs[name].append(result)
    baseline, studio = _summary(runs["baseline"]), _summary(runs["studio"])
    deferred = [name for name in MUST_BE_DEFERRED if name in studio["heavy_imported"]]
    result = {
        "target_s": TARGET_S,
        "repeats": repeats,
        "warmup": warmup,
        "studio": studio,
        "baseline": baseline,
        "ratio": round(studio["median_s"] / baseline["median_s"], 2),
        "studio_minus_baseline_s": round(studio["median_s"] - baseline["median_s"], 4),
        "meets_target": studio["median_s"] < TARGET_S,
        "imported_before_paint_but_should_be_deferred": deferred,
        "heavy_imports_deferred": not deferred,
        "platform": runs["studio"][0].get("platform"),
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
    }
    if first_launch:
        first = _summary(runs["first_launch"])
        result["first_launch"] = first
        result["first_launch_ratio"] = round(first["median_s"] / baseline["median_s"], 2)
    if importtime:
        rows = launch("studio", home, settings, timeout_s=timeout_s, importtime=True)["importtime"]
        result["slowest_imports_ms"] = [{"module": name, "self_ms": round(own, 1), "cumulative_ms": round(cum, 1)}
                                        for name, own, cum in sorted(rows, key=lambda r: -r[2])[:importtime]]
    return result


def markdown(result: dict) -> str:
    """A short table for docs/BENCHMARKS.md."""
    def phases(summary: dict) -> str:
        p = summary["median_phases_s"]
        return f"{p.get('window_init', float('nan')):.2f} / {p.get('show', float('nan')):.2f} / {p['paint']:.2f}"

    lines = [
        f"First paint, median of {result['repeats']} launches each, alternating "
        f"({result['platform']}, {result['cpus']} CPUs); target < {result['target_s']} s.",
        "",
        "| window | first painted frame (median) | min – max | imports done / shown / paint event | "
        "heavy modules imported at first paint |",
        "|---|---|---|---|---|",
    ]
    rows = [("bare QMainWindow + QLabel (baseline)", result["baseline"]),
            ("Finetune Studio, demo already built", result["studio"])]
    if "first_launch" in result:
        rows.append(("Finetune Studio, first launch (demo builds in the background)", result["first_launch"]))
    for label, summary in rows:
        heavy = ", ".join(summary["heavy_imported"]) or "none"
        lines.append(f"| {label} | {summary['median_s']:.2f} s | {summary['min_s']:.2f} – {summary['max_s']:.2f} s | "
                     f"{phases(summary)} s | {heavy} |")
    early = result["imported_before_paint_but_should_be_deferred"]
    lines += ["", f"Studio / baseline: **{result['ratio']:.2f}x** (+{result['studio_minus_baseline_s']:.2f} s); "
              f"target {'met' if result['meets_target'] else 'missed'}; "
              + ("torch, transformers, trl, peft and datasets are not imported before the first paint."
                 if not early else "imported before the first paint, but should be deferred: " + ", ".join(early))]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="measured launches of each window (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured launches of each first (default 1)")
    parser.add_argument("--no-first-launch", action="store_true", help="skip the first-launch (empty home) case")
    parser.add_argument("--home", help="a studio home with the demo already built (default: build one in a temp dir)")
    parser.add_argument("--importtime", type=int, default=0, metavar="N",
                        help="one more studio launch under -X importtime: list the N slowest imports before the paint")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds a launch may take (default 60)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args(argv)
    result = measure(repeats=args.repeats, warmup=args.warmup, first_launch=not args.no_first_launch, home=args.home,
                     timeout_s=args.timeout, importtime=args.importtime)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(markdown(result))
        for row in result.get("slowest_imports_ms", []):
            print(f"{row['cumulative_ms']:>9.1f} ms  {row['module']}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        _child(sys.argv[2])  # exits the process once it has reported
        time.sleep(10)  # only reached while the other thread is reporting
        os._exit(1)
    sys.exit(main())
