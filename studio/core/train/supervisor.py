"""TrainingSupervisor: starts the training child process, relays its events and says how it ended.

Why a child process: a CUDA OOM, a crash in a native kernel or a kill can never take the window
down, and all GPU memory goes back to the card when the process exits.

The child's stdout/stderr go straight to the run's `train.log` file instead of a pipe: nothing can
fill up and stall the child, and the run keeps going (and logging) if the window closes. Events
are read by tailing `events.jsonl` — the same file the run history and re-attach read — so the live
view and the stored run can never disagree.

A supervisor can also watch a training process it did not start (`TrainingSupervisor.attach`): a
run kept training after the window closed is found again at start-up by the pid its first event
carries, and Stop still works because the stop request is a file.

`supervise(on_event, on_ended, detached=..., wait=...)` is a plain blocking loop (the Orange3 long-task
pattern): the window runs it on a background task (studio.ui.training_supervisor), tests call it directly.
`request_stop()` and `kill()` may be called from another thread while it runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from studio.core.runs.events import (
    Event,
    EventReader,
    FailedEvent,
    FinishedEvent,
    append_event,
    make_event,
    parse_event,
)
from studio.core.runs.store import RunDirectory
from studio.core.system.processes import describe_exit

POLL_INTERVAL_S = 0.1

OnEvent = Callable[[Event], Any]
OnEnded = Callable[[str, str], Any]


def training_command(run_dir: RunDirectory, *, resume: bool = False, resume_from: Path | None = None) -> list[str]:
    """The child's command line: the same `finetune-studio train` a user can run in a terminal."""
    command = [sys.executable, "-m", "studio", "train", str(run_dir.config_path), "--output", str(run_dir.path)]
    if resume_from is not None:
        command += ["--resume", str(resume_from)]
    elif resume:
        command.append("--resume")
    return command


