"""IFEval- and IFBench-compatible evaluation: google-research `instruction_following_eval` formats.

Inputs: a prompts JSONL (`{"key", "prompt", "instruction_id_list", "kwargs"}` per line, other
fields ignored) and a responses JSONL (`{"prompt", "response"}` per line; responses are matched
to prompts by the exact prompt text, the last one wins). Outputs, in `output_dir`:
`eval_results_strict.jsonl` and `eval_results_loose.jsonl`, one line per prompt with
`follow_all_instructions`, `follow_instruction_list`, `instruction_id_list`, `prompt` and
`response` (keys in that order, as the reference writes them).

Accuracy: prompt-level = share of prompts with every instruction followed; instruction-level
= share of all instructions followed. Bad input (malformed JSON, a missing field, an unknown
id or bad kwargs, an IFEval prompt without a response) raises `EvalInputError` or `SpecError`, both
ValueErrors whose message starts with "file:line".

Benchmarks (`BENCHMARKS`; the prompts of each ship in ifrl_jax/assets, `DEFAULT_PROMPTS`):
  * "ifeval": IFEval's 25 ids only; a response is found by the exact prompt text.
  * "ifbench": IFBench's ids only (bare or "ifbench/"-qualified), scored by the same batch
    stage, strict and loose. As IFBench's `evaluation_lib.py` does, a response is also found by
    the stripped prompt (its GitHub copy trims three prompts' trailing spaces), and a prompt
    without a response fails all its instructions (response "") instead of raising, logged and
    counted in the report; a responses file that answers none of the prompts raises.
    The report adds IFBench's per-category table (the id's prefix before ":").
"""

from __future__ import annotations

import collections
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ifrl_jax.verifiers.batch import verify_batch_modes
from ifrl_jax.verifiers.layout import DEFAULT_TIMEOUT_S
from ifrl_jax.verifiers.spec import HARD_IDS, SpecError, check_spec, ifbench_id

logger = logging.getLogger("ifrl_jax.verifiers")

MODES = ("strict", "loose")
RESULT_FILES = {m: f"eval_results_{m}.jsonl" for m in MODES}
BENCHMARKS = ("ifeval", "ifbench")
_ASSETS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets")
DEFAULT_PROMPTS = {
    "ifeval": os.path.join(_ASSETS, "ifeval", "input_data.jsonl"),
    "ifbench": os.path.join(_ASSETS, "ifbench", "IFBench_test.jsonl"),
}
"""Benchmark -> its shipped prompts file (IFEval's 541 prompts, IFBench's 294)."""
_ID_OK = {"ifeval": lambda cid: cid in HARD_IDS, "ifbench": lambda cid: ifbench_id(cid) is not None}
_ID_WHAT = {
    "ifeval": "one of the 25 IFEval instruction ids",
    "ifbench": "an IFBench instruction id (bare or 'ifbench/'-prefixed)",
}


def check_benchmark(benchmark: str) -> None:
    """Raises ValueError unless `benchmark` is one of `BENCHMARKS`."""
    if benchmark not in BENCHMARKS:
        raise ValueError(f"benchmark={benchmark!r}; expected one of {list(BENCHMARKS)}")


class EvalInputError(ValueError):
    """An unreadable prompts or responses file; the message names the file and line."""


@dataclass(frozen=True)
class Prompt:
    """One IFEval prompt record; `line` is its 1-based line in `path`."""

    key: Any
    prompt: str
    instruction_id_list: list[str]
    kwargs: list[dict]
    path: str
    line: int


def _read_jsonl(path: str):
    """Yields (line number, object) for each non-blank line of a JSONL file."""
    try:
        f = open(path, encoding="utf-8")
    except OSError as e:
        raise EvalInputError(f"{path}: cannot open: {e}") from e
    with f:
        for n, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except ValueError as e:
                raise EvalInputError(f"{path}:{n}: malformed JSON line: {e}") from e
            if not isinstance(obj, dict):
                raise EvalInputError(f"{path}:{n}: expected a JSON object per line")
            yield n, obj


