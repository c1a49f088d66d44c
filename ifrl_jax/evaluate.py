"""Evaluation: responses from the jitted sampler, scored by the verifiers and the IFEval evaluator.

`generate_texts` and `hard_pass_rates` serve the training loop's periodic held-out evaluation.
`evaluate_ifeval` and `evaluate_records` score n samples per IFEval prompt (shipped in
assets/ifeval) or held-out record: the four IFEval accuracies, per-id and per-level tables, math
exact match, pass@k. `jobs.evaluate` (launch/eval.py) runs them on a saved policy.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import Mesh

from ifrl_jax import data, oracle, rewards, sampling, sharding, verifiers
from ifrl_jax.models.config import ModelConfig
from ifrl_jax.records import Constraint, Record
from ifrl_jax.verifiers import ifeval


def generate_texts(
    cfg: ModelConfig,
    params,
    tokenizer,
    records: Sequence[Record],
    *,
    max_new_tokens: int,
    max_prompt_len: int,
    batch_size: int,
    mesh: Mesh,
    rules,
    temperature: float = 0.0,
    top_p: float = 1.0,
    num_samples: int = 1,
    rng: jax.Array | None = None,
    cache_dtype: str = "float32",
    buckets=sampling.DEFAULT_BUCKETS,
) -> list[str]:
    """Responses to `records` (num_samples each, grouped), in fixed-size sampler batches.

    The last batch is padded with repeats of its first record so every call has the same
    shape (one compiled program); the padding rows are dropped from the output.
    """
    rng = jax.random.key(0) if rng is None else rng
    ways = sharding.data_ways(mesh)
    batch_size = -(-batch_size // ways) * ways  # every sampler batch splits over the devices
    out: list[str] = []
    for start in range(0, len(records), batch_size):
        chunk = list(records[start : start + batch_size])
        n_real = len(chunk)
        chunk += [chunk[0]] * (batch_size - n_real)
        enc = data.encode_prompts(
            tokenizer, chunk, max_prompt_len=max_prompt_len, overlong="truncate_left",
            buckets=buckets,
        )  # fmt: skip
        sample = sampling.generate(
            cfg, params, enc.input_ids, enc.attention_mask, max_new_tokens=max_new_tokens,
            temperature=temperature, top_p=top_p, num_samples=num_samples,
            eos_ids=tokenizer.eos_ids, pad_id=tokenizer.pad_id,
            rng=jax.random.fold_in(rng, start), cache_dtype=cache_dtype, mesh=mesh, rules=rules,
            buckets=buckets,
        )  # fmt: skip
        # Every host passed the same prompts and gets every row back (eval sets are small).
        tokens, lengths = sharding.gather_to_all((sample.tokens, sample.lengths))
        texts = tokenizer.decode_batch(tokens, lengths)
        out += texts[: n_real * num_samples]
    return out


def hard_pass_rates(records: Sequence[Record], responses: Sequence[str], **score_kw) -> dict:
    """Constraint-level and prompt-level pass rates on hard constraints (soft ones excluded).

    Returns:
      {"constraint_pass_rate", "prompt_pass_rate", "constraints", "prompts"} plus
      "pass/id/<id>" rates; prompts without hard constraints are not counted.
    """
    result = rewards.score(records, responses, soft="exclude", timeout_s=None, **score_kw)
    valid = result.valid.astype(bool)
    passed = (result.scores > 0.5) & valid
    has_hard = valid.any(axis=1)
    prompt_ok = (passed | ~valid).all(axis=1) & has_hard
    out = {
        "constraint_pass_rate": float(passed.sum() / max(valid.sum(), 1)),
        "prompt_pass_rate": float(prompt_ok.sum() / max(has_hard.sum(), 1)),
        "constraints": int(valid.sum()),
        "prompts": int(has_hard.sum()),
        "verifier_timeouts": result.verifier_timeouts,
    }
    per_id: dict[str, list[int]] = {}
    for i, rec in enumerate(records):
        for k, c in enumerate(rec.constraints):
            if valid[i, k]:
                per_id.setdefault(c.id, []).append(int(passed[i, k]))
    out.update({f"pass/id/{k}": float(np.mean(v)) for k, v in sorted(per_id.items())})
    return out


def soft_pass_rates(records: Sequence[Record], responses: Sequence[str], *,
                    think_mode: str = "none") -> dict:  # fmt: skip
    """The held-out pass rate on soft constraints that have a hidden oracle (`ifrl_jax.oracle`:
    the tiny set's soft ids; measured, never rewarded).

    Returns:
      {"soft_pass_rate", "soft_constraints", "soft/id/<id>"...}, or {} when no record has one.
    """
    ids, texts = [], []
    for rec, resp in zip(records, responses):
        text = verifiers.strip_think(resp, mode=think_mode) or ""
        for c in rec.constraints:
            ids.append(c.id)
            texts.append(text)
    idx, verdict = oracle.verdicts(ids, texts)
    if not len(idx):
        return {}
    judged = np.array(ids)[idx]
    out = {"soft_pass_rate": float(verdict.mean()), "soft_constraints": int(len(idx))}
    out.update({f"soft/id/{c}": float(verdict[judged == c].mean()) for c in sorted(set(judged))})
    return out


# --------------------------------------------------------------------------------------------
# Scores and tables of n samples per IFEval prompt or held-out record (jobs.evaluate).
# --------------------------------------------------------------------------------------------

IFEVAL_PROMPTS = os.path.join(os.path.dirname(__file__), "assets", "ifeval", "input_data.jsonl")
RESPONSES_FILE = "responses.jsonl"  # {"prompt", "response"}: what google's IFEval tools read


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c passed: 1 - C(n - c, k) / C(n, k).

    (Chen et al. 2021, "Evaluating Large Language Models Trained on Code", eq. 1.)

    Args:
      n: samples drawn; c: samples that passed (0 <= c <= n); k: 1 <= k <= n.
    Returns:
      The probability that at least one of k samples drawn without replacement passes.
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def default_ks(n: int) -> list[int]:
    """The k reported for n samples: powers of two below n, and n."""
    return sorted({k for k in (2**i for i in range(n.bit_length())) if k < n} | {n})


def pass_at_k_table(passed: np.ndarray, ks: Sequence[int]) -> dict[str, float]:
    """Mean unbiased pass@k over prompts.

    Args:
      passed: [P, n] bool, sample j of prompt i passed.
      ks: the k values (each <= n).
    Returns:
      {"pass@k": mean over the P prompts}.
    """
    passed = np.asarray(passed, bool)
    n = passed.shape[1]
    counts = passed.sum(axis=1)
    return {
        f"pass@{k}": float(np.mean([pass_at_k(n, int(c), k) for c in counts]))
        if len(counts)
        else 0.0
        for k in ks
    }


def _write_jsonl(path: str, rows: Sequence[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def ifeval_records(prompts: Sequence[ifeval.Prompt]) -> list[Record]:
    """IFEval prompts as Records (hard constraints, no texts) for the sampler."""
    return [
        Record(
            prompt=p.prompt,
            constraints=tuple(
                Constraint(i, kw, None) for i, kw in zip(p.instruction_id_list, p.kwargs)
            ),
            source=f"{p.path}:{p.line}",
            meta={"key": p.key},
        )
        for p in prompts
    ]


def _split_samples(texts: Sequence[str], n: int) -> list[list[str]]:
    """Grouped sampler output [P * n] -> n lists of P responses (sample j of every prompt)."""
    return [list(texts[j::n]) for j in range(n)]


def _think_answer(text: str, think_mode: str) -> str:
    answer = verifiers.strip_think(text, mode=think_mode)
    return "" if answer is None else answer


def evaluate_ifeval(
    prompts: Sequence[ifeval.Prompt],
    texts: Sequence[str],
    *,
    n: int,
    output_dir: str,
    think_mode: str = "none",
    benchmark: str = "ifeval",
) -> tuple[dict, str]:
    """Scores n samples per IFEval (or IFBench) prompt with the project's evaluator; writes files.

    Sample 0 is the evaluation proper: `responses.jsonl` and the two `eval_results_*.jsonl`
    (google's formats) and the four accuracies. With n > 1, every sample is scored too and
    prompt-level pass@k is reported (unbiased estimator), strict and loose.

    Args:
      prompts: from `ifeval.read_prompts`.
      texts: [P * n] responses, grouped by prompt (`generate_texts` order).
      n: samples per prompt; output_dir: created if needed.
      think_mode: see `verifiers.strip_think`; with a mode other than "none" the answers after
        the think block go to `responses_answer.jsonl` too (a missing tag gives "").
      benchmark: "ifeval" or "ifbench" (`ifeval.BENCHMARKS`): the report of "ifbench" adds
        IFBench's per-category table.
    Returns:
      (summary dict, report text without its final JSON line).
    """
    os.makedirs(output_dir, exist_ok=True)
    samples = _split_samples(texts, n)
    results = []
    for j, sample in enumerate(samples):
        responses = {p.prompt: t for p, t in zip(prompts, sample)}
        results.append(ifeval.evaluate(prompts, responses, think_mode=think_mode, timeout_s=None,
                                       benchmark=benchmark))  # fmt: skip
        if j == 0:
            rows = [{"prompt": p.prompt, "response": t} for p, t in zip(prompts, sample)]
            _write_jsonl(os.path.join(output_dir, RESPONSES_FILE), rows)
            if think_mode != "none":
                _write_jsonl(
                    os.path.join(output_dir, "responses_answer.jsonl"),
                    [{"prompt": p.prompt, "response": _think_answer(t, think_mode)}
                     for p, t in zip(prompts, sample)],
                )  # fmt: skip
    ifeval.write_results(results[0], output_dir)
    summary = ifeval.summary(results[0])
    text = ifeval.report(results[0], categories=benchmark == "ifbench").rsplit("\n", 1)[0]
    if n > 1:
        _write_jsonl(
            os.path.join(output_dir, "samples.jsonl"),
            [{"prompt": p.prompt, "sample": j, "response": s[i]}
             for i, p in enumerate(prompts) for j, s in enumerate(samples)],
        )  # fmt: skip
        lines = ["=" * 64, f"pass@k over {n} samples per prompt (prompt level, unbiased)"]
        for mode in ifeval.MODES:
            passed = np.array(
                [
                    [r[mode][i]["follow_all_instructions"] for r in results]
                    for i in range(len(prompts))
                ]
            ).reshape(len(prompts), n)
            table = pass_at_k_table(passed, default_ks(n))
            summary.update({f"{k}_{mode}": v for k, v in table.items()})
            lines.append(f"{mode:<7}" + "  ".join(f"{k} {v:.4f}" for k, v in table.items()))
        text += "\n" + "\n".join(lines)
    summary["prompts"] = len(prompts)
    return summary, text


def evaluate_records(
    records: Sequence[Record],
    texts: Sequence[str],
    *,
    n: int,
    output_dir: str,
    think_mode: str = "none",
) -> tuple[dict, str]:
    """Hard-constraint and math scores of n samples per held-out record, per id and per level.

    Soft constraints are excluded (no reward model here). Math items (kind "math") score 1 on
    an exact `\\boxed{}` match (`rewards.math_score`).

    Args:
      records: held-out records; texts: [R * n] responses grouped by record.
      n: samples per record; output_dir: `records_results.jsonl` goes there.
      think_mode: see `verifiers.strip_think`.
    Returns:
      (summary dict under "records/...", report text).
    """
    reps = [r for r in records for _ in range(n)]
    scored = {
        mode: rewards.score(
            reps,
            texts,
            think_mode=think_mode,
            soft="exclude",
            loose=mode == "loose",
            timeout_s=None,
        )
        for mode in ifeval.MODES
    }
    rates = {mode: rewards.pass_rates(res, reps) for mode, res in scored.items()}
    strict = scored["strict"]
    passed = strict.reward_valid & ((strict.scores > 0.5) | ~strict.valid).all(axis=1)
    _write_jsonl(
        os.path.join(output_dir, "records_results.jsonl"),
        [{"prompt": r.prompt, "sample": i % n, "response": t, "kind": r.kind,
          "level": int(strict.levels[i]), "ids": list(strict.ids[i]),
          "scores": [float(s) for s in strict.scores[i, : len(strict.ids[i])]],
          "follow_all": bool(passed[i])} for i, (r, t) in enumerate(zip(reps, texts))],
    )  # fmt: skip
    out: dict = {"records/count": len(records)}
    lines = ["=" * 64, f"held-out records: {len(records)} x {n} samples (hard constraints)"]
    lines.append(f"{'instruction id':<48} {'n':>5} {'strict':>7} {'loose':>7}")
    count: dict[str, int] = {}
    for row_ids, valid in zip(strict.ids, strict.valid):
        for cid, ok in zip(row_ids, valid):
            count[cid] = count.get(cid, 0) + int(ok)
    for cid in sorted(c for c in count if count[c]):
        s, lo = rates["strict"][f"pass/id/{cid}"], rates["loose"][f"pass/id/{cid}"]
        lines.append(f"{cid:<48} {count[cid]:>5} {s:>7.4f} {lo:>7.4f}")
        out[f"records/id/{cid}"] = s
    lines.append(
        f"{'level':<10} {'rows':>5} {'constraint':>11} {'all (strict)':>13} {'all (loose)':>12}"
    )
    for level in sorted(set(int(x) for x in strict.levels)):
        key = f"L{level}"
        if f"pass/level/{key}" not in rates["strict"]:
            continue
        name = "math" if level == 0 else key
        rows = int(np.sum((strict.levels == level) & strict.reward_valid))
        c = rates["strict"][f"pass/level/{key}"]
        a, al = (
            rates["strict"].get(f"all_pass/level/{key}", 0.0),
            rates["loose"].get(f"all_pass/level/{key}", 0.0),
        )
        lines.append(f"{name:<10} {rows:>5} {c:>11.4f} {a:>13.4f} {al:>12.4f}")
        out[f"records/{name}/all_pass"] = a
    math_rows = [i for i, r in enumerate(reps) if r.kind == "math"]
    if math_rows:
        out["math_accuracy"] = float(np.mean(strict.scores[math_rows, 0]))
        acc = out["math_accuracy"]
        lines.append(f"math/science exact match (\\boxed{{}}): {acc:.4f} over {len(math_rows)}")
    if "pass/all" in rates["strict"]:
        out["records/constraint_pass_rate"] = rates["strict"]["pass/all"]
    # Prompt level (sample 0) and pass@k: instruction records with a hard constraint; math apart.
    grid = passed.reshape(len(records), n)
    is_if = np.array([r.kind == "if" for r in records])
    counted = strict.reward_valid.reshape(len(records), n).all(axis=1) & is_if
    if counted.any():
        out["records/prompt_pass_rate"] = float(np.mean(grid[counted, 0]))
    for name, rows_ in (("records", counted), ("math", ~is_if)):
        if n > 1 and rows_.any():
            table = pass_at_k_table(grid[rows_], default_ks(n))
            out.update({f"{name}/{k}": v for k, v in table.items()})
            lines.append(f"{name} pass@k: " + "  ".join(f"{k} {v:.4f}" for k, v in table.items()))
    return out, "\n".join(lines)
