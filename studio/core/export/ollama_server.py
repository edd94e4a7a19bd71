"""The exported model in Ollama itself: `ollama create` from the Modelfile, and its replies through Ollama's HTTP API.

Only Ollama's documented interfaces are used: the `ollama` command (`ollama list`, `ollama create NAME -f FILE`)
and the REST API on localhost (`POST /api/chat` with `"stream": false`; docs/api.md in the Ollama repository). A
model of the same name already in `ollama list` is never replaced unless the caller says so (the window asks), and
where Ollama is not installed the user is told how to install it and given the one command to run later.
"""

from __future__ import annotations

import platform
import shutil
import subprocess
from pathlib import Path

from studio.core.eval.ollama_api import OllamaError

CREATE_TIMEOUT_S = 1800  # ollama create copies the GGUF into its store: minutes for an 8B file on a slow disk


class OllamaModelExists(OllamaError):
    """A model of that name is in `ollama list`; replacing it needs the user's yes."""


def find_ollama() -> str | None:
    """The `ollama` program on PATH, or None."""
    return shutil.which("ollama")


def ollama_install_hint(system: str | None = None) -> str:
    """How to install Ollama on this OS, in one line."""
    system = system or platform.system()
    if system == "Linux":
        return "Install Ollama: curl -fsSL https://ollama.com/install.sh | sh (or see https://ollama.com/download)"
    if system == "Darwin":
        return "Install Ollama: download the macOS app from https://ollama.com/download (or: brew install ollama)"
    if system == "Windows":
        return "Install Ollama: download OllamaSetup.exe from https://ollama.com/download"
    return "Install Ollama from https://ollama.com/download"


def create_command(name: str, modelfile: Path) -> list[str]:
    """The one command that puts the export into Ollama (run in the Modelfile's folder: FROM is a relative path)."""
    return ["ollama", "create", name, "-f", Path(modelfile).name]


def _with_tag(name: str) -> str:
    return name if ":" in name else name + ":latest"


def listed_models(ollama: str | None = None) -> list[str]:
    """The names `ollama list` prints (NAME column, with their tags)."""
    ollama = ollama or find_ollama()
    if not ollama:
        raise OllamaError(ollama_install_hint())
    done = subprocess.run([ollama, "list"], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise OllamaError(f"`ollama list` failed: {(done.stderr or done.stdout).strip()[-500:]}")
    lines = done.stdout.splitlines()
    return [line.split()[0] for line in lines[1:] if line.strip()]  # the first line is the header


def create_in_ollama(name: str, modelfile: Path, *, replace: bool = False, ollama: str | None = None) -> str:
    """`ollama create NAME -f NAME.Modelfile` in the Modelfile's folder; returns Ollama's last words.

    Raises OllamaModelExists when `name` is already listed and `replace` is not given.
    """
    ollama = ollama or find_ollama()
    if not ollama:
        raise OllamaError(f"{ollama_install_hint()}; then run in {Path(modelfile).parent}: "
                          + " ".join(create_command(name, modelfile)))
    if not replace and _with_tag(name) in {_with_tag(listed) for listed in listed_models(ollama)}:
        raise OllamaModelExists(f"Ollama already has a model named {name!r}: choose another name, or replace it")
    modelfile = Path(modelfile)
    done = subprocess.run([ollama, *create_command(name, modelfile)[1:]], cwd=modelfile.parent, capture_output=True,
                          text=True, timeout=CREATE_TIMEOUT_S)
    if done.returncode != 0:
        raise OllamaError(f"`ollama create {name}` failed: {(done.stderr or done.stdout).strip()[-800:]}")
    return (done.stdout.strip().splitlines() or ["created"])[-1]
