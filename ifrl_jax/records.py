"""Instruction records: the reference schema, validation on load, reading and writing.

A record is a task prompt plus K constraints, each an instruction id, its verifier kwargs and its
natural-language text (../shared/DESIGN.md, point 1). On disk it uses the reference schema of the
public verl-if data, one JSON object per line (or one Parquet row)::

    {"prompt": str, "instruction_id_list": [id, ...], "kwargs": [dict, ...],
     "constraint": [text, ...], "seed": str (optional), "level": int (optional),
     "answer": str (math items only), "source": str (optional), ...}

The prompt is built upstream as ``seed + "".join(text + ". " for text in constraint)``, verbatim:
constraint texts that already end with "." or "\\n" still get ". " appended. ``seed`` is optional;
when absent it is derived by removing exactly that suffix from the end of the prompt (this works
on all 1,319 reference records). ``constraint`` may be empty (IFEval's 541 prompts carry no
texts): such records load, but have no seed and cannot be split into levels
(``curriculum.decompose``).

Math/science items (upstream ids ``light`` / ``light_choice``) are records of kind ``"math"`` with
no constraints and a gold ``answer``. Their gold answer is read from the ``answer`` field, else
``ground_truth``, else (the upstream layout) ``constraint[0]``; they are written back with
``instruction_id_list == ["light"]`` and an ``answer`` field.

Every other top-level field (``key``, ``chosen``, ``rejected``, ...) is kept verbatim in
``Record.meta`` and written back.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from ifrl_jax.errors import UserError

KINDS = ("if", "math")
MATH_IDS = ("light", "light_choice")
ON_ERROR = ("strict", "skip")
# Fields that map onto Record attributes, per kind; every other field goes to `meta`.
_COMMON_FIELDS = frozenset({"prompt", "instruction_id_list", "kwargs", "constraint", "level"})
_IF_FIELDS = _COMMON_FIELDS | {"seed", "source"}
_MATH_FIELDS = _COMMON_FIELDS | {"answer", "ground_truth", "source"}
MAX_LOGGED_ERRORS = 5


class RecordError(UserError):
    """A record that does not follow the schema; the message names file, line and field."""


@dataclasses.dataclass(frozen=True)
class Constraint:
    """One constraint of an instruction.

    Attributes:
      id: instruction id, e.g. ``"punctuation:no_comma"`` (hard) or ``"style:open_ended"`` (soft).
      kwargs: verifier kwargs, normalized by ``verifiers.check_spec`` (no None values).
      text: the constraint's natural-language text, or None when the record has none (IFEval).
    """

    id: str
    kwargs: dict[str, Any]
    text: str | None


@dataclasses.dataclass(frozen=True)
class Record:
    """One instruction (or one curriculum level of it), or one math item.

    Attributes:
      prompt: the user prompt, exactly as sent to the chat template.
      constraints: the constraints in prompt order (empty for math items).
      seed: the task without constraints, or None when unknown (no constraint texts).
      kind: ``"if"`` (instruction following) or ``"math"`` (scored by ``\\boxed{}`` match).
      answer: gold answer of a math item, else None.
      level: k for the curriculum level L_k of a decomposed record, else None.
      source: where the instruction came from, ``"file:line"`` (``"file:row N"`` for Parquet);
        all levels of one instruction share it, which pairs L_k with L_{k-1}.
      meta: other top-level fields of the input row, kept verbatim (``key``, ``chosen``, ...).
    """

    prompt: str
    constraints: tuple[Constraint, ...]
    seed: str | None = None
    kind: str = "if"
    answer: str | None = None
    level: int | None = None
    source: str = ""
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def instruction_ids(self) -> tuple[str, ...]:
        """The constraint ids, in order."""
        return tuple(c.id for c in self.constraints)


@dataclasses.dataclass
class LoadResult:
    """Records read from one or more files, and what was skipped.

    Attributes:
      records: the valid records, in file order.
      skipped: how many rows were skipped (always 0 under ``on_error="strict"``).
      reasons: skipped-row count per reason (the field and the kind of error).
      errors: the first few full error messages, for the log.
      seeds_derived: records whose seed was derived from the prompt (no ``seed`` field).
      seeds_missing: records with no seed (no constraint texts, or a prompt that does not end
        with the constraint texts); these cannot be split into levels.
    """

    records: list[Record]
    skipped: int = 0
    reasons: Counter = dataclasses.field(default_factory=Counter)
    errors: list[str] = dataclasses.field(default_factory=list)
    seeds_derived: int = 0
    seeds_missing: int = 0


def check_on_error(on_error: str) -> None:
    """Raises UserError unless `on_error` is one of ON_ERROR ("strict", "skip")."""
    if on_error not in ON_ERROR:
        raise UserError(f"on_error={on_error!r}; expected one of {ON_ERROR}")


# ----------------------------------------------------------------------------- prompt building


def constraint_suffix(texts: Sequence[str]) -> str:
    """The part of a prompt that the constraint texts make: each text followed by ". ".

    Args:
      texts: constraint texts, in order.

    Returns:
      ``"".join(t + ". " for t in texts)``, the upstream construction.
    """
    return "".join(t + ". " for t in texts)


def build_prompt(seed: str, texts: Sequence[str]) -> str:
    """Builds a prompt as the reference data does: the seed task, then each text plus ". ".

    Args:
      seed: the seed task (upstream: instruction + " " + input, so it usually ends in a space).
      texts: the constraint texts to append, in order.

    Returns:
      The prompt string.
    """
    return seed + constraint_suffix(texts)


def derive_seed(prompt: str, texts: Sequence[str]) -> str | None:
    """Recovers the seed task by removing the constraint texts from the end of the prompt.

    Args:
      prompt: a full prompt.
      texts: its constraint texts, in order.

    Returns:
      The seed, or None when there are no texts or the prompt does not end with them.
    """
    if not texts:
        return None
    suffix = constraint_suffix(texts)
    if not prompt.endswith(suffix):
        return None
    return prompt[: len(prompt) - len(suffix)]


# ----------------------------------------------------------------------------- validation


def _check_spec(instruction_id: str, kwargs: dict[str, Any], where: str, i: int) -> dict[str, Any]:
    # Imported here so that records can be built and decomposed without the verifier stack.
    from ifrl_jax import verifiers

    if not (verifiers.is_hard(instruction_id) or verifiers.is_soft(instruction_id)):
        field = f"instruction_id_list[{i}]"
    else:
        field = f"kwargs[{i}]"
    return verifiers.check_spec(instruction_id, kwargs, where=f"{where}: field {field!r}")


def _is_hard(instruction_id: str) -> bool:
    from ifrl_jax import verifiers

    return verifiers.is_hard(instruction_id)


def _fail(where: str, field: str, message: str) -> RecordError:
    return RecordError(f"{where}: field {field!r}: {message}")


def _string_list(row: dict[str, Any], name: str, where: str, *, required: bool) -> list[str]:
    value = row.get(name)
    if value is None:
        if required:
            raise _fail(where, name, "missing (expected a list of strings)")
        return []
    if not isinstance(value, list | tuple):
        raise _fail(where, name, f"expected a list of strings, got {type(value).__name__}")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise _fail(where, f"{name}[{i}]", f"expected a string, got {type(item).__name__}")
    return list(value)


def _optional_str(row: dict[str, Any], name: str, where: str) -> str | None:
    value = row.get(name)
    if value is not None and not isinstance(value, str):
        raise _fail(where, name, f"expected a string, got {type(value).__name__}")
    return value


def parse_record(row: Any, *, where: str) -> Record:
    """Validates one row of the reference schema and builds a Record.

    Args:
      row: the decoded JSON object (or Parquet row as a dict).
      where: location for error messages and ``Record.source``, e.g. ``"train.jsonl:12"``.

    Returns:
      The Record, with kwargs normalized by ``verifiers.check_spec`` (None values, which Parquet
      adds for absent keys, removed) and the seed given or derived.

    Raises:
      RecordError: the row does not follow the schema (the message names where and the field).
      verifiers.SpecError: an unknown instruction id or bad kwargs (the message names where).
    """
    if not isinstance(row, dict):
        raise RecordError(f"{where}: expected a JSON object, got {type(row).__name__}")
    prompt = row.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise _fail(where, "prompt", "missing or not a non-empty string")
    ids = _string_list(row, "instruction_id_list", where, required=True)
    if not ids:
        raise _fail(where, "instruction_id_list", "empty; a record needs at least one constraint")
    texts = _string_list(row, "constraint", where, required=False)
    source = _optional_str(row, "source", where) or where
    level = row.get("level")
    if isinstance(level, float) and level.is_integer():
        level = int(level)  # pandas writes nullable int columns as floats
    if level is not None and (isinstance(level, bool) or not isinstance(level, int) or level < 1):
        raise _fail(where, "level", f"expected a positive integer, got {level!r}")

    if any(i in MATH_IDS for i in ids):
        if len(ids) != 1:
            raise _fail(where, "instruction_id_list", f"math ids {MATH_IDS} cannot be combined")
        answer = _optional_str(row, "answer", where) or _optional_str(row, "ground_truth", where)
        if answer is None and texts:
            answer = texts[0]  # upstream layout: the gold answer is constraint[0]
        if not answer or not answer.strip():
            raise _fail(where, "answer", "a math item needs a non-empty gold answer")
        meta = {k: v for k, v in row.items() if k not in _MATH_FIELDS}
        return Record(prompt, (), None, "math", answer, level, source, meta)

    raw_kwargs = row.get("kwargs")
    if raw_kwargs is None:
        raw_kwargs = [{} for _ in ids]
    if not isinstance(raw_kwargs, list | tuple) or len(raw_kwargs) != len(ids):
        raise _fail(where, "kwargs", f"expected a list of {len(ids)} objects (one per id)")
    if texts and len(texts) != len(ids):
        raise _fail(
            where, "constraint", f"{len(texts)} texts for {len(ids)} instruction ids (or give [])"
        )
    constraints = []
    for i, (cid, kw) in enumerate(zip(ids, raw_kwargs)):
        if kw is None:
            kw = {}
        if not isinstance(kw, dict):
            raise _fail(where, f"kwargs[{i}]", f"expected an object, got {type(kw).__name__}")
        kw = {k: v for k, v in kw.items() if v is not None}
        norm = _check_spec(cid, kw, where, i)
        constraints.append(Constraint(cid, norm, texts[i] if texts else None))
        if not texts and not _is_hard(cid):
            why = "the reward model scores a soft constraint from its text"
            raise _fail(
                where,
                "constraint",
                f"soft id {cid!r} has no text ({why}; give 'constraint': one text per id)",
            )

    seed = _optional_str(row, "seed", where)
    if seed is not None:
        if not texts:
            raise _fail(where, "seed", "given, but the record has no constraint texts")
        if build_prompt(seed, texts) != prompt:
            raise _fail(
                where, "seed", "prompt != seed + each constraint text + '. ' (the reference build)"
            )
    else:
        seed = derive_seed(prompt, texts)
    if level is not None and level != len(constraints):
        raise _fail(where, "level", f"level {level} but {len(constraints)} constraints")
    meta = {k: v for k, v in row.items() if k not in _IF_FIELDS}
    return Record(prompt, tuple(constraints), seed, "if", None, level, source, meta)


# ----------------------------------------------------------------------------- reading files


def _iter_jsonl(path: str) -> Iterator[tuple[str, Any]]:
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue  # blank lines are not records
            where = f"{path}:{lineno}"
            try:
                yield where, json.loads(line)
            except json.JSONDecodeError as e:
                yield where, RecordError(f"{where}: not valid JSON ({e.msg} at column {e.colno})")


def _iter_parquet(path: str) -> Iterator[tuple[str, Any]]:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    for i, row in enumerate(table.to_pylist()):
        yield f"{path}:row {i}", row


def iter_rows(path: str) -> Iterator[tuple[str, Any]]:
    """Yields ``(where, row)`` for each row of a JSONL or Parquet file.

    Args:
      path: a ``.jsonl``/``.json`` file (one object per line) or a ``.parquet`` file.

    Returns:
      An iterator of ``(location, decoded row)``; ``location`` is ``"path:line"`` (1-based) for
      JSONL and ``"path:row i"`` (0-based row index) for Parquet. A line that is not JSON yields
      a RecordError instead of a row.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"instruction file {path!r} does not exist")
    if path.endswith(".parquet"):
        return _iter_parquet(path)
    if path.endswith((".jsonl", ".json")):
        return _iter_jsonl(path)
    raise UserError(f"{path!r}: unknown file type (expected .jsonl, .json or .parquet)")


