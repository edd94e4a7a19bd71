"""Child processes (the training child, llama.cpp's check) told in words when they end."""

from __future__ import annotations

import signal


def describe_exit(returncode: int | None) -> str:
    """'exit code 3', 'killed by SIGKILL', or — for a process another window started, whose status this process
    cannot learn — 'exit status unknown'."""
    if returncode is None:
        return "exit status unknown: it was started by an earlier window"
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"
