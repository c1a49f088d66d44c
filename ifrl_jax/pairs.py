"""Pseudo-label pairs for the reward model: from the policy, from reference or shipped data.

The self-supervised labels (../shared/DESIGN.md, point 3): for constraint c_k of an instruction,
the policy's response to level L_k is a positive (label 1) and its response to L_{k-1} a
negative (label 0); L_0 is the bare seed task. Each level is sampled once and its response
serves twice (positive for c_k, negative for c_{k+1}); with `num_samples` n, sample j of L_k
pairs with sample j of L_{k-1}. A pair row (JSONL)::

    {"constraint": text, "constraint_id": id, "kwargs": {...}, "response": str, "label": 0 | 1,
     "level": k, "source": "file:line", "group": task hash, "origin": "policy" | ..., ...}

`group` (a hash of the seed task) keys the held-out split, so that responses to one task never
sit on both sides. Sources (`jobs.pairs.BUILDERS`, flag `--format`):

* "policy": sample the policy on L_0..L_K of every instruction (jitted sampler, one call per
  batch of prompts, prompts sorted by length so that each batch fills one bucket).
* "reference": upstream pair data (`chosen` answers all K constraints, `rejected` the first
  K - 1): chosen is a positive and rejected a negative for c_K.
* "responses": one known response per record (the shipped tiny set): a positive for each of
  its constraints; the negative for c is the response to the same task's record that lacks c's
  id and shares most of its other ids (the closest stand-in for "L_{k-1}").

`quality_summary` checks the labels of hard constraints against the rule verifiers;
`evaluate_scorer` measures a scorer (the reward model) on held-out pairs: accuracy, agreement
with the rules and with the soft ids' hidden oracle, calibration.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from ifrl_jax import curriculum, oracle, records, samplers, sharding, verifiers
from ifrl_jax import tokenizer as tokenizer_lib
from ifrl_jax.errors import UserError, json_object_line
from ifrl_jax.models.config import ModelConfig
from ifrl_jax.records import Constraint, Record

ASSETS = Path(__file__).resolve().parent / "assets" / "instructions"
REQUIRED = ("constraint", "constraint_id", "kwargs", "response", "label", "level", "source")


def task_group(seed: str) -> str:
    """Short stable id of a seed task (the held-out split key)."""
    return hashlib.sha1(seed.encode()).hexdigest()[:12]


def make_pair(c: Constraint, response: str, label: int, *, level: int, record: Record,
              origin: str, **extra) -> dict[str, Any]:  # fmt: skip
    """One pair row for constraint c of `record` (see the module docstring)."""
    if c.text is None:
        raise records.RecordError(f"{record.source}: constraint {c.id!r} has no text")
    return {
        "constraint": c.text,
        "constraint_id": c.id,
        "kwargs": dict(c.kwargs),
        "response": response,
        "label": int(label),
        "level": int(level),
        "source": record.source,
        "group": task_group(record.seed or record.prompt),
        "origin": origin,
        **extra,
    }


# --------------------------------------------------------------------------------------------
# Reference and shipped data.
# --------------------------------------------------------------------------------------------


def pairs_from_reference(recs: Sequence[Record]) -> list[dict[str, Any]]:
    """Upstream pairs: `chosen` positive, `rejected` negative for the last constraint.

    Raises:
      RecordError: a record without string `chosen`/`rejected` (names its file and line).
    """
    out = []
    for r in recs:
        if r.kind != "if":
            continue
        chosen, rejected = r.meta.get("chosen"), r.meta.get("rejected")
        if not isinstance(chosen, str) or not isinstance(rejected, str):
            raise records.RecordError(
                f"{r.source}: fields 'chosen'/'rejected': expected two strings (reference pair "
                "format); use --format=policy for records without responses"
            )
        if not chosen.strip() or not rejected.strip():
            field = "chosen" if not chosen.strip() else "rejected"
            raise records.RecordError(f"{r.source}: field {field!r} is empty")
        k = len(r.constraints)
        c = r.constraints[-1]
        out.append(make_pair(c, chosen, 1, level=k, record=r, origin="reference"))
        out.append(make_pair(c, rejected, 0, level=k, record=r, origin="reference"))
    return out


def _overlap(ids: set[str], other: set[str]) -> int:
    return len(ids & other) - len(other - ids)


def pairs_from_responses(recs: Sequence[Record], responses: Sequence[str]) -> list[dict]:
    """Pairs from one known-good response per record (see the module docstring)."""
    if len(recs) != len(responses):
        raise ValueError(f"{len(recs)} records but {len(responses)} responses")
    by_task: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(recs):
        by_task[r.seed or r.prompt].append(i)
    out = []
    for i, r in enumerate(recs):
        ids = set(r.instruction_ids)
        for k, c in enumerate(r.constraints, start=1):
            others = [j for j in by_task[r.seed or r.prompt] if c.id not in recs[j].instruction_ids]
            if not others:
                continue
            # Most shared ids, fewest extra ones; the first of the best (deterministic).
            j = max(others, key=lambda j, ids=ids: _overlap(ids, set(recs[j].instruction_ids)))
            out.append(make_pair(c, responses[i], 1, level=k, record=r, origin="responses"))
            neg = make_pair(c, responses[j], 0, level=k, record=r, origin="responses")
            out.append({**neg, "negative_source": recs[j].source})
    return out


def load_responses(path: str, recs: Sequence[Record]) -> list[str]:
    """Responses JSONL ({"prompt", "response"} per line) aligned with records by prompt."""
    by_prompt = {}
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                row = json_object_line(line, path, n)
                if not isinstance(row.get("response"), str) or "prompt" not in row:
                    raise UserError(f"{path}:{n}: expected {{'prompt', 'response'}} strings")
                by_prompt[row["prompt"]] = row["response"]
    missing = [r.source for r in recs if r.prompt not in by_prompt]
    if missing:
        raise UserError(f"{path}: no response for {len(missing)} records, e.g. {missing[:3]}")
    return [by_prompt[r.prompt] for r in recs]


# --------------------------------------------------------------------------------------------
# Policy samples.
# --------------------------------------------------------------------------------------------


def instruction_levels(recs: Sequence[Record]) -> list[list[Record]]:
    """Per instruction (records sharing `source`, the one with most constraints), [L_0..L_K].

    Accepts whole records or their decomposed levels (build_data output); math items are left
    out. L_0 is the bare seed task (no constraints, level 0).
    """
    top: dict[str, Record] = {}
    for r in recs:
        if r.kind == "if" and (
            r.source not in top or len(r.constraints) > len(top[r.source].constraints)
        ):
            top[r.source] = r
    out = []
    for r in top.values():
        levels = curriculum.decompose(r)
        zero = dataclasses.replace(levels[0], prompt=records.build_prompt(r.seed, []),
                                   constraints=(), level=0, meta={})  # fmt: skip
        out.append([zero, *levels])
    return out


def sample_responses(
    cfg: ModelConfig,
    params: dict,
    tokenizer: tokenizer_lib.Tokenizer,
    prompts: Sequence[str],
    *,
    batch_size: int,
    max_prompt_len: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    num_samples: int = 1,
    seed: int = 0,
    system: str | None = None,
    mesh: Mesh | None = None,
    rules: sharding.Rules | str | None = None,
    engine: samplers.Options | None = None,
) -> list[list[str]]:
    """Samples `num_samples` responses per prompt.

    Prompts are sorted by length; prompts over `max_prompt_len` tokens keep their last tokens.
    The continuous engine (`engine`, default samplers.Options()) takes them all in one call on
    `engine.slots` slots (0 = batch_size x num_samples); the static sampler, in batches of
    `batch_size`. A call's prompts are filled up by repeating its last prompt (to the batch
    size; for the continuous engine, to a multiple of the mesh's data-parallel devices).
    Prompt k of the sorted order draws from the keys of (seed, k): both engines give the same
    responses.

    Returns:
      [len(prompts)][num_samples] decoded responses.
    """
    chats = tokenizer.apply_chat_template(list(prompts), system=system)
    seqs = tokenizer.encode(chats)
    order = sorted(range(len(prompts)), key=lambda i: len(seqs[i]))
    out: list[list[str]] = [[] for _ in prompts]
    engine = engine or samplers.Options()
    ways = 1 if mesh is None else sharding.data_ways(mesh)
    # The continuous engine takes every prompt at once, rounded up to the data-parallel devices.
    call = -(-len(order) // ways) * ways if engine.continuous() else batch_size
    for start in range(0, len(order), call):
        chunk = order[start : start + call]
        rows = [seqs[i] for i in chunk] + [seqs[chunk[-1]]] * (call - len(chunk))
        ids, mask = tokenizer_lib.pad_left(rows, pad_id=tokenizer.pad_id, max_len=max_prompt_len,
                                           truncation="left")  # fmt: skip
        res = samplers.sample(
            cfg, params, ids, mask, opts=engine, static_rows=batch_size * num_samples,
            max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
            num_samples=num_samples, eos_ids=tokenizer.eos_ids, pad_id=tokenizer.pad_id,
            rng=jax.random.key(seed), prompt_ids=np.arange(start, start + call), mesh=mesh,
            rules=rules,
        )  # fmt: skip
        # Every process passed the same prompts; with several, each gets every row back.
        texts = tokenizer.decode_batch(*sharding.gather_to_all((res.tokens, res.lengths)))
        for row, i in enumerate(chunk):
            out[i] = texts[row * num_samples : (row + 1) * num_samples]
    return out


def pairs_from_policy(
    groups: Sequence[Sequence[Record]], responses: Sequence[Sequence[str]]
) -> list[dict[str, Any]]:
    """Pairs from sampled responses: `responses` aligned with the flattened [L_0..L_K] groups.

    A sample whose response is blank (the policy ended at once) makes no pair: an empty text
    says nothing about a constraint, and load_pairs rejects it."""
    flat = iter(responses)
    out = []
    for levels in groups:
        samples = [next(flat) for _ in levels]
        top = levels[-1]
        for k in range(1, len(levels)):
            c = top.constraints[k - 1]
            for j, (pos, neg) in enumerate(zip(samples[k], samples[k - 1])):
                if not pos.strip() or not neg.strip():
                    continue
                out.append(make_pair(c, pos, 1, level=k, record=top, origin="policy", sample=j))
                out.append(make_pair(c, neg, 0, level=k, record=top, origin="policy", sample=j))
    return out


# --------------------------------------------------------------------------------------------
# Quality check, I/O, split.
# --------------------------------------------------------------------------------------------


def hard_verdicts(
    pairs: Sequence[dict], *, timeout_s: float | None = verifiers.DEFAULT_TIMEOUT_S
) -> tuple[np.ndarray, np.ndarray]:
    """The rule verifiers' verdicts on the pairs whose constraint is hard.

    Returns:
      (indices [H] of the hard pairs, verdicts [H] bool: the response satisfies its constraint).
    """
    hard = np.array([i for i, p in enumerate(pairs) if verifiers.is_hard(p["constraint_id"])], int)
    if not len(hard):
        return hard, np.zeros(0, bool)
    scores, _ = verifiers.verify_batch(
        [pairs[i]["response"] for i in hard],
        [[(pairs[i]["constraint_id"], pairs[i]["kwargs"])] for i in hard],
        timeout_s=timeout_s,
    )
    return hard, scores[:, 0] > 0.5


def quality_summary(
    pairs: Sequence[dict], *, timeout_s: float | None = verifiers.DEFAULT_TIMEOUT_S
) -> dict[str, Any]:
    """How often positives and negatives of hard constraints satisfy them by the verifiers.

    Returns:
      pairs, positives, negatives, soft_pairs, hard_positives, hard_negatives,
      pos_hard_pass_rate, neg_hard_pass_rate (None without hard rows), and per_id
      {id: [pos pass rate, neg pass rate, rows]}.
    """
    hard, verdict = hard_verdicts(pairs, timeout_s=timeout_s)
    label = np.array([int(pairs[i]["label"]) for i in hard], np.int64)
    rate = lambda v: float(v.mean()) if len(v) else None
    per_id = {}
    ids = np.array([pairs[i]["constraint_id"] for i in hard])
    for cid in sorted(set(ids.tolist())):
        sel = ids == cid
        pos, neg = verdict[sel & (label == 1)], verdict[sel & (label == 0)]
        per_id[cid] = [rate(pos), rate(neg), int(sel.sum())]
    return {
        "pairs": len(pairs),
        "positives": sum(int(p["label"]) == 1 for p in pairs),
        "negatives": sum(int(p["label"]) == 0 for p in pairs),
        "soft_pairs": len(pairs) - len(hard),
        "hard_positives": int((label == 1).sum()),
        "hard_negatives": int((label == 0).sum()),
        "pos_hard_pass_rate": rate(verdict[label == 1]),
        "neg_hard_pass_rate": rate(verdict[label == 0]),
        "per_id": per_id,
    }


def write_pairs(pairs: Sequence[dict], path: str) -> int:
    """Writes pair rows as JSONL; returns the count."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        for p in pairs:
            f.write(json.dumps(p, ensure_ascii=False) + "\n")
    return len(pairs)