def read_prompts(path: str, *, benchmark: str = "ifeval") -> list[Prompt]:
    """Reads and validates an IFEval (or IFBench) prompts file.

    Args:
      path: JSONL with "key", "prompt", "instruction_id_list", "kwargs" per line.
      benchmark: "ifeval" (IFEval's 25 ids only) or "ifbench" (IFBench's ids only).

    Returns:
      The prompts, kwargs normalised by `check_spec`.

    Raises:
      EvalInputError: unreadable file, malformed line, missing or ill-typed field.
      SpecError: an id not of `benchmark` or bad kwargs (message names file, line, index).
    """
    check_benchmark(benchmark)
    id_ok = _ID_OK[benchmark]
    prompts = []
    for n, obj in _read_jsonl(path):
        where = f"{path}:{n}"
        ids, kwargs, text = obj.get("instruction_id_list"), obj.get("kwargs"), obj.get("prompt")
        if not isinstance(text, str):
            raise EvalInputError(f"{where}: field 'prompt' must be a string")
        if not isinstance(ids, list):
            raise EvalInputError(f"{where}: field 'instruction_id_list' must be a list")
        if kwargs is None:
            kwargs = [{} for _ in ids]
        if not isinstance(kwargs, list) or len(kwargs) != len(ids):
            raise EvalInputError(
                f"{where}: field 'kwargs' must be a list as long as 'instruction_id_list' "
                f"({len(ids)})"
            )
        normalised = []
        for i, (cid, kw) in enumerate(zip(ids, kwargs)):
            at = f"{where}: instruction_id_list[{i}]"
            if not isinstance(cid, str) or not id_ok(cid):
                raise SpecError(f"{at}: {cid!r} is not {_ID_WHAT[benchmark]}")
            normalised.append(check_spec(cid, kw, where=at))
        prompts.append(Prompt(obj.get("key"), text, list(ids), normalised, path, n))
    return prompts


def read_responses(path: str) -> dict[str, str]:
    """Reads a responses file into {prompt: response} (the last line for a prompt wins).

    Args:
      path: JSONL with "prompt" and "response" strings per line.

    Returns:
      The prompt -> response mapping.

    Raises:
      EvalInputError: unreadable file, malformed line, missing or non-string field.
    """
    out = {}
    for n, obj in _read_jsonl(path):
        for name in ("prompt", "response"):
            if not isinstance(obj.get(name), str):
                raise EvalInputError(f"{path}:{n}: field {name!r} must be a string")
        out[obj["prompt"]] = obj["response"]
    return out


def match_responses(
    prompts: Sequence[Prompt],
    responses: dict[str, str],
    *,
    benchmark: str = "ifeval",
    responses_path: str = "<responses>",
) -> tuple[list[str], list[Prompt]]:
    """Finds each prompt's response, as the benchmark's reference evaluation does.

    Args:
      prompts: from `read_prompts`.
      responses: from `read_responses`.
      benchmark: "ifeval": the exact prompt text, and a prompt without one raises. "ifbench":
        the exact text, else the stripped one; a prompt without one gets "" (fails all).
      responses_path: named in the errors.

    Returns:
      (one response per prompt, the prompts that had none).

    Raises:
      EvalInputError: "ifeval" and a prompt has no response; "ifbench" and none has one.
    """
    check_benchmark(benchmark)
    stripped = {k.strip(): v for k, v in responses.items()} if benchmark == "ifbench" else {}
    texts, missing = [], []
    for p in prompts:
        text = responses.get(p.prompt, stripped.get(p.prompt.strip()))
        if text is None:
            if benchmark == "ifeval":
                raise EvalInputError(
                    f"{p.path}:{p.line}: no response for this prompt (key {p.key!r}) in "
                    f"{responses_path}"
                )
            missing.append(p)
            text = ""
        texts.append(text)
    if missing and len(missing) == len(prompts):
        raise EvalInputError(f"{responses_path}: answers none of the {len(prompts)} prompts")
    return texts, missing


