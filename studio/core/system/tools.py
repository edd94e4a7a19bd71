"""Programs the user pointed the studio at once, remembered in the user data folder (tools.toml): today llama.cpp's
`llama-quantize`, for K-quant exports where llama-cpp-python is not installed (a llama.cpp release's program, or
Homebrew's). Set from the Export dialog (*Use llama-quantize…*) or `export gguf --llama-quantize PATH`."""

from __future__ import annotations

import os
from pathlib import Path

from studio.core.system.paths import user_data_dir

TOOLS_FILE = "tools.toml"
LLAMA_QUANTIZE = "llama_quantize"

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib


class ToolError(ValueError):
    """A path that is not a program this machine can run."""


def tools_path() -> Path:
    return user_data_dir() / TOOLS_FILE


def remembered_tool(name: str) -> Path | None:
    """The program remembered for `name`, while it is still there; None otherwise."""
    try:
        value = tomllib.loads(tools_path().read_text(encoding="utf-8")).get("tools", {}).get(name)
    except (OSError, ValueError):
        return None
    path = Path(value) if isinstance(value, str) and value else None
    return path if path is not None and path.is_file() and os.access(path, os.X_OK) else None


def remember_tool(name: str, program: Path) -> Path:
    """Remember `program` for `name` (other tools kept); ToolError when it is not a program this machine can run."""
    program = Path(program).expanduser().resolve()
    if not program.is_file() or not os.access(program, os.X_OK):
        raise ToolError(f"{program}: not a program this machine can run")
    try:
        tools = tomllib.loads(tools_path().read_text(encoding="utf-8")).get("tools", {})
    except (OSError, ValueError):
        tools = {}
    tools[name] = str(program)
    lines = ["# Programs Finetune Studio uses, chosen once by you.", "[tools]"]
    lines += [f"{key} = {_toml_string(value)}" for key, value in sorted(tools.items()) if isinstance(value, str)]
    path = tools_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".toml.partial")
    partial.write_text("\n".join(lines) + "\n", encoding="utf-8")
    partial.replace(path)  # a crash never leaves half a file
    return program


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
