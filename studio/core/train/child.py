"""The training child: what `finetune-studio train` does once its arguments are parsed.

The window starts the very same command (studio.core.train.supervisor), so a run trained from a terminal and
a run trained from the window are one code path. `train_child` reads the config, finds or makes the run
folder, takes its writer lock, writes the run's events and human lines, runs `run_training` and turns every
ending into an exit status:

    EXIT_OK (0) completed or stopped; EXIT_BAD_INPUT (2) a bad config, data or folder (the message names it);
    EXIT_INTERNAL (1) anything else (the traceback goes to train.log).

Nothing heavy is imported at module level: `studio.cli` imports this module to start.
"""

from __future__ import annotations

import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Any

from studio.core.train.report import TrainReport

EXIT_OK, EXIT_INTERNAL, EXIT_BAD_INPUT = 0, 1, 2


class TrainInputError(ValueError):
    """A user error found before training starts (config, folder, checkpoint): one line, exit status 2."""


class RunLog:
    """The human lines of a CLI run: printed, and appended to the run's train.log.

    A run the window started already has its stdout and stderr in train.log (the supervisor redirects them), so
    there the lines are only printed — written twice they would show twice. Every write may meet a full disk:
    the message that says so must not be lost to the traceback of its own write.
    """

    def __init__(self, run_dir: Any):
        self._file = None
        if run_dir is not None and not _stdout_is_run_log(run_dir):
            try:
                self._file = open(run_dir.log_path, "a", encoding="utf-8")
            except OSError:
                pass

    def say(self, text: str, *, stream: Any = None, terminal: bool = True) -> None:
        if terminal:
            try:
                print(text, file=stream or sys.stdout, flush=True)
            except OSError:
                pass  # stdout is train.log on a full disk: nothing more can be done for this line
        self.log_only(text + "\n")

    def log_only(self, text: str) -> None:
        if self._file is not None:
            try:
                self._file.write(text)
                self._file.flush()
            except (OSError, ValueError):  # ValueError: closed, a stop signal after the run ended
                pass

    def close(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass


def _stdout_is_run_log(run_dir: Any) -> bool:
    """Whether stdout already goes to the run's train.log (a run the window started)."""
    try:
        return os.path.samestat(os.fstat(sys.stdout.fileno()), os.stat(run_dir.log_path))
    except (OSError, ValueError, AttributeError):
        return False  # no log yet, or stdout is not a file


def check_fresh_run_folder(run_dir: Any, config_path: Path) -> None:
    """A new run goes into a new or empty folder: mixing two runs' events and checkpoints in one folder would
    make its curves, its status and a later --resume wrong. The window's own run folder, made just before it
    starts the child, holds only run.toml and train.log; the config being trained may lie there too."""
    if not run_dir.path.exists():
        return
    if run_dir.events_path.exists() or run_dir.checkpoints_dir.exists() or run_dir.adapter_dir.exists():
        raise TrainInputError(f"{run_dir.path}: already holds a run ({run_dir.status() or 'unfinished'}); add "
                              "--resume to continue it, or give --output a new folder")
    allowed = (run_dir.config_path, run_dir.log_path, run_dir.lock_path, config_path.resolve())
    others = sorted(p.name for p in run_dir.path.iterdir() if p.resolve() not in allowed)
    if others:
        shown = ", ".join(others[:3]) + (", …" if len(others) > 3 else "")
        raise TrainInputError(f"{run_dir.path}: the folder already holds files ({shown}); give --output a new or "
                              "empty folder for the run")


def resume_checkpoint(resume: str | None, run_dir: Any) -> Path | None:
    """The checkpoint `--resume [CKPT]` names: None without --resume; 'latest' is the run's latest one."""
    if resume is None:
        return None
    if resume == "latest":
        checkpoint = run_dir.latest_checkpoint()
        if checkpoint is None:
            raise TrainInputError(f"{run_dir.path}: no checkpoint to resume from (give --output the run's folder)")
        return checkpoint
    checkpoint = Path(resume).resolve()
    if not (checkpoint / "trainer_state.json").is_file():
        raise TrainInputError(f"{checkpoint}: not a checkpoint folder (no trainer_state.json)")
    return checkpoint


def install_stop_signals(run_dir: Any, run_log: RunLog) -> None:
    """First Ctrl-C / SIGTERM asks for a graceful stop (checkpoint + adapter); a second one interrupts."""

    def request_stop(signum: int, frame: Any) -> None:
        if run_dir.stop_requested():
            signal.default_int_handler(signum, frame)
        run_dir.request_stop()
        run_log.say("stop requested: saving a checkpoint and the adapter (press Ctrl-C again to abort)",
                    stream=sys.stderr)

    signal.signal(signal.SIGINT, request_stop)
    if hasattr(signal, "SIGTERM"):
        signal.signal(signal.SIGTERM, request_stop)


def record_failure(event: dict[str, Any], emit: Any, run_log: RunLog) -> int:
    """Write the failed event, the message and (for an internal failure) the traceback; the exit status.

    The short message goes first everywhere: on a full disk the longer writes after it may fail.
    """
    try:
        emit(event)
    except OSError:  # a full disk refuses the events file too: the terminal and train.log still get the message
        run_log.say(f"failed: {event['message']}")
    if event["kind"] in ("config", "data"):
        run_log.say(f"finetune-studio train: {event['message']}", stream=sys.stderr)
        return EXIT_BAD_INPUT
    if event["kind"] == "disk":
        run_log.say(f"finetune-studio train: {event['message']}", stream=sys.stderr)
        run_log.log_only(traceback.format_exc())  # the cause, for the log only: the line above says what to do
        return EXIT_INTERNAL
    try:
        traceback.print_exc()
    except OSError:
        pass
    run_log.log_only(traceback.format_exc())
    return EXIT_INTERNAL


def _load_config(config_path: Path, *, model: str | None, data: str | None, max_steps: int | None,
                 allow_pickle: bool = False, skip_bad_rows: bool = False, encoding: str | None = None) -> Any:
    from studio.core.config.settings import ConfigError, load_config
    from studio.core.data.issues import DataError
    from studio.core.train.preflight import check_run, refusal_line

    try:
        config = load_config(config_path)  # validated as it is read
        overridden = any((model, data, max_steps is not None, allow_pickle, skip_bad_rows, encoding))
        if model:
            config.model.name_or_path = model
        if data:
            config.data.train_file = str(Path(data).resolve())
        if max_steps is not None:
            config.training.max_steps = max_steps
        if allow_pickle:
            config.model.allow_pickle = True
        if skip_bad_rows:
            config.data.skip_bad_rows = True
        if encoding:
            config.data.encoding = encoding
        if overridden:
            config.validate()  # the values the command line changed (a window's run has none)
        # Everything the run would refuse, before its folder exists: the one check of this process (run_training
        # trusts it rather than checking again).
        check_run(config)
    except DataError as error:  # told for the command line: its flags, not the window's Skip bad rows box
        raise TrainInputError(refusal_line(error, skip_bad_rows="add --skip-bad-rows",
                                           encoding=lambda codec: f"--encoding {codec}")) from None
    except ConfigError as error:
        flags = {"model.name_or_path": "--model"} if model else {}
        flags.update({"data.train_file": "--data"} if data else {})
        flags.update({"data.encoding": "--encoding"} if encoding else {})
        raise TrainInputError(_told_against(error, config_path, flags=flags)) from None
    return config


def _told_against(error: Any, config_path: Path, *, flags: dict[str, str]) -> str:
    """The refusal's one line, naming where the value came from: the flag that set it, else the config file.

    A model path the config gives relative to itself is looked for next to it: a missing one is said so, with
    the folder looked in (not as an unknown Hub id)."""
    from studio.core.config.settings import FILE_KEY

    if getattr(error, "key", None) in flags:
        return f"{flags[error.key]} {str(error.value)!r}: {error.reason}"
    value = str(getattr(error, "value", ""))
    if (error.key == "model.name_or_path" and str(error.reason).startswith("no such folder")
            and not Path(value).expanduser().is_absolute()):
        looked_in = config_path.resolve().parent / value
        return (f"{config_path}: model.name_or_path = {value!r}: no folder `{value}` next to {config_path.name} "
                f"(looked in {looked_in}), and not a Hub id (those read org/name)")
    if getattr(error, "source", None) is None and error.key != FILE_KEY:
        return f"{config_path}: {error}"
    return str(error)


def _run_folder(config: Any, config_path: Path, output: Path | None, resume: str | None,
                main_process: bool) -> tuple[Any, Path | None]:
    """The run folder to train into and the checkpoint to resume from (None: a new run)."""
    from studio.core.runs.store import RunDirectory, RunStore, default_run_name, renamed_note

    if output is not None:
        run_dir = RunDirectory(output.resolve())
        # A live run's folder is refused before anything reads or writes it (its checkpoints are its own).
        if main_process and run_dir.path.is_dir() and (busy := run_dir.busy_message()):
            raise TrainInputError(busy)
        # Under `accelerate launch` rank 0 checks: the others would find the events rank 0 has begun writing.
        if resume is None and main_process:
            check_fresh_run_folder(run_dir, config_path)
        resume_from = resume_checkpoint(resume, run_dir)
        run_dir.path.mkdir(parents=True, exist_ok=True)
        return run_dir, resume_from
    if resume is not None and resume != "latest":
        # Resuming a named checkpoint without --output continues in that checkpoint's run directory.
        resume_from = resume_checkpoint(resume, None)
        run_dir = RunDirectory(resume_from.parent.parent)
        if main_process and (busy := run_dir.busy_message()):
            raise TrainInputError(busy)
        return run_dir, resume_from
    if resume is not None:
        raise TrainInputError("no checkpoint to resume from: give --output RUN_DIR (the run to continue) or "
                              "--resume CKPT")
    wanted = config.name or default_run_name(config.data.train_file, config.model.name_or_path)
    run_dir = RunStore().new_run(wanted, config.model.name_or_path)
    if main_process and (note := renamed_note(wanted, run_dir)) is not None:
        print(note, flush=True)
    return run_dir, None


def train_child(config_path: Path, *, model: str | None = None, data: str | None = None, output: Path | None = None,
                max_steps: int | None = None, resume: str | None = None, allow_pickle: bool = False,
                skip_bad_rows: bool = False, encoding: str | None = None, name: str | None = None) -> int:
    """Train `config_path` (with the command line's overrides) into a run folder; the exit status.

    `name` names the run; without it a config's own name stays unless the data or the model was overridden (then
    the run is named by the data and the model, as the window names it).

    `resume` is None (a new run), 'latest' (the run's latest checkpoint) or a checkpoint folder. Raises
    TrainInputError for a user error found before the run folder is written to. `allow_pickle` sets
    model.allow_pickle (the run records it, so chat and merge of the run may read its pickle base too).
    """
    from studio.core.train import hooks

    hooks.load_test_hooks()  # a test seam; nothing outside tests
    config = _load_config(config_path, model=model, data=data, max_steps=max_steps, allow_pickle=allow_pickle,
                          skip_bad_rows=skip_bad_rows, encoding=encoding)
    if name is not None and name.strip():
        config.name = name.strip()
    elif model or data:
        config.name = ""  # the config's name was for its own data and model
    main_process = int(os.environ.get("RANK", "0")) == 0  # under `accelerate launch`, rank 0 records the run
    run_dir, resume_from = _run_folder(config, Path(config_path), output, resume, main_process)

    # One writer per run folder, for this process's whole life; the OS lets go when it dies, however it dies.
    lock = run_dir.writer_lock() if main_process else None
    if lock is not None and not lock.acquire():
        raise TrainInputError(run_dir.busy_message() or f"{run_dir.path}: another process is training into this "
                                                         "folder")
    if main_process:
        run_dir.remove_leftovers()  # a checkpoint or adapter a killed process left half-saved
    if resume_from is not None and main_process:
        from studio.core.train.run import completed_resume

        done = completed_resume(resume_from, config)
        if done is not None and run_dir.status() == "completed" and run_dir.adapter_dir.is_dir():
            # Nothing to train, and nothing to redo: the run, its checkpoints and its adapter stay as they are.
            print(f"{run_dir.path}: the run is complete (step {done[0]} of {done[1]}); nothing to train. "
                  f"To train further, resume with a higher --max-steps (e.g. --max-steps {done[1] * 2}).")
            lock.release()
            return EXIT_OK
    return _train(config, run_dir, resume_from, lock, main_process)


def _train(config: Any, run_dir: Any, resume_from: Path | None, lock: Any, main_process: bool) -> int:
    from studio.core.config.settings import save_config
    from studio.core.data.grow.record import copy_record_into
    from studio.core.runs.events import EventWriter, make_event
    from studio.core.train.failures import failure_event

    run_log = RunLog(run_dir if main_process else None)
    writer: EventWriter | None = None
    report = TrainReport(run_dir, say=run_log.say)

    def emit(event: dict[str, Any]) -> None:
        if main_process:
            if writer is None:
                raise OSError(f"{run_dir.events_path}: could not be opened")
            writer.write(event)
            report(event)

    try:
        if main_process:
            writer = EventWriter(run_dir.events_path)
            # The first event of every training process carries its pid, so the run history can tell a
            # live run from one whose process vanished (see RunDirectory.status).
            emit(make_event("log", level="info", message=f"Training process {os.getpid()} started",
                            pid=os.getpid(), resumed_from=str(resume_from) if resume_from else None))
            run_dir.clear_stop_request()
            if not config.name:
                config.name = run_dir.name
            save_config(config, run_dir.config_path)
            copy_record_into(run_dir.path, config.data.train_file)  # the grow record (held-out hashes) with the run
        install_stop_signals(run_dir, run_log)

        from studio.core.train.run import run_training

        run_training(config, run_dir, emit, run_dir.stop_requested, resume_from=resume_from)
        return EXIT_OK
    except Exception as error:  # every failure is recorded as an event before the process ends
        return record_failure(failure_event(error, config, folder=run_dir.path), emit, run_log)
    finally:
        if writer is not None:
            writer.close()
        run_log.close()
        if lock is not None:
            lock.release()