def evaluate(
    prompts: Sequence[Prompt],
    responses: dict[str, str],
    *,
    responses_path: str = "<responses>",
    pool=None,
    think_mode: str = "none",
    timeout_s: float | None = DEFAULT_TIMEOUT_S,
    benchmark: str = "ifeval",
) -> dict[str, list[dict]]:
    """Scores every prompt in strict and loose mode.

    Args:
      prompts: from `read_prompts`.
      responses: from `read_responses`.
      responses_path: named in the error for a prompt without a response.
      pool: an optional `VerifierPool`.
      think_mode: see `strip_think` ("none" for IFEval).
      timeout_s: per-check time limit.
      benchmark: how responses are matched to prompts; see `match_responses`.

    Returns:
      {mode: one output row per prompt}, rows as written to the result files.

    Raises:
      EvalInputError: a prompt has no response (see `match_responses`).
    """
    texts, missing = match_responses(
        prompts, responses, benchmark=benchmark, responses_path=responses_path
    )
    if missing:
        logger.warning(
            "%s: no response for %d of %d prompts (first: %s:%d, key %r); they fail all their "
            "instructions, as in IFBench's evaluation",
            responses_path,
            len(missing),
            len(prompts),
            missing[0].path,
            missing[0].line,
            missing[0].key,
        )
    constraints = [list(zip(p.instruction_id_list, p.kwargs)) for p in prompts]
    scored = verify_batch_modes(
        texts,
        constraints,
        modes=MODES,
        think_mode=think_mode,
        pool=pool,
        timeout_s=timeout_s,
    )
    out = {}
    for mode in MODES:
        scores, _ = scored[mode]
        rows = []
        for b, (p, text) in enumerate(zip(prompts, texts)):
            follow = [bool(s) for s in scores[b, : len(p.instruction_id_list)]]
            rows.append(
                {
                    "follow_all_instructions": all(follow),
                    "follow_instruction_list": follow,
                    "instruction_id_list": p.instruction_id_list,
                    "prompt": p.prompt,
                    "response": text,
                }
            )
        out[mode] = rows
    return out


def accuracies(rows: Sequence[dict]) -> dict[str, Any]:
    """Prompt-level, instruction-level and per-id accuracy of one mode's rows.

    Args:
      rows: output rows of one mode.

    Returns:
      {"prompt": float, "instruction": float, "per_id": {id: (n, accuracy)}}.
    """
    per_id = collections.defaultdict(lambda: [0, 0])
    for row in rows:
        for cid, ok in zip(row["instruction_id_list"], row["follow_instruction_list"]):
            per_id[cid][0] += 1
            per_id[cid][1] += int(ok)
    n_inst = sum(n for n, _ in per_id.values())
    return {
        "prompt": sum(r["follow_all_instructions"] for r in rows) / max(1, len(rows)),
        "instruction": sum(k for _, k in per_id.values()) / max(1, n_inst),
        "per_id": {cid: (n, k / n) for cid, (n, k) in sorted(per_id.items())},
    }


def summary(results: dict[str, list[dict]]) -> dict[str, float]:
    """The four headline accuracies, as in the final JSON line.

    Args:
      results: from `evaluate`.

    Returns:
      {"prompt_strict", "inst_strict", "prompt_loose", "inst_loose"}.
    """
    out = {}
    for mode in MODES:
        acc = accuracies(results[mode])
        out[f"prompt_{mode}"] = acc["prompt"]
        out[f"inst_{mode}"] = acc["instruction"]
    return out


