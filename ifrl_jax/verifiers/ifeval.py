"""IFEval-compatible evaluation: google-research `instruction_following_eval` file formats.

Inputs: a prompts JSONL (`{"key", "prompt", "instruction_id_list", "kwargs"}` per line, other
fields ignored) and a responses JSONL (`{"prompt", "response"}` per line; responses are matched
to prompts by the exact prompt text, the last one wins). Outputs, in `output_dir`:
`eval_results_strict.jsonl` and `eval_results_loose.jsonl`, one line per prompt with
`follow_all_instructions`, `follow_instruction_list`, `instruction_id_list`, `prompt` and
`response` (keys in that order, as the reference writes them).

Accuracy: prompt-level = share of prompts with every instruction followed; instruction-level
= share of all instructions followed. Bad input (malformed JSON, a missing field, an unknown
id or bad kwargs, a prompt without a response) raises `EvalInputError` or `SpecError`, both
ValueErrors whose message starts with "file:line".
"""

from __future__ import annotations

import collections
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ifrl_jax.verifiers.batch import verify_batch_modes
from ifrl_jax.verifiers.layout import DEFAULT_TIMEOUT_S
from ifrl_jax.verifiers.spec import SpecError, check_spec, is_hard

MODES = ("strict", "loose")
RESULT_FILES = {m: f"eval_results_{m}.jsonl" for m in MODES}


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


def read_prompts(path: str) -> list[Prompt]:
    """Reads and validates an IFEval prompts file.

    Args:
      path: JSONL with "key", "prompt", "instruction_id_list", "kwargs" per line.

    Returns:
      The prompts, kwargs normalised by `check_spec`.

    Raises:
      EvalInputError: unreadable file, malformed line, missing or ill-typed field.
      SpecError: a non-IFEval instruction id or bad kwargs (message names file, line, index).
    """
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
            if not isinstance(cid, str) or not is_hard(cid):
                raise SpecError(f"{at}: {cid!r} is not one of the 25 IFEval instruction ids")
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


def evaluate(
    prompts: Sequence[Prompt],
    responses: dict[str, str],
    *,
    responses_path: str = "<responses>",
    pool=None,
    think_mode: str = "none",
    timeout_s: float | None = DEFAULT_TIMEOUT_S,
) -> dict[str, list[dict]]:
    """Scores every prompt in strict and loose mode.

    Args:
      prompts: from `read_prompts`.
      responses: from `read_responses`.
      responses_path: named in the error for a prompt without a response.
      pool: an optional `VerifierPool`.
      think_mode: see `strip_think` ("none" for IFEval).
      timeout_s: per-check time limit.

    Returns:
      {mode: one output row per prompt}, rows as written to the result files.

    Raises:
      EvalInputError: a prompt has no response.
    """
    texts = []
    for p in prompts:
        if p.prompt not in responses:
            raise EvalInputError(
                f"{p.path}:{p.line}: no response for this prompt (key {p.key!r}) in "
                f"{responses_path}"
            )
        texts.append(responses[p.prompt])
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


def report(results: dict[str, list[dict]]) -> str:
    """A human-readable report: both modes' accuracies, a per-id table, a final JSON line.

    Args:
      results: from `evaluate`.

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
    input_data: str,
    input_response_data: str,
    output_dir: str,
    *,
    processes: int = 0,
    timeout_s: float | None = DEFAULT_TIMEOUT_S,
) -> str:
    """Reads, scores and writes an IFEval evaluation; returns the report text.

    Args:
      input_data: prompts JSONL.
      input_response_data: responses JSONL.
      output_dir: where the two result files go.
      processes: 0 scores in this process; N > 0 uses a `VerifierPool` of N workers.
      timeout_s: per-check time limit.

    Returns:
      The report (see `report`).
    """
    prompts = read_prompts(input_data)
    responses = read_responses(input_response_data)
    if processes > 0:
        from ifrl_jax.verifiers.pool import VerifierPool

        with VerifierPool(processes, timeout_s=timeout_s) as pool:
            results = evaluate(prompts, responses, responses_path=input_response_data, pool=pool)
    else:
        results = evaluate(
            prompts, responses, responses_path=input_response_data, timeout_s=timeout_s
        )
    write_results(results, output_dir)
    return report(results)
