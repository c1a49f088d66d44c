"""The levels job: instruction records (JSONL/Parquet) -> curriculum levels L1..LK as JSONL.

`launch/build_data.py` runs it; the GRPO pipeline writes its own levels file
(`train.reward_model_stage`) from the same library calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ifrl_jax import curriculum, records


def run(
    input_paths: str | Sequence[str], output_path: str, *, on_error: str = "strict"
) -> dict[str, Any]:
    """Loads and validates records, splits them into levels and writes the levels as JSONL.

    Args:
      input_paths: input JSONL/Parquet path(s) in the reference schema, read in order.
      output_path: output JSONL path (parent directories are created).
      on_error: "strict" (a bad record is a `records.RecordError` naming file:line) or "skip"
        (skip, count and log bad records and records that cannot be split).

    Returns:
      The summary: `records_in` (valid records read), `records_out`, `per_level` counts,
      `skipped` (invalid rows plus records that cannot be split), `skip_reasons`,
      `seeds_derived`, `output`.
    """
    loaded = records.load_records(input_paths, on_error=on_error)
    levels = curriculum.decompose_all(loaded.records, on_error=on_error)
    n = records.write_jsonl(levels.records, output_path)
    return {
        "records_in": len(loaded.records),
        "records_out": n,
        "per_level": curriculum.level_counts(levels.records),
        "skipped": loaded.skipped + levels.skipped,
        "skip_reasons": dict(loaded.reasons + levels.reasons),
        "seeds_derived": loaded.seeds_derived,
        "output": output_path,
    }
