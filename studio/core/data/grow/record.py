"""A grown dataset on disk and the record that keeps its held-out split honest.

`X.grow.toml` (the recipe) grows into three files beside it: `X.grown.jsonl` (the training rows: the training
originals and their variants, each with its provenance under "grown"), `X.held-out.jsonl` (the held-out originals,
unchanged: the eval scores originals only) and `X.grown.toml` (the record: the recipe as run, with the held-out
originals by content hash and the sha256 of what was written). A run trained on `X.grown.jsonl` copies the record
into its folder, and a run that would split the grown rows by a fraction instead of evaluating on the held-out
file is refused: a fraction of grown rows evaluates on variants of rows it trained on.

The files follow the export rule: each is written new, or replaces only what an earlier grow wrote (its rows
carry "grown", the record says so), never a user's file.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from studio.core.data.grow.build import GROWN_KEY, Grown, grow
from studio.core.data.grow.recipe import RECIPE_SUFFIX, Recipe, load_recipe, recipe_text
from studio.core.data.issues import DataError

GROWN_SUFFIX = ".grown.jsonl"
HELD_OUT_SUFFIX = ".held-out.jsonl"
RECORD_SUFFIX = ".grown.toml"
RUN_RECORD = "grow.toml"
"""The record's name in a run folder."""
WRITER = "finetune-studio data grow"


@dataclass(frozen=True)
class GrowOutputs:
    train: Path
    held_out: Path
    record: Path


def stem_of(recipe_path: Path) -> str:
    name = recipe_path.name
    for suffix in (RECIPE_SUFFIX, RECORD_SUFFIX, ".toml"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return recipe_path.stem


def outputs_of(recipe_path: str | Path) -> GrowOutputs:
    path = Path(recipe_path)
    stem = stem_of(path)
    return GrowOutputs(path.with_name(stem + GROWN_SUFFIX), path.with_name(stem + HELD_OUT_SUFFIX),
                       path.with_name(stem + RECORD_SUFFIX))


def source_path(recipe: Recipe, recipe_path: str | Path) -> Path:
    source = Path(recipe.source).expanduser()
    return source if source.is_absolute() else Path(recipe_path).parent / source


def _ours(path: Path) -> bool:
    """An earlier grow's output, which a new grow may replace."""
    try:
        if path.name.endswith(RECORD_SUFFIX):
            return tomllib.loads(path.read_text(encoding="utf-8")).get("record", {}).get("written_by") == WRITER
        with path.open(encoding="utf-8") as handle:
            first = handle.readline()
        return not first.strip() or GROWN_KEY in json.loads(first)
    except (OSError, ValueError, UnicodeDecodeError):
        return False


def check_outputs(outputs: GrowOutputs, source: Path) -> None:
    """Refuse, naming it, an output that is the source or a file the user made (the export rule)."""
    for path in (outputs.train, outputs.held_out, outputs.record):
        if path.resolve() == source.resolve():
            raise DataError(f"{path}: is the source being grown; name the recipe otherwise")
        if path.exists() and not (path.is_file() and _ours(path)):
            raise DataError(f"{path}: exists and was not written by a grow; move it or name the recipe otherwise")


def _jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def _write(path: Path, text: str) -> str:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def write_grown(recipe: Recipe, recipe_path: str | Path, grown: Grown) -> GrowOutputs:
    """Write the three files beside the recipe; the record holds the held-out hashes, so a re-run reproduces the
    same split even if the source gains rows."""
    outputs = outputs_of(recipe_path)
    check_outputs(outputs, source_path(recipe, recipe_path))
    name = Path(recipe_path).name
    train = _write(outputs.train, _jsonl([row.record(name) for row in grown.train]))
    held = _write(outputs.held_out, _jsonl([{"messages": row.messages,
                                             GROWN_KEY: {"original": row.original, "recipe": name,
                                                         "variant": "held-out"}} for row in grown.held_out]))
    resolved = Recipe(**{**recipe.__dict__, "held_out": list(grown.held_out_hashes)})
    import tomli_w

    record = {"record": {"written_by": WRITER, "recipe": name, "train_file": outputs.train.name,
                         "held_out_file": outputs.held_out.name, "train_rows": len(grown.train),
                         "held_out_rows": len(grown.held_out),
                         "generated_rows": sum(row.generated for row in grown.train),
                         "sha256": {outputs.train.name: train, outputs.held_out.name: held}}}
    _write(outputs.record, recipe_text(resolved) + "\n" + tomli_w.dumps(record))
    return outputs


def read_recipe_source(recipe: Recipe, recipe_path: str | Path) -> list[dict[str, Any]]:
    """The source's rows as training reads them (every bad row an error naming it)."""
    from studio.core.data.loading import load_data, require_trainable

    data = require_trainable(load_data(source_path(recipe, recipe_path), "auto"), skip_bad_rows=False)
    return list(data.examples)


def grow_recipe(recipe_path: str | Path) -> tuple[Grown, GrowOutputs]:
    """`finetune-studio data grow RECIPE.toml`: read, grow, write; the same recipe gives the same rows."""
    recipe = load_recipe(recipe_path)
    grown = grow(recipe, read_recipe_source(recipe, recipe_path))
    return grown, write_grown(recipe, recipe_path, grown)


def record_of(train_file: str | Path | None) -> Path | None:
    """The grow record of a training file written by a grow, or None for any other file."""
    if not train_file:
        return None
    path = Path(train_file)
    if not path.name.endswith(GROWN_SUFFIX):
        return None
    record = path.with_name(path.name[: -len(GROWN_SUFFIX)] + RECORD_SUFFIX)
    return record if record.is_file() else None


def split_refusal(data_settings: Any) -> str | None:
    """Why a run must not split this data by a fraction (it is grown: the fraction would evaluate on variants of
    training rows), naming the held-out file to evaluate on instead; None when nothing leaks."""
    record = record_of(data_settings.train_file)
    # data.eval_auto gives a new run a fraction after this check; it would split the grown rows the same way.
    fraction = data_settings.eval_fraction > 0 or getattr(data_settings, "eval_auto", False)
    if record is None or data_settings.eval_file or not fraction:
        return None
    held_out = record.with_name(record.name[: -len(RECORD_SUFFIX)] + HELD_OUT_SUFFIX)
    return (f"{data_settings.train_file} was grown from its originals ({record.name}); a held-out fraction of it "
            f"(data.eval_fraction, data.eval_auto) would evaluate on variants of the rows it trains on: set data.eval_file = \"{held_out}\" "
            "(the held-out originals)")


def copy_record_into(run_folder: str | Path, train_file: str | Path | None) -> Path | None:
    """Keep the grow record with the run that trained on its rows."""
    record = record_of(train_file)
    if record is None:
        return None
    target = Path(run_folder) / RUN_RECORD
    shutil.copyfile(record, target)
    return target


__all__ = ["GrowOutputs", "GROWN_SUFFIX", "HELD_OUT_SUFFIX", "RECORD_SUFFIX", "RUN_RECORD", "outputs_of",
           "write_grown", "grow_recipe", "record_of", "split_refusal", "copy_record_into", "read_recipe_source",
           "source_path", "check_outputs"]
