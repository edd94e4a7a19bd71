"""The Export dialog's state, Qt-free: the run exported, the GGUF type list with each type's file size and the memory
it needs at the chosen context on this machine's card (or RAM), what fits, the type preselected and why, and the
last verification's result with the rule it is judged by.

The list and the preselection are plan.gguf_fit.choose_gguf_type's, the same function `export gguf --type auto`
runs (through export.gguf.choose_type), so the dialog and the CLI pick the same type for the same run and card.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from studio.core.eval.verify import RULE
from studio.core.plan.gguf_fit import Budget, TypeChoice, choose_gguf_type, default_context
from studio.core.plan.vram import ModelShape

Listener = Callable[[], None]


class ExportSession:
    """Notifies its listeners (no arguments) whenever what the dialog shows changes."""

    verify_rule = RULE

    def __init__(self, budget: Budget | None = None, *, k_quants: bool | None = None):
        self._budget = budget
        self._k_quants = k_quants
        self._listeners: list[Listener] = []
        self.shape: ModelShape | None = None
        self.shape_error = ""
        self.max_length: int | None = None
        self._context: int | None = None
        self.choice: TypeChoice | None = None
        self._gguf_type: str | None = None
        self.verification: Any = None
        """The last eval.verify.ExportVerification of an export written in this dialog."""
        self.verify_error = ""

    # --- observing ------------------------------------------------------------------------------------------
    def subscribe(self, listener: Listener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def _notify(self) -> None:
        for listener in list(self._listeners):
            listener()

    # --- what is exported ---------------------------------------------------------------------------------------
    @property
    def budget(self) -> Budget:
        if self._budget is None:
            from studio.core.plan.gguf_fit import detect_budget

            self._budget = detect_budget()
        return self._budget

    @property
    def k_quants(self) -> bool:
        if self._k_quants is None:
            from studio.core.export.quantize import find_quantizer

            self._k_quants = find_quantizer() is not None
        return self._k_quants

    def use_quantizer(self, program: Path) -> Path:
        """Remember a `llama-quantize` program for the K-quants (system.tools.ToolError when it is not one) and list
        the types again with it."""
        from studio.core.system.tools import LLAMA_QUANTIZE, remember_tool

        chosen = remember_tool(LLAMA_QUANTIZE, program)
        self._k_quants = None
        self._rechoose()
        return chosen

    def set_source(self, source: Path | None) -> None:
        """The run (or adapter, or merged folder) to export: its model's shape and max_length, read offline."""
        from studio.core.export.gguf import model_shape_config
        from studio.core.export.staging import ExportError
        from studio.core.plan.vram import ShapeError

        self.shape, self.shape_error, self.max_length = None, "", None
        if source is not None:
            try:
                config, self.max_length = model_shape_config(Path(source))
                self.shape = ModelShape.from_config(config)
            except (ExportError, ShapeError) as error:
                self.shape_error = str(error)
        self._rechoose()

    def set_shape(self, shape: ModelShape, max_length: int | None = None) -> None:
        """A model's shape without a run (a model the user plans to train: the sizes before the training)."""
        self.shape, self.shape_error, self.max_length = shape, "", max_length
        self._rechoose()

    # --- the context and the type -------------------------------------------------------------------------------
    @property
    def context(self) -> int:
        return self._context or default_context(self.max_length)

    def set_context(self, context: int | None) -> None:
        """The context the user picks (None: the default, twice the run's max_length, at least 2048)."""
        self._context = context
        self._rechoose()

    @property
    def gguf_type(self) -> str:
        """The type to export: the user's choice, else the preselection (the best type that fits), else f16."""
        if self._gguf_type is not None:
            return self._gguf_type
        return self.choice.chosen if self.choice is not None else "f16"

    def set_gguf_type(self, gguf_type: str | None) -> None:
        """The user's choice; None goes back to the preselection."""
        if gguf_type is not None and self.choice is not None and not self.choice.fit(gguf_type).available:
            raise ValueError(f"{gguf_type} needs llama.cpp's quantizer, which is not installed")
        self._gguf_type = gguf_type
        self._notify()

    @property
    def preselected(self) -> bool:
        return self._gguf_type is None

    def _rechoose(self) -> None:
        self.choice = (choose_gguf_type(self.shape, self.context, self.budget, k_quants=self.k_quants)
                       if self.shape is not None else None)
        if self._gguf_type is not None and self.choice is not None and not self.choice.fit(self._gguf_type).available:
            self._gguf_type = None
        self._notify()

    def why(self) -> str:
        """Why the type is the one it is, in a sentence."""
        if self.choice is None:
            return self.shape_error or "Choose a run to size its GGUF types for this machine."
        if self.preselected:
            return f"Preselected: {self.choice.reason}."
        from studio.core.system.units import format_bytes

        fit = self.choice.fit(self._gguf_type)
        return (f"Chosen by you: {fit.info.label} needs {format_bytes(fit.run_bytes, style='memory')} "
                f"{'and fits' if fit.fits else 'and does not fit'} {self.budget.describe()}; the best type that fits "
                f"is {self.choice.fit(self.choice.chosen).info.label}.")

    def rows(self) -> list[tuple[str, str, str, bool, bool]]:
        """The type list as shown: (type, label, sizes in words, fits, available)."""
        if self.choice is None:
            return []
        return [(t.gguf_type, t.info.label, t.line().split(": ", 1)[1], t.fits, t.available) for t in self.choice.types]

    # --- verification -----------------------------------------------------------------------------------------
    def set_verification(self, result: Any = None, error: str = "") -> None:
        """A completed check's result, or why the check could not run (then no score is shown: error only)."""
        self.verification, self.verify_error = (None, error) if error else (result, "")
        self._notify()

    def verification_text(self) -> str:
        if self.verify_error:
            return f"The check could not run, so there is no score: {self.verify_error}"
        if self.verification is None or self.verification.status != "completed":
            return ""
        return self.verification.headline()

    # --- Ollama ---------------------------------------------------------------------------------------------------
    @staticmethod
    def ollama_missing(modelfile: Path, name: str) -> str:
        """'' where the `ollama` command is installed; else how to install it and the one command to run then."""
        from studio.core.export.ollama_server import create_command, find_ollama, ollama_install_hint

        if find_ollama():
            return ""
        return (f"Ollama is not installed here. {ollama_install_hint()}. Then, in {Path(modelfile).parent}, run: "
                + " ".join(create_command(name, modelfile)))

    @staticmethod
    def ollama_errors() -> tuple[type[Exception], ...]:
        """What creating and checking a model in Ollama raises when a step cannot run (said, no score)."""
        from studio.core.eval.ollama_api import OllamaError
        from studio.core.eval.verify import ExportCheckError
        from studio.core.export.staging import ExportError

        return OllamaError, ExportCheckError, ExportError

    @staticmethod
    def ollama_has(name: str) -> bool:
        """Whether `ollama list` already names a model `name` (replacing it needs the user's yes)."""
        from studio.core.export.ollama_server import listed_models

        tagged = name if ":" in name else name + ":latest"
        return tagged in {m if ":" in m else m + ":latest" for m in listed_models()}

    @staticmethod
    def create_in_ollama(name: str, modelfile: Path, source: Path | None, *, replace: bool, task: Any) -> Any:
        """`ollama create`, then (for an export of a run) the run's cases answered through Ollama's chat API and
        compared with the trained model's: the eval.verify.ExportVerification, or Ollama's own last words when there
        is no run to compare with. OllamaError / ExportCheckError when either step cannot run (no score)."""
        from studio.core.eval.verify import run_check
        from studio.core.export.ollama_server import create_in_ollama

        said = create_in_ollama(name, modelfile, replace=replace)
        if source is None:
            return said
        from studio.core.system.tasks import reporting

        gguf = Path(modelfile).with_suffix(".gguf")
        as_fraction = reporting(task, lambda done, total, message: task.progress(done / max(total, 1), message))
        return run_check(source, gguf, engine="ollama", ollama_model=name, task=as_fraction)