def _reason(err: Exception) -> str:
    msg = str(err)
    if "field '" in msg:
        field = msg.split("field '", 1)[1].split("'", 1)[0]
        field = field.split("[", 1)[0]
        return f"{type(err).__name__} in {field}"
    return type(err).__name__


def load_records(paths: str | Sequence[str], *, on_error: str = "strict") -> LoadResult:
    """Reads and validates instruction records from JSONL or Parquet files.

    Args:
      paths: one path or several (read in order).
      on_error: ``"strict"`` raises on the first bad row; ``"skip"`` skips bad rows, counts them
        per reason and logs the count and the first few errors (nothing is dropped silently).

    Returns:
      A LoadResult with the records and the skip counts.

    Raises:
      RecordError / verifiers.SpecError (both ValueError): a bad row under ``"strict"``.
    """
    check_on_error(on_error)
    paths = [paths] if isinstance(paths, str) else list(paths)
    result = LoadResult(records=[])
    for path in paths:
        for where, row in iter_rows(path):
            try:
                if isinstance(row, Exception):
                    raise row
                record = parse_record(row, where=where)
            except ValueError as e:
                if on_error == "strict":
                    raise
                result.skipped += 1
                result.reasons[_reason(e)] += 1
                if len(result.errors) < MAX_LOGGED_ERRORS:
                    result.errors.append(str(e))
                continue
            if record.kind == "if":
                if record.seed is None:
                    result.seeds_missing += 1
                elif not (isinstance(row, dict) and row.get("seed") is not None):
                    result.seeds_derived += 1
            result.records.append(record)
    if result.skipped:
        logging.warning(
            "Skipped %d invalid records from %s: %s. First errors: %s",
            result.skipped,
            paths,
            dict(result.reasons),
            result.errors,
        )
    logging.info(
        "Loaded %d records from %s (%d seeds derived from the prompt, %d without seed).",
        len(result.records),
        paths,
        result.seeds_derived,
        result.seeds_missing,
    )
    return result


