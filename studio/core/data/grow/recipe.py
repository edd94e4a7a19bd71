"""The grow recipe: what to grow from which file, how, and what was kept — a TOML file the user can read, edit
and re-run (`finetune-studio data grow RECIPE.toml`).

    source = "calls.jsonl"        # relative to the recipe's folder
    seed = 0
    variants = 4                  # value variants of each conversation and of each kept paraphrase
    held_out_fraction = 0.2       # of the originals, drawn before anything is grown

    [slots]                       # per call argument: a kind, a mask ("05#########"), or "" to leave it alone
    phone = "05#########"

    [pools]                       # new names for a name slot (default: that argument's other values in the data)
    city = ["İzmir", "Ankara"]

    [held_out]                    # the record, by content hash (written by the grow; kept on a re-run)
    originals = ["3f2a…"]

    [[paraphrases]]               # accepted paraphrases: a re-run reproduces them without the model
    original = "3f2a…"
    turn = 1
    text = "…"

    drop = ["3f2a…:v2"]           # rows the user dropped (an original's hash and the variant)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

from studio.core.data.grow.slots import KINDS
from studio.core.data.issues import DataError

RECIPE_SUFFIX = ".grow.toml"


@dataclass
class Paraphrase:
    original: str
    turn: int
    text: str


@dataclass
class Recipe:
    source: str
    seed: int = 0
    variants: int = 4
    held_out_fraction: float = 0.2
    slots: dict[str, str] = field(default_factory=dict)
    pools: dict[str, list[str]] = field(default_factory=dict)
    held_out: list[str] | None = None
    """The held-out originals' content hashes; None until drawn."""
    paraphrases: list[Paraphrase] = field(default_factory=list)
    drop: list[str] = field(default_factory=list)

    def kinds(self) -> dict[str, str]:
        """Per argument: the kind the [slots] table gives it ("" = not a slot)."""
        return {key: slot_kind(value) for key, value in self.slots.items()}

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"source": self.source, "seed": self.seed, "variants": self.variants,
                               "held_out_fraction": self.held_out_fraction}
        if self.drop:
            out["drop"] = list(self.drop)
        if self.slots:
            out["slots"] = dict(self.slots)
        if self.pools:
            out["pools"] = {key: list(value) for key, value in self.pools.items()}
        if self.held_out is not None:
            out["held_out"] = {"originals": sorted(self.held_out)}
        if self.paraphrases:
            out["paraphrases"] = [{"original": p.original, "turn": p.turn, "text": p.text} for p in self.paraphrases]
        return out


def slot_kind(value: str) -> str:
    """The kind a [slots] entry names: a kind, or a mask (digits or code), or "" for none."""
    if value in KINDS or value == "":
        return value
    return "digits" if value.replace("#", "").isdigit() or set(value) == {"#"} else "code"


def slot_shape(value: str) -> str | None:
    """The mask a [slots] entry gives, or None when it names only a kind (the value's own shape then)."""
    return value if value and value not in KINDS else None


def _bad(path: Path, key: str, reason: str) -> DataError:
    return DataError(f"{path}: {key}: {reason}")


def load_recipe(path: str | Path) -> Recipe:
    """Read a recipe; a bad key is a DataError naming the file and the key."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise DataError(f"{path}: {error.strerror or error}") from None
    except tomllib.TOMLDecodeError as error:
        raise DataError(f"{path}: not TOML: {error}") from None
    known = {"source", "seed", "variants", "held_out_fraction", "slots", "pools", "held_out", "paraphrases", "drop"}
    for key in raw:
        if key not in known:
            raise _bad(path, key, f"unknown key (known: {', '.join(sorted(known))})")
    if not isinstance(raw.get("source"), str) or not raw["source"]:
        raise _bad(path, "source", "the data file to grow is required")
    recipe = Recipe(source=raw["source"])
    for key, kind in (("seed", int), ("variants", int), ("held_out_fraction", (int, float))):
        if key in raw:
            if not isinstance(raw[key], kind) or isinstance(raw[key], bool):
                raise _bad(path, key, f"{raw[key]!r} is not a number")
            setattr(recipe, key, raw[key])
    if not 0 <= recipe.variants <= 100:
        raise _bad(path, "variants", f"{recipe.variants} is outside 0..100")
    if not 0 <= recipe.held_out_fraction < 1:
        raise _bad(path, "held_out_fraction", f"{recipe.held_out_fraction} is outside [0, 1)")
    for name, value in raw.get("slots", {}).items():
        if not isinstance(value, str) or (value not in KINDS and value and "#" not in value):
            raise _bad(path, f"slots.{name}", f"{value!r} is not a kind ({', '.join(KINDS)}), a mask with # or \"\"")
        recipe.slots[name] = value
    for name, value in raw.get("pools", {}).items():
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise _bad(path, f"pools.{name}", "a list of names is expected")
        recipe.pools[name] = list(value)
    if "held_out" in raw:
        originals = raw["held_out"].get("originals") if isinstance(raw["held_out"], dict) else None
        if not isinstance(originals, list):
            raise _bad(path, "held_out.originals", "a list of content hashes is expected")
        recipe.held_out = [str(h) for h in originals]
    for index, item in enumerate(raw.get("paraphrases", [])):
        try:
            recipe.paraphrases.append(Paraphrase(str(item["original"]), int(item["turn"]), str(item["text"])))
        except (KeyError, TypeError, ValueError):
            raise _bad(path, f"paraphrases[{index}]", "needs original, turn and text") from None
    recipe.drop = [str(item) for item in raw.get("drop", [])]
    return recipe


def recipe_text(recipe: Recipe) -> str:
    import tomli_w

    return "# finetune-studio grow recipe: `finetune-studio data grow THIS_FILE` writes the same rows again\n" + \
        tomli_w.dumps(recipe.to_dict())


def save_recipe(recipe: Recipe, path: str | Path) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(recipe_text(recipe), encoding="utf-8")
    tmp.replace(path)
