"""What `finetune-studio train` prints: a line per event, and at the end where the result is and how to use it.

The events file keeps the full record; these lines are for the person at the terminal (and the window's log).
"""

from __future__ import annotations

import shlex
import time
from typing import Any, Callable


TERMINAL_BAD_ROWS_HINT = ("Fix or remove the rows listed, or add --skip-bad-rows (data.skip_bad_rows) to train on the "
                          "others, then start again.")
"""What a terminal is told to do about bad rows: `train`'s flag, where the window names its Skip bad rows box."""


def event_line(event: dict[str, Any], total_steps: int | None = None) -> str | None:
    """A compact human line (or two) per event for the terminal (the events file holds the full record);
    `total_steps` (from the run's `started` event) completes the `finished` line."""
    kind = event["event"]
    if kind == "step":
        extra = f" lr {event['learning_rate']:.2e}" if event.get("learning_rate") is not None else ""
        return f"step {event['step']} loss {event['loss']:.4f}{extra}"
    if kind == "log":
        return event["message"]
    if kind == "evaluating":
        done, total = event["done"], event.get("total")
        count = f"{done}/{total} batches" if total else f"{done} batch" + ("" if done == 1 else "es")
        return f"evaluating at step {event['step']}: {count}"
    if kind == "eval":
        return f"eval step {event['step']} loss {event['eval_loss']:.4f}"
    if kind == "eval_scores":
        return f"held-out score step {event['step']}: {event['passed']}/{event['total']} passed ({event['metric']})"
    if kind == "started":
        rows = event.get("num_train_rows")
        line = f"training {event['total_steps']} steps" + (f" on {rows} rows" if rows is not None else "")
        if event.get("resumed_from"):
            line += f", resumed from {event['resumed_from']} at step {event.get('start_step', 0)}"
        return line
    if kind == "checkpoint":
        return f"step {event['step']}: checkpoint saved in {event['path']}"
    if kind == "finished":
        line = f"run {event['status']} at step {event['step']}" + (f" of {total_steps}" if total_steps else "")
        if event.get("final_loss") is not None:
            line += f", final loss {event['final_loss']:.4f}"
        return line + (f"\n{event['message']}" if event.get("message") else "")
    if kind == "failed":
        line = f"run failed ({event['kind']}): {event['message']}"
        hint = event.get("hint")
        if event["kind"] == "data" and event.get("issues"):
            hint = TERMINAL_BAD_ROWS_HINT  # the event's hint names the window's Skip bad rows box
        return line + (f"\n  what to do: {hint}" if hint else "")
    return None


def _took(seconds: float) -> str:
    """'48 s', '3 min 12 s', '2 h 05 min': the terminal's wording (the window shows 0:48 clock times)."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def _quoted(path: Any) -> str:
    """A path as one shell word (run folders may have spaces), to paste as it is."""
    return shlex.quote(str(path))


class TrainReport:
    """Says each event as a line, and after a `finished` or `failed` event the closing summary."""

    def __init__(self, run_dir: Any, say: Callable[[str], None] | None = None):
        self.run_dir = run_dir
        self._say = say or (lambda text: print(text, flush=True))
        self._clock = time.monotonic
        self._began = self._clock()
        self._total_steps: int | None = None

    def __call__(self, event: dict[str, Any]) -> None:
        if event["event"] == "started":
            self._total_steps = event.get("total_steps")
        if (line := event_line(event, self._total_steps)) is not None:
            self._say(line)
        if event["event"] in ("finished", "failed"):
            for line in self.summary(event):
                self._say(line)

    def summary(self, event: dict[str, Any]) -> list[str]:
        """The closing lines for a `finished` or `failed` event."""
        run = self.run_dir.path
        took = _took(self._clock() - self._began)
        resume = f"finetune-studio train {_quoted(self.run_dir.config_path)} --output {_quoted(run)} --resume"
        if event["event"] == "failed":
            lines = [f"run folder: {run} (failed after {took})"]
            # Out of memory, a full disk or a crash: once the cause is dealt with, the last checkpoint is good to
            # go on from. Bad data or a bad config would fail again the same way.
            if event["kind"] not in ("config", "data") and self.run_dir.latest_checkpoint() is not None:
                lines.append(f"continue from its latest checkpoint: {resume}")
            return lines
        adapter = f"adapter:    {event['adapter']}"
        if event.get("adapter_step") not in (None, event["step"]):
            best = event.get("best_eval_loss")
            kept = f"from step {event['adapter_step']}" + (f", eval loss {best:.4f}" if best is not None else "")
            adapter += f" ({kept})"
        lines = [adapter, f"run folder: {run}", f"time taken: {took}"]
        if event["status"] == "stopped":
            lines.append(f"continue training: {resume}")
        from studio.core.export.jobs import ExportKind, default_exports_dir
        from studio.core.system.paths import runs_dir

        # Beside a run given --output; a run in the studio's runs folder exports where the Export dialog does.
        folder = default_exports_dir() if run.resolve().parent == runs_dir().resolve() else run.parent
        gguf_kind = ExportKind.GGUF  # --type auto: the type that fits this machine, named in the file by the export
        commands = [("chat with it", f"finetune-studio chat --model {_quoted(run)}"),
                    ("merge it (16-bit)", f"finetune-studio merge {_quoted(run)} --output "
                                          f"{_quoted(ExportKind.MERGED.default_output(run.name, folder))}"),
                    ("export for Ollama", f"finetune-studio export gguf {_quoted(run)} --output "
                                          f"{_quoted(gguf_kind.default_output(run.name, folder))}")]
        width = max(len(label) for label, _ in commands) + 1
        return lines + ["next:"] + [f"  {(label + ':').ljust(width)} {command}" for label, command in commands]