def start_training_process(run_dir: RunDirectory, log_file: Any, *, resume: bool = False,
                           resume_from: Path | None = None) -> subprocess.Popen:
    """Start `finetune-studio train` for the run, its stdout and stderr into `log_file` (the run's train.log)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONIOENCODING="utf-8")
    kwargs: dict = {}
    if os.name == "nt":
        kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW
    else:
        kwargs["start_new_session"] = True  # Ctrl-C in the studio's terminal does not hit the run
    command = training_command(run_dir, resume=resume, resume_from=resume_from)
    return subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                            **kwargs)


class _StartedProcess:
    """The child this supervisor started (a Popen)."""

    def __init__(self, process: subprocess.Popen):
        self._process = process
        self.pid = process.pid

    @property
    def returncode(self) -> int | None:
        return self._process.returncode

    def poll(self) -> bool:
        """True once the process has ended."""
        return self._process.poll() is not None

    def kill(self) -> None:
        self._process.kill()
        self._process.wait()


class _WatchedProcess:
    """A training process some earlier window started: watched by pid (psutil), not owned.

    Its exit status is only known when it happens to be this process's own child (then it is reaped
    here); otherwise `returncode` stays None and the run's events say how it ended.
    """

    def __init__(self, pid: int, started_by: float | None):
        import psutil

        self.pid = pid
        self.returncode: int | None = None
        self._ended = False
        try:
            self._process = psutil.Process(pid)
            if started_by is not None and self._process.create_time() > started_by + 2.0:
                self._ended = True  # the pid was reused: the run's process is long gone
        except psutil.NoSuchProcess:
            self._ended = True

    def poll(self) -> bool:
        import psutil

        if self._ended:
            return True
        try:
            gone = self._process.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            gone = True
        if gone:
            self._ended = True
            self._reap()
        return self._ended

    def _reap(self) -> None:
        if os.name == "nt":
            return
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            return  # not ours: its parent (or init) collects it
        if pid == self.pid:
            self.returncode = os.waitstatus_to_exitcode(status)

    def kill(self) -> None:
        import psutil

        try:
            self._process.kill()
            self._process.wait(timeout=10)
        except psutil.NoSuchProcess:
            pass
        except psutil.TimeoutExpired:
            return
        self.poll()


class TrainingSupervisor:
    """Starts `finetune-studio train` for a run directory (or watches a live one) and reports its events and
    its ending: `on_event(event)` for every event of the run (from its first line), then
    `on_ended(status, message)` once the process is gone, with status completed | stopped | failed.
    """

    def __init__(self, run_dir: RunDirectory, *, resume: bool = False, resume_from: Path | None = None,
                 attach_pid: int | None = None, attach_started_by: float | None = None,
                 stop_timeout_s: float = 120.0):
        self.run_dir = run_dir
        self.resume = resume
        self.resume_from = resume_from
        self.attach_pid = attach_pid
        self._attach_started_by = attach_started_by
        self.stop_timeout_s = stop_timeout_s
        self.pid: int | None = attach_pid
        self._stop_deadline: float | None = None
        self._kill_now = False
        self._terminal: FinishedEvent | FailedEvent | None = None  # the finished/failed event of the supervised process
        self._own_events = False  # whether the events read so far have reached that process's own

    @classmethod
    def attach(cls, run_dir: RunDirectory, **kwargs: Any) -> "TrainingSupervisor | None":
        """A supervisor watching the run's live training process (started by an earlier window); None if
        the run is not training."""
        process = run_dir.training_process()
        if process is None:
            return None
        pid, started_by = process
        return cls(run_dir, attach_pid=pid, attach_started_by=started_by, **kwargs)

    @property
    def attached(self) -> bool:
        """Whether this supervisor watches a process it did not start."""
        return self.attach_pid is not None

    # --- called from any thread while `supervise` runs ---------------------------------------------------------
    def request_stop(self) -> None:
        """First call: ask the run to save and stop. Second call: kill it."""
        if self._stop_deadline is None:
            self.run_dir.request_stop()
            self._stop_deadline = time.monotonic() + self.stop_timeout_s
        else:
            self._kill_now = True

    def kill(self) -> None:
        self._kill_now = True

    @property
    def stopping(self) -> bool:
        return self._stop_deadline is not None

    # --- the supervising loop ----------------------------------------------------------------------------------
    def supervise(self, on_event: OnEvent, on_ended: OnEnded, *, detached: Callable[[], bool] = lambda: False,
                  wait: Callable[[float], Any] = time.sleep) -> None:
        """Start (or watch) the process and relay its events until it ends, then call `on_ended` once.

        `detached()` returning True ends the watch early without `on_ended`: the run goes on and keeps writing
        its run directory. `wait(seconds)` is the pause between two reads of the events file.
        """
        log_file = None
        if self.attach_pid is not None:
            process: _StartedProcess | _WatchedProcess = _WatchedProcess(self.attach_pid, self._attach_started_by)
        else:
            self.run_dir.clear_stop_request()
            log_file = open(self.run_dir.log_path, "ab")
            try:
                process = _StartedProcess(start_training_process(self.run_dir, log_file, resume=self.resume,
                                                                 resume_from=self.resume_from))
            except OSError as error:
                log_file.close()
                self._finish_with_failure(f"the training process could not start: {error}", on_event, on_ended)
                return
        self.pid = process.pid
        reader = EventReader(self.run_dir.events_path)
        self._terminal, self._own_events = None, False
        try:
            while True:
                self._relay(reader, on_event)
                if process.poll():
                    break
                if detached():
                    return
                if self._kill_now or (self._stop_deadline is not None and time.monotonic() > self._stop_deadline):
                    process.kill()
                    break
                wait(POLL_INTERVAL_S)
            self._relay(reader, on_event)  # the last events written before the exit
        finally:
            if log_file is not None:
                log_file.close()
        self._end(process.returncode, on_event, on_ended)

    def _end(self, returncode: int | None, on_event: OnEvent, on_ended: OnEnded) -> None:
        terminal = self._terminal
        failed_exit = returncode is not None and returncode != 0
        if terminal is not None and not (isinstance(terminal, FinishedEvent) and failed_exit):
            status = terminal.status if isinstance(terminal, FinishedEvent) else "failed"
            on_ended(status, terminal.message or (terminal.hint if isinstance(terminal, FailedEvent) else ""))
            return
        if not self._own_events and (busy := self.run_dir.busy_message()) is not None:
            # Our child was turned away because another process trains into the folder: its events are that
            # run's, and a `failed` event here would mark the live run failed.
            on_ended("failed", f"Not started: {busy}")
            return
        # The process ended without saying how: record it in the run so history tells the truth too.
        self._finish_with_failure(f"the training process ended unexpectedly ({describe_exit(returncode)}); "
                                  f"see {self.run_dir.log_path.name}", on_event, on_ended)

    def _relay(self, reader: EventReader, on_event: OnEvent) -> None:
        """Pass on the new events; remember the ending written by *this* process.

        The file also holds earlier processes of the run (a stop, then a resume): their endings are replayed
        for the curves but say nothing about how this process ended. This process's events begin with the
        first one carrying its pid.
        """
        for event in map(parse_event, reader.read_new()):
            on_event(event)
            if event.pid is not None and event.pid == self.pid:
                self._own_events = True
            elif isinstance(event, (FinishedEvent, FailedEvent)) and self._own_events:
                self._terminal = event
            if self._own_events and self._stop_deadline is not None:
                # Still working towards the stop (an evaluation reporting progress, a checkpoint being
                # written): the deadline counts from the run's last sign of life, not from the request.
                self._stop_deadline = max(self._stop_deadline, time.monotonic() + self.stop_timeout_s)

    def _finish_with_failure(self, message: str, on_event: OnEvent, on_ended: OnEnded) -> None:
        event = make_event("failed", kind="crash", message=message,
                           hint="Resume from the last checkpoint, or read train.log for the cause.")
        append_event(self.run_dir.events_path, event)
        on_event(parse_event(event))
        on_ended("failed", message)