# ----------------------------------------------------------------------------- writing


def record_to_row(record: Record) -> dict[str, Any]:
    """Converts a Record to a row of the reference schema (the inverse of ``parse_record``).

    Args:
      record: the record.

    Returns:
      A JSON-serializable dict: the reference fields, then ``seed``/``level``/``source``/
      ``answer`` where set, then ``meta``.
    """
    if record.kind == "math":
        row: dict[str, Any] = {
            "prompt": record.prompt,
            "instruction_id_list": ["light"],
            "kwargs": [{}],
            "constraint": [],
            "answer": record.answer,
        }
    else:
        texts = [c.text for c in record.constraints]
        row = {
            "prompt": record.prompt,
            "instruction_id_list": [c.id for c in record.constraints],
            "kwargs": [dict(c.kwargs) for c in record.constraints],
            "constraint": texts if all(t is not None for t in texts) else [],
        }
        if record.seed is not None:
            row["seed"] = record.seed
    if record.level is not None:
        row["level"] = record.level
    row["source"] = record.source
    row.update(record.meta)
    return row


def write_jsonl(records: Iterable[Record], path: str) -> int:
    """Writes records as JSONL in the reference schema.

    Args:
      records: the records.
      path: output file (parent directories are created).

    Returns:
      The number of records written.
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record_to_row(record), ensure_ascii=False) + "\n")
            n += 1
    return n
