"""A test seam: named points of a training run where a test can pause it or make it fail.

The fault tests must kill a run at exact moments (while the model loads, while a checkpoint is being saved)
and make it run out of memory or of disk on a machine that has neither problem. Production code only calls
`reached(point, ...)` at these points; nothing is registered there outside tests, so each call returns False
at once. A test installs its hooks by naming a module in `FINETUNE_STUDIO_TEST_HOOKS` (a dotted module name,
or the path of a .py file): the training child imports it at start (`load_test_hooks`) and the module calls
`register` as it is imported. Production never imports anything of the tests' own.

Points, with the details each receives:
- `model_load`: just before the base model's weights are read.
- `checkpoint_staged(step, path)`: a checkpoint is written into its staging folder, not yet moved into place.
- `step_begin(step)`: the step about to run (1-based).
- `step_end(step)`: the step just finished; a hook returning True asks the run to stop there, as Stop does.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any, Callable

ENV_VAR = "FINETUNE_STUDIO_TEST_HOOKS"
POINTS = ("model_load", "checkpoint_staged", "step_begin", "step_end")

_registry: dict[str, dict[str, Callable[..., Any]]] = {point: {} for point in POINTS}


def register(point: str, function: Callable[..., Any]) -> None:
    """Call `function(**details)` whenever a run reaches `point`; registering the same function again replaces it."""
    if point not in _registry:
        raise ValueError(f"unknown hook point {point!r}; the points are {', '.join(POINTS)}")
    _registry[point][f"{function.__module__}.{function.__qualname__}"] = function


def reached(point: str, **details: Any) -> bool:
    """Run the hooks registered at `point`; True if one of them returned a true value (nothing outside tests)."""
    hooks = _registry[point]
    if not hooks:
        return False
    results = [bool(hook(**details)) for hook in list(hooks.values())]  # every hook runs, none short-circuits
    return any(results)


def load_test_hooks() -> None:
    """Import the module `FINETUNE_STUDIO_TEST_HOOKS` names (unset outside tests: nothing happens)."""
    name = os.environ.get(ENV_VAR, "").strip()
    if not name:
        return
    if not name.endswith(".py"):
        importlib.import_module(name)
        return
    path = Path(name).resolve()
    loaded = sys.modules.get(path.stem)
    if loaded is not None and Path(getattr(loaded, "__file__", "") or "").resolve() == path:
        return  # the test process itself imported it already
    spec = importlib.util.spec_from_file_location(path.stem, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"{ENV_VAR}={name}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
