"""What a run states about itself: `RunRecord` read from a run folder (run.toml and events.jsonl) or from the
`finetune_studio.json` an export keeps beside its files, so a model card, a merge and chat all know how the
adapter was trained (base, quantisation, compute dtype, losses, agreement) wherever it travelled.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SUMMARY_FILE = "finetune_studio.json"

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib


@dataclass
class RunRecord:
    """The facts about a training run that a model card and an export state (not the Runs view's row, which is
    `runs.history.RunRow`)."""

    run_name: str = ""
    base_model: str = ""
    dataset: str = ""
    train_rows: int | None = None
    status: str = ""
    steps: int | None = None
    final_loss: float | None = None
    losses: list[tuple[int, float]] = field(default_factory=list)
    eval_losses: list[tuple[int, float]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    compute_dtype: str | None = None
    merged_into: str = ""
    agreement: str = ""
    """For a merged model or export: how its greedy replies compare with the trained model's (fidelity)."""
    """For a merged model: the weights the adapter was added to (see merge.merged_into_text)."""
    """The dtype the run loaded its base in (from its `started` event): how a merge re-creates that base."""

    @classmethod
    def from_run(cls, run_dir: Path) -> RunRecord:
        """Read a run directory (run.toml + events.jsonl); missing pieces stay empty."""
        from studio.core.runs.events import read_events

        run_dir = Path(run_dir)
        settings: dict[str, Any] = {}
        try:
            settings = tomllib.loads((run_dir / "run.toml").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            pass
        events = read_events(run_dir / "events.jsonl") if (run_dir / "events.jsonl").is_file() else []
        losses = [(int(e["step"]), float(e["loss"])) for e in events
                  if e.get("event") == "step" and isinstance(e.get("loss"), (int, float))]
        evals = [(int(e["step"]), float(e["eval_loss"])) for e in events
                 if e.get("event") == "eval" and isinstance(e.get("eval_loss"), (int, float))]
        finished = next((e for e in reversed(events) if e.get("event") in ("finished", "failed")), {})
        started = next((e for e in reversed(events) if e.get("event") == "started"), {})
        final_loss = finished.get("final_loss")
        if final_loss is None and losses:
            final_loss = losses[-1][1]
        return cls(
            run_name=str(settings.get("name") or run_dir.name),
            base_model=str(settings.get("model", {}).get("name_or_path", "")),
            dataset=str(settings.get("data", {}).get("train_file", "")),
            train_rows=started.get("num_train_rows"),
            status=str(finished.get("status") or ("failed" if finished.get("event") == "failed" else "")),
            steps=finished.get("step") or (losses[-1][0] if losses else None),
            final_loss=final_loss,
            losses=losses,
            eval_losses=evals,
            settings=settings,
            compute_dtype=started.get("compute_dtype"),
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> RunRecord:
        data = json.loads(text)
        data["losses"] = [tuple(p) for p in data.get("losses", [])]
        data["eval_losses"] = [tuple(p) for p in data.get("eval_losses", [])]
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def find(cls, folder: Path) -> RunRecord | None:
        """The summary kept in an exported folder, or the run's own when `folder` is a run directory."""
        folder = Path(folder)
        if (folder / SUMMARY_FILE).is_file():
            try:
                text = (folder / SUMMARY_FILE).read_text(encoding="utf-8")
                if not set(json.loads(text)) & set(cls.__dataclass_fields__):
                    return None  # only the list of files an export wrote (export.staging): no run is described
                return cls.from_json(text)
            except (OSError, ValueError, TypeError):
                return None
        if (folder / "run.toml").is_file():
            return cls.from_run(folder)
        if (folder.parent / "run.toml").is_file() and folder.name == "adapter":
            return cls.from_run(folder.parent)
        return None

    @property
    def base_model_id(self) -> str:
        """The base as others can fetch it: its Hub id when it came from the Hub (a cache snapshot path)."""
        from studio.core.system.paths import hub_id_of

        return hub_id_of(self.base_model) if self.base_model else ""

    def method(self) -> str:
        """'QLoRA (4-bit NF4 base)', 'LoRA (16-bit base)', ... from the run's settings."""
        quant = self.settings.get("quantization", {})
        lora = self.settings.get("lora", {})
        mode = quant.get("mode", "")
        kind = "DoRA" if lora.get("use_dora") else "LoRA"
        if mode == "4bit":
            return f"Q{kind} (4-bit {str(quant.get('bnb_4bit_quant_type', 'nf4')).upper()} base)"
        if mode == "8bit":
            return f"{kind} (8-bit base)"
        return f"{kind} (16-bit base)" if mode else kind