def _category_table(results: dict[str, list[dict]]) -> list[str]:
    """IFBench's "tier 0" table: accuracy per id category (the prefix before ":")."""
    counts = {m: collections.defaultdict(lambda: [0, 0]) for m in MODES}
    for mode in MODES:
        for row in results[mode]:
            for cid, ok in zip(row["instruction_id_list"], row["follow_instruction_list"]):
                cell = counts[mode][(ifbench_id(cid) or cid).split(":")[0]]
                cell[0] += 1
                cell[1] += int(ok)
    lines = ["=" * 64, f"{'category':<48} {'n':>4} {'strict':>7} {'loose':>7}"]
    for cat, (n, k) in sorted(counts["strict"].items()):
        loose = counts["loose"][cat][1] / n
        lines.append(f"{cat:<48} {n:>4} {k / n:>7.4f} {loose:>7.4f}")
    return lines


def report(results: dict[str, list[dict]], *, categories: bool = False) -> str:
    """A human-readable report: both modes' accuracies, a per-id table, a final JSON line.

    Args:
      results: from `evaluate`.
      categories: also a per-category table (IFBench's report has one).

    Returns:
      The report text; its last line is the JSON of `summary(results)`.
    """
    acc = {m: accuracies(results[m]) for m in MODES}
    lines = []
    for mode in MODES:
        lines += [
            "=" * 64,
            f"{RESULT_FILES[mode]} Accuracy Scores:",
            f"prompt-level: {acc[mode]['prompt']:.4f}",
            f"instruction-level: {acc[mode]['instruction']:.4f}",
        ]
    lines += ["=" * 64, f"{'instruction id':<48} {'n':>4} {'strict':>7} {'loose':>7}"]
    for cid, (n, strict) in acc["strict"]["per_id"].items():
        loose = acc["loose"]["per_id"][cid][1]
        lines.append(f"{cid:<48} {n:>4} {strict:>7.4f} {loose:>7.4f}")
    if categories:
        lines += _category_table(results)
    lines.append(json.dumps(summary(results)))
    return "\n".join(lines)


def write_results(results: dict[str, list[dict]], output_dir: str) -> list[str]:
    """Writes `eval_results_strict.jsonl` and `eval_results_loose.jsonl`.

    Args:
      results: from `evaluate`.
      output_dir: created if needed.

    Returns:
      The paths written.
    """
    os.makedirs(output_dir, exist_ok=True)
    paths = []
    for mode in MODES:
        path = os.path.join(output_dir, RESULT_FILES[mode])
        with open(path, "w", encoding="utf-8") as f:
            for row in results[mode]:
                f.write(json.dumps(row) + "\n")
        paths.append(path)
    return paths


def run(
    input_data: str | None,
    input_response_data: str,
    output_dir: str,
    *,
    processes: int = 0,
    timeout_s: float | None = DEFAULT_TIMEOUT_S,
    benchmark: str = "ifeval",
) -> str:
    """Reads, scores and writes an IFEval or IFBench evaluation; returns the report text.

    Args:
      input_data: prompts JSONL; None (or "") for the benchmark's shipped prompts.
      input_response_data: responses JSONL.
      output_dir: where the two result files go.
      processes: 0 scores in this process; N > 0 uses a `VerifierPool` of N workers.
      timeout_s: per-check time limit.
      benchmark: "ifeval" or "ifbench" (see the module docstring).

    Returns:
      The report (see `report`).
    """
    check_benchmark(benchmark)
    prompts = read_prompts(input_data or DEFAULT_PROMPTS[benchmark], benchmark=benchmark)
    responses = read_responses(input_response_data)
    kw = dict(responses_path=input_response_data, benchmark=benchmark)
    missing = len(match_responses(prompts, responses, **kw)[1])
    if processes > 0:
        from ifrl_jax.verifiers.pool import VerifierPool

        with VerifierPool(processes, timeout_s=timeout_s) as pool:
            results = evaluate(prompts, responses, pool=pool, **kw)
    else:
        results = evaluate(prompts, responses, timeout_s=timeout_s, **kw)
    write_results(results, output_dir)
    text = report(results, categories=benchmark == "ifbench")
    if missing:
        head, last = text.rsplit("\n", 1)
        text = f"{head}\nresponses missing: {missing} of {len(prompts)} prompts (scored 0)\n{last}"
    return text