def load_pairs(path: str) -> list[dict[str, Any]]:
    """Reads and validates pair JSONL (errors name the file, line and field)."""
    out = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            row = json_object_line(line, path, n)
            missing = [k for k in REQUIRED if k not in row]
            if missing:
                raise UserError(f"{path}:{n}: missing fields {missing}")
            if row["label"] not in (0, 1):
                raise UserError(f"{path}:{n}: field 'label' must be 0 or 1, got {row['label']!r}")
            if not isinstance(row["response"], str) or not isinstance(row["constraint"], str):
                raise UserError(f"{path}:{n}: fields 'response'/'constraint' must be strings")
            for field in ("response", "constraint"):
                if not row[field].strip():
                    raise UserError(f"{path}:{n}: field {field!r} is empty (a pair needs a "
                                    "response and a constraint text to judge it by)")  # fmt: skip
            row.setdefault("group", row["source"])
            out.append(row)
    if not out:
        raise UserError(f"{path}: no pairs")
    return out


def split_heldout(
    pairs: Sequence[dict], *, fraction: float, seed: int = 0
) -> tuple[list[dict], list[dict]]:
    """(train, held-out) with about `fraction` of the task groups held out (at least one)."""
    groups = sorted({p["group"] for p in pairs})
    rng = np.random.default_rng(seed)
    n = min(len(groups) - 1, max(1, round(fraction * len(groups)))) if fraction > 0 else 0
    held = {groups[i] for i in rng.permutation(len(groups))[:n]}
    return [p for p in pairs if p["group"] not in held], [p for p in pairs if p["group"] in held]


