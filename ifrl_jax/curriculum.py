"""Curriculum levels: a K-constraint instruction split into L_1..L_K (L_k keeps c_1..c_k).

L_k's prompt is the seed task plus the first k constraint texts, built as the reference data
builds prompts (``records.build_prompt``), so L_K's prompt is the record's own. The levels of one
instruction share ``source``, which pairs L_k with L_{k-1} (``pairs.instruction_levels``).
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from collections.abc import Iterable, Sequence

from ifrl_jax.records import (
    MAX_LOGGED_ERRORS,
    LoadResult,
    Record,
    RecordError,
    build_prompt,
    check_on_error,
)


def decompose(record: Record) -> list[Record]:
    """Splits a K-constraint record into its curriculum levels L_1..L_K.

    L_k keeps the first k constraints; its prompt is ``build_prompt(seed, texts[:k])``, so L_K's
    prompt equals the record's own. All levels share ``source`` and ``seed``; only L_K keeps
    ``meta`` (e.g. the reference ``chosen``/``rejected`` responses, which answer L_K and L_{K-1}).
    Math items are returned unchanged (they have no levels).

    Args:
      record: an instruction record with a seed.

    Returns:
      ``[L_1, ..., L_K]``, or ``[record]`` for a math item.

    Raises:
      RecordError: the record has no seed (no constraint texts, or a prompt that does not end
        with them), so its levels cannot be built.
    """
    if record.kind == "math":
        return [record]
    if record.seed is None:
        raise RecordError(
            f"{record.source}: field 'constraint': cannot split into levels: the record has no "
            "constraint texts or its prompt does not end with them (give a 'seed' field)"
        )
    texts = [c.text for c in record.constraints]
    k_max = len(record.constraints)
    levels = []
    for k in range(1, k_max + 1):
        levels.append(
            dataclasses.replace(
                record,
                prompt=build_prompt(record.seed, texts[:k]),
                constraints=record.constraints[:k],
                level=k,
                meta=record.meta if k == k_max else {},
            )
        )
    return levels


def decompose_all(records: Sequence[Record], *, on_error: str = "strict") -> LoadResult:
    """Decomposes every record into levels (see ``decompose``).

    Args:
      records: the records.
      on_error: ``"strict"`` raises on a record without seed; ``"skip"`` skips and counts it.

    Returns:
      A LoadResult whose ``records`` are the levels, in record order (L_1..L_K of the first
      record, then of the second, ...), with the skip counts.
    """
    check_on_error(on_error)
    result = LoadResult(records=[])
    for record in records:
        try:
            result.records.extend(decompose(record))
        except RecordError as e:
            if on_error == "strict":
                raise
            result.skipped += 1
            result.reasons["no seed (cannot build levels)"] += 1
            if len(result.errors) < MAX_LOGGED_ERRORS:
                result.errors.append(str(e))
    if result.skipped:
        logging.warning(
            "Skipped %d records that cannot be split into levels: %s",
            result.skipped,
            result.errors,
        )
    return result


def level_counts(records: Iterable[Record]) -> dict[str, int]:
    """Counts records per level (``"L1"``, ``"L2"``, ...; ``"none"`` for records without level).

    Args:
      records: the records.

    Returns:
      A dict from level name to count, sorted by level.
    """
    counts = Counter(f"L{r.level}" if r.level is not None else "none" for r in records)
    return dict(sorted(counts.items(), key=lambda kv: (kv[0] == "none", len(kv[0]), kv[0])))
