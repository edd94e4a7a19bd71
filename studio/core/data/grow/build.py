"""The grown rows of a recipe, in memory: the held-out originals drawn first, then for every training original
(and every kept paraphrase of one) its value variants, each row with its provenance.

Nothing of a held-out conversation reaches a training row: its variants are not made, and its identifiers (every
slot value it carries) are excluded from the new values and its names from the pools. Every random choice is
seeded by the recipe's seed and the original's content hash, so one conversation's rows do not change when
another is added or dropped.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass, field
from typing import Any

from studio.core.data.grow.recipe import Recipe, slot_shape
from studio.core.data.grow.slots import Slot, SlotReport, default_shape, detect
from studio.core.data.grow.vary import NoNewValue, apply, new_value
from studio.core.data.split import content_hash, held_out_originals

GROWN_KEY = "grown"
"""The key each written row carries its provenance under (readers ignore it)."""


@dataclass
class Row:
    id: str
    """"<original hash>:original", ":v1", ":p1", ":p1v2" — what the recipe's drop list names."""
    messages: list[dict[str, Any]]
    original: str
    variant: str
    replaced: dict[str, list[Any]] = field(default_factory=dict)
    paraphrased: list[int] = field(default_factory=list)

    @property
    def generated(self) -> bool:
        return self.variant != "original"

    def record(self, recipe_name: str) -> dict[str, Any]:
        out: dict[str, Any] = {"messages": self.messages}
        provenance: dict[str, Any] = {"original": self.original, "recipe": recipe_name, "variant": self.variant}
        if self.replaced:
            provenance["replaced"] = self.replaced
        if self.paraphrased:
            provenance["paraphrased_turns"] = self.paraphrased
        out[GROWN_KEY] = provenance
        return out


@dataclass
class Grown:
    train: list[Row]
    held_out: list[Row]
    held_out_hashes: list[str]
    slots: dict[str, SlotReport]
    """Per original's hash: what detection found."""
    problems: list[str]
    """Values not varied and why, one line each ("row 3: phone='0532…': not found in the user's words")."""

    def slot_summary(self) -> dict[str, dict[str, Any]]:
        """Per argument: its kind, an example value, and in how many conversations it was found."""
        summary: dict[str, dict[str, Any]] = {}
        for report in self.slots.values():
            for slot in report.slots:
                entry = summary.setdefault(slot.key, {"kind": slot.kind, "example": slot.value, "count": 0})
                entry["count"] += 1
        return summary


def conversation(example: dict[str, Any]) -> list[dict[str, Any]]:
    return [dict(m) for m in example.get("messages") or []]


def _pools(recipe: Recipe, reports: dict[str, SlotReport], held_out: set[str]) -> dict[str, list[str]]:
    held_names = {str(s.value) for h in held_out for s in reports[h].slots if s.kind == "name"}
    pools: dict[str, list[str]] = {}
    for h, report in reports.items():
        for slot in report.slots:
            if slot.kind == "name" and h not in held_out:
                pools.setdefault(slot.key, [])
                if str(slot.value) not in pools[slot.key]:
                    pools[slot.key].append(str(slot.value))
    pools.update({key: list(names) for key, names in recipe.pools.items()})
    return {key: [n for n in sorted(names) if n not in held_names] for key, names in pools.items()}


def _variants(base: list[dict[str, Any]], slots: list[Slot], recipe: Recipe, rng: random.Random,
              avoid: set[str], pools: dict[str, list[str]]) -> list[tuple[list[dict[str, Any]], dict]]:
    out = []
    used: set[str] = set()
    for _ in range(recipe.variants):
        values = {}
        for slot in slots:
            shape = slot_shape(recipe.slots.get(slot.key, "")) or default_shape(slot.kind, slot.value)
            # A name comes from its pool (held-out names already left out of it); other values avoid every real
            # conversation's.
            off_limits = used if slot.kind == "name" else avoid | used
            try:
                values[slot.key] = new_value(slot, shape, rng, avoid=off_limits, pool=pools.get(slot.key, []))
            except NoNewValue:
                continue
            used.add(str(values[slot.key]))
        if values:
            variant = apply(base, slots, values)
            out.append((variant.messages, variant.replaced))
    return out


def grow(recipe: Recipe, examples: list[dict[str, Any]]) -> Grown:
    """The rows `recipe` grows from `examples` (the source's normalised rows), reproducibly."""
    originals = [conversation(e) for e in examples]
    hashes = [content_hash({"messages": m}) for m in originals]
    held = set(recipe.held_out) if recipe.held_out is not None else \
        held_out_originals(hashes, recipe.held_out_fraction, recipe.seed)
    kinds = recipe.kinds()
    reports = {h: detect(m, kinds) for h, m in zip(hashes, originals)}
    # Every value an original carries is off limits: a variant never names a held-out customer (the leak) nor
    # another real one.
    avoid = {str(s.value) for report in reports.values() for s in report.slots}
    pools = _pools(recipe, reports, held)
    paraphrases: dict[str, list] = {}
    for p in recipe.paraphrases:
        paraphrases.setdefault(p.original, []).append(p)
    dropped = set(recipe.drop)
    train: list[Row] = []
    held_rows: list[Row] = []
    problems: list[str] = []
    seen: set[str] = set()
    for row_number, (h, messages) in enumerate(zip(hashes, originals), start=1):
        if h in held:
            held_rows.append(Row(f"{h}:original", messages, h, "original"))
            continue
        problems += [f"row {row_number}: {line}" for line in reports[h].untied]
        if h in seen:  # a duplicate conversation stays as the data has it, and grows once
            train.append(Row(f"{h}:original", messages, h, "original"))
            continue
        seen.add(h)
        rng = random.Random(f"{recipe.seed}:{h}")
        bases = [("", messages, reports[h].slots, [])]
        for number, p in enumerate(paraphrases.get(h, []), start=1):
            if not 0 <= p.turn < len(messages) or messages[p.turn].get("role") != "user":
                problems.append(f"row {row_number}: paraphrase {number} names turn {p.turn}, not a user turn")
                continue
            said = copy.deepcopy(messages)
            said[p.turn]["content"] = p.text
            bases.append((f"p{number}", said, detect(said, kinds).slots, [p.turn]))
        for tag, base, slots, turns in bases:
            rows = [(tag or "original", base, {})]
            rows += [(f"{tag}v{k}", m, r) for k, (m, r) in enumerate(
                _variants(base, slots, recipe, rng, avoid, pools), start=1)]
            for variant, m, replaced in rows:
                row = Row(f"{h}:{variant}", m, h, variant, replaced, turns)
                if row.id not in dropped:
                    train.append(row)
    return Grown(train, held_rows, sorted(held), reports, problems)


__all__ = ["GROWN_KEY", "Row", "Grown", "grow", "conversation"]