# --------------------------------------------------------------------------------------------
# A scorer (the reward model) on held-out pairs.
# --------------------------------------------------------------------------------------------


def evaluate_scorer(
    scorer: Callable[[list[str], list[str]], np.ndarray], pairs: Sequence[dict], *,
    timeout_s: float | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Held-out accuracy (overall, per constraint id) and agreement with the rule verifiers.

    Args:
      scorer: any SoftScorer (the reward model); its decision is P(class 1) > 0.5.
      pairs: [P] pair rows (`ifrl_jax.pairs`).
    Returns:
      heldout_accuracy (decision == label), heldout_accuracy_per_id, verifier_agreement
      (decision == verifier verdict, hard constraints only), label_verifier_agreement (label ==
      verdict: how good the pseudo-labels themselves are), counts, the agreement per hard id
      (verifier_agreement_per_id), and the expected calibration error of P(1) against the
      labels (ece) and against the rule verdicts (verifier_ece); for soft ids with a hidden
      oracle (`ifrl_jax.oracle`), the decision's agreement with it (oracle_agreement, per id).
    """
    if not pairs:
        raise ValueError("no held-out pairs to evaluate")
    probs = scorer([p["response"] for p in pairs], [p["constraint"] for p in pairs])
    decision = probs > 0.5
    labels = np.array([int(p["label"]) for p in pairs]) == 1
    correct = decision == labels
    ids = np.array([p["constraint_id"] for p in pairs])
    per_id = {str(c): float(correct[ids == c].mean()) for c in sorted(set(ids))}
    hard, verdict = hard_verdicts(pairs, timeout_s=timeout_s)
    agree = lambda x: float((x[hard] == verdict).mean()) if len(hard) else None
    hard_ids = ids[hard]
    agree_per_id = {str(c): float((decision[hard][hard_ids == c] == verdict[hard_ids == c]).mean())
                    for c in sorted(set(hard_ids))}  # fmt: skip
    soft = oracle.agreement(ids, decision, [p["response"] for p in pairs])
    return {"heldout_accuracy": float(correct.mean()), "verifier_agreement": agree(decision),
            "label_verifier_agreement": agree(labels), "heldout_pairs": len(pairs),
            "heldout_hard_pairs": len(hard), "heldout_accuracy_per_id": per_id,
            "verifier_agreement_per_id": agree_per_id,
            # Soft ids with a hidden oracle (ifrl_jax.oracle): the RM's decision against it.
            "oracle_agreement": soft["agreement"], "oracle_agreement_per_id": soft["per_id"],
            "heldout_oracle_pairs": soft["count"],
            "ece": calibration_error(probs, labels),
            "verifier_ece": calibration_error(probs[hard], verdict) if len(hard) else None,
            }  # fmt: skip


def calibration_error(probs, outcomes, *, bins: int = 10) -> float:
    """Expected calibration error: sum over equal-width probability bins of (bin share) x
    |mean predicted P(1) - observed frequency of 1| (0 = calibrated)."""
    probs, outcomes = np.asarray(probs, np.float64), np.asarray(outcomes, np.float64)
    idx = np.minimum((probs * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        sel = idx == b
        if sel.any():
            total += sel.mean() * abs(probs[sel].mean() - outcomes[sel].mean())
    return float(total)
