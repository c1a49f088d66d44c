"""The reward: rule verdicts for hard constraints, soft-scorer probabilities for soft ones.

For a response to a record with constraints c_1..c_K (../shared/DESIGN.md, point 5)::

    reward = scale * mean_k s_k     (over the constraints that count, see below)

* ``s_k`` is the verifier's 0/1 verdict for a hard id and the soft scorer's P(satisfied) for a
  soft id. ``scale`` defaults to 5, as upstream.
* The think-tag mode applies first (``verifiers.strip_think``): with ``"required"`` only the text
  after ``</think>`` is judged and a missing tag fails every constraint (reward 0).
* An empty (or whitespace-only) response fails every constraint, soft ones included; the soft
  scorer is not asked about it.
* Soft constraints with no scorer: ``soft="exclude"`` (default) leaves them out of the mean
  (``valid=False``; logged once), ``"zero"`` counts them as failed, ``"error"`` raises. A record
  whose constraints are *all* soft and excluded has nothing to average: its reward is 0 and
  ``RewardResult.reward_valid`` is False, so the training loop can mask it out of its group.
* Math items (kind ``"math"``) score ``scale`` when the last brace-balanced ``\\boxed{...}`` of
  the (think-stripped) response equals the gold answer (both stripped of surrounding
  whitespace; no other normalization), else 0. They appear as one constraint with id ``"math"``.
* Every hard check runs under a time limit (``timeout_s``, capped at
  ``verifiers.MAX_TIMEOUT_S``; None means the cap), whether on a ``pool``, in this process, or,
  when ``score`` is called outside the main thread without a pool (the training loop's reward
  thread with ``verifier_processes=0``), on the verifiers' shared worker process. A check that
  outlives it scores 0 and is counted in ``RewardResult.verifier_timeouts`` (log it as
  ``reward/verifier_timeouts``); one that raises scores 0 and is counted in
  ``verifier_errors``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import defaultdict
from collections.abc import Collection, Sequence
from typing import Protocol

import numpy as np

from ifrl_jax import verifiers
from ifrl_jax.records import Record

MATH_ID = "math"
SOFT_MODES = ("exclude", "zero", "error")
_logged_exclusion = False


class SoftScorer(Protocol):
    """Scores (response, constraint text) pairs; the reward model implements this."""

    def __call__(self, responses: list[str], constraint_texts: list[str]) -> np.ndarray:
        """Returns P(response satisfies constraint) for each pair.

        Args:
          responses: ``[P]`` responses (already think-stripped).
          constraint_texts: ``[P]`` constraint texts, aligned with ``responses``.

        Returns:
          ``[P]`` float probabilities in [0, 1].
        """
        ...


@dataclasses.dataclass
class RewardResult:
    """Rewards of N responses, with the per-constraint scores behind them.

    Attributes:
      rewards: ``[N]`` float32, ``scale * mean`` of the valid scores (0 where none is valid).
      scores: ``[N, K]`` float32 per-constraint scores in [0, 1] (K = most constraints in the
        batch; 0 in padding and excluded slots).
      valid: ``[N, K]`` bool, True where the score counts in the mean.
      reward_valid: ``[N]`` bool, False where no constraint counted (all soft and excluded).
      ids: per response, its constraint ids (``("math",)`` for a math item).
      levels: ``[N]`` int32, the record's level (its constraint count when it has no level,
        0 for math items).
      rm_agreement_counts: per hard id scored by the soft scorer (``rm_ids``), (slots where the
        scorer's decision, p > 0.5, equals the rule verdict, slots); ``rm_agreement`` is the
        overall fraction (None if there is no such slot).
      soft_scored: whether a soft scorer (the RM) scored the soft slots.
      verifier_timeouts: hard checks that outlived their time limit (scored 0).
      verifier_errors: hard checks that raised (scored 0).
    """

    rewards: np.ndarray
    scores: np.ndarray
    valid: np.ndarray
    reward_valid: np.ndarray
    ids: list[tuple[str, ...]]
    levels: np.ndarray
    rm_agreement_counts: dict[str, tuple[int, int]] = dataclasses.field(default_factory=dict)
    soft_scored: bool = False
    verifier_timeouts: int = 0
    verifier_errors: int = 0

    @property
    def rm_agreement(self) -> float | None:
        return agreement(self.rm_agreement_counts)


def agreement(counts: dict[str, tuple[int, int]]) -> float | None:
    """The overall fraction of {id: (agreeing slots, slots)}; None when there is no slot."""
    total = sum(t for _, t in counts.values())
    return sum(a for a, _ in counts.values()) / total if total else None


# ----------------------------------------------------------------------------- math


def last_boxed(text: str) -> str | None:
    """Returns the content of the last brace-balanced ``\\boxed{...}`` in ``text``.

    Nested braces are kept (``\\boxed{\\frac{1}{2}}`` gives ``\\frac{1}{2}``); an occurrence
    whose braces never close is ignored.

    Args:
      text: a response.

    Returns:
      The content, or None when there is no balanced ``\\boxed{...}``.
    """
    marker = "\\boxed{"
    found = None
    start = text.find(marker)
    while start != -1:
        i = start + len(marker)
        depth = 1
        while i < len(text) and depth:
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
            i += 1
        if depth == 0:
            found = text[start + len(marker) : i - 1]
        start = text.find(marker, start + 1)
    return found


def math_score(response: str | None, answer: str) -> float:
    """1.0 when the last balanced ``\\boxed{}`` of the response equals the gold answer, else 0.

    Args:
      response: the (think-stripped) response; None (missing think tag) scores 0.
      answer: the gold answer.

    Returns:
      1.0 or 0.0.
    """
    if not response:
        return 0.0
    boxed = last_boxed(response)
    return float(boxed is not None and boxed.strip() == answer.strip())


# ----------------------------------------------------------------------------- scoring


def _log_exclusion_once() -> None:
    global _logged_exclusion
    if not _logged_exclusion:
        logging.info(
            "rewards: no soft scorer; soft constraints are excluded from the reward mean "
            "(soft='exclude'); records with only soft constraints get reward_valid=False."
        )
        _logged_exclusion = True


def score(
    records: Sequence[Record],
    responses: Sequence[str],
    *,
    think_mode: str = "none",
    scale: float = 5.0,
    soft_scorer: SoftScorer | None = None,
    soft: str = "exclude",
    loose: bool = False,
    pool: verifiers.VerifierPool | None = None,
    timeout_s: float | None = verifiers.DEFAULT_TIMEOUT_S,
    rm_ids: Collection[str] = (),
) -> RewardResult:
    """Scores responses against their records' constraints (see the module docstring).

    Args:
      records: ``[N]`` records (repeat a record for each of its n rollouts).
      responses: ``[N]`` decoded responses, aligned with ``records``.
      think_mode: ``"none"``, ``"required"`` or ``"optional"`` (``verifiers.strip_think``).
      scale: reward for satisfying every constraint.
      soft_scorer: scorer for soft constraints, called once with all (response, text) pairs.
      soft: what to do with soft constraints when ``soft_scorer`` is None: ``"exclude"``,
        ``"zero"`` or ``"error"``.
      loose: IFEval's loose verification (also accept the response with its first/last line or
        its ``*`` removed) instead of strict.
      pool: a ``verifiers.VerifierPool`` to run the hard checks on; None runs them here.
      timeout_s: per-check wall-clock limit of the verifiers (a check that exceeds it scores 0
        and is counted); None for only the ceiling ``verifiers.MAX_TIMEOUT_S`` (30 s, far above
        any legitimate check: deterministic, for evaluation and tests).
      rm_ids: hard ids scored by ``soft_scorer`` as if they were soft (the rule verdicts are
        still computed, for ``RewardResult.rm_agreement``); ignored without a scorer.

    Returns:
      A RewardResult.

    Raises:
      ValueError: lengths differ, an unknown ``soft`` mode, a soft constraint with
        ``soft="error"``, or a soft constraint without text when a scorer is given.
    """
    if len(records) != len(responses):
        raise ValueError(f"{len(records)} records but {len(responses)} responses")
    if soft not in SOFT_MODES:
        raise ValueError(f"soft={soft!r}; expected one of {SOFT_MODES}")
    n = len(records)
    ids = [(MATH_ID,) if r.kind == "math" else r.instruction_ids for r in records]
    k_max = max((len(i) for i in ids), default=1) or 1
    scores = np.zeros((n, k_max), np.float32)
    valid = np.zeros((n, k_max), bool)
    levels = np.array(
        [0 if r.kind == "math" else (r.level or len(r.constraints)) for r in records], np.int32
    )

    texts = [verifiers.strip_think(resp, mode=think_mode) for resp in responses]
    nonempty = [t is not None and bool(t.strip()) for t in texts]

    # Hard constraints: one verify_batch call over the instruction records.
    if_rows = [i for i, r in enumerate(records) if r.kind == "if"]
    timeouts = errors = 0
    if if_rows:
        mode = "loose" if loose else "strict"
        report = verifiers.verify_batch_report(
            [responses[i] for i in if_rows],
            [[(c.id, c.kwargs) for c in records[i].constraints] for i in if_rows],
            modes=(mode,),
            think_mode=think_mode,
            pool=pool,
            timeout_s=timeout_s,
            width=k_max,
        )
        scores[if_rows] = report.scores[mode]
        valid[if_rows] = report.valid
        timeouts, errors = report.timeouts, report.errors
        empty_rows = [i for i in if_rows if not nonempty[i]]
        scores[empty_rows] = 0.0

    # Soft constraints: every (response, text) pair of the batch in one scorer call.
    soft_slots = [
        (i, k)
        for i in if_rows
        for k, c in enumerate(records[i].constraints)
        if not verifiers.is_hard(c.id) or (soft_scorer is not None and c.id in rm_ids)
    ]
    rule = scores.copy()  # the rule verdicts, before the scorer replaces rm_ids slots
    if soft_scorer is not None:
        asked = [(i, k) for i, k in soft_slots if nonempty[i]]
        for i, k in asked:
            if records[i].constraints[k].text is None:
                raise ValueError(
                    f"{records[i].source}: soft constraint {records[i].constraints[k].id!r} "
                    "has no text to score"
                )
        # Called even with nothing to score: with several processes the RM is a collective that
        # every host enters once per batch (reward_model.RewardModelScorer).
        probs = np.asarray(
            soft_scorer(
                [texts[i] for i, _ in asked], [records[i].constraints[k].text for i, k in asked]
            ),
            np.float32,
        ).reshape(-1)
        if probs.shape[0] != len(asked):
            raise ValueError(f"soft scorer returned {probs.shape[0]} for {len(asked)}")
        for (i, k), p in zip(asked, probs):
            scores[i, k] = p
        for i, k in soft_slots:
            valid[i, k] = True
    elif soft_slots:
        if soft == "exclude":
            _log_exclusion_once()
        elif soft == "zero":
            for i, k in soft_slots:
                scores[i, k], valid[i, k] = 0.0, True
        else:
            i, k = soft_slots[0]
            raise ValueError(
                f"{records[i].source}: soft constraint {records[i].constraints[k].id!r} and no "
                "soft scorer (pass soft_scorer=..., or soft='exclude'/'zero')"
            )

    for i, r in enumerate(records):
        if r.kind == "math":
            scores[i, 0] = math_score(texts[i], r.answer or "")
            valid[i, 0] = True

    rm_slots = [(i, k) for i, k in soft_slots
                if verifiers.is_hard(records[i].constraints[k].id)]  # fmt: skip
    by_id = defaultdict(list)
    for i, k in rm_slots:
        by_id[records[i].constraints[k].id].append((scores[i, k] > 0.5) == (rule[i, k] > 0.5))
    count = valid.sum(axis=1)
    reward_valid = count > 0
    mean = np.where(reward_valid, (scores * valid).sum(axis=1) / np.maximum(count, 1), 0.0)
    return RewardResult(
        rewards=(scale * mean).astype(np.float32),
        scores=scores,
        valid=valid,
        reward_valid=reward_valid,
        ids=ids,
        levels=levels,
        rm_agreement_counts={cid: (int(sum(v)), len(v)) for cid, v in sorted(by_id.items())},
        soft_scored=soft_scorer is not None,
        verifier_timeouts=timeouts,
        verifier_errors=errors,
    )


def soft_stats(result: RewardResult) -> tuple[int, float | None]:
    """Soft constraints that reached the reward: ``(count, mean score)`` over the slots of ids
    that no rule verifier serves and that counted in the mean (scored by the soft scorer, or 0
    under ``soft="zero"``); the mean is None when there is none. ``rm_ids`` slots (hard ids
    scored by the RM) are not counted: ``rm_agreement`` covers them."""
    mask = np.zeros_like(result.valid)
    for i, ids in enumerate(result.ids):
        for k, cid in enumerate(ids):
            mask[i, k] = cid != MATH_ID and not verifiers.is_hard(cid)
    mask &= result.valid
    count = int(mask.sum())
    return count, (float(result.scores[mask].mean()) if count else None)


def pass_rates(result: RewardResult, records: Sequence[Record]) -> dict[str, float]:
    """Aggregates a RewardResult into pass rates for logging.

    Args:
      result: the output of ``score``.
      records: the records that were scored (used for their levels and kinds).

    Returns:
      A flat dict: ``"pass/id/<id>"`` mean score of each constraint id, ``"pass/level/L<k>"``
      mean score of all constraints of level-k responses, ``"reward/level/L<k>"`` mean reward of
      level-k responses, ``"all_pass/level/L<k>"`` fraction of level-k responses whose valid
      scores all exceed 0.5 (every hard constraint met, every soft one more likely than not),
      and ``"pass/all"``; only valid entries count (level 0 = math).
    """
    if len(records) != len(result.ids):
        raise ValueError(f"{len(records)} records but {len(result.ids)} scored responses")
    by_id: dict[str, list[float]] = defaultdict(list)
    by_level: dict[int, list[float]] = defaultdict(list)
    rewards: dict[int, list[float]] = defaultdict(list)
    all_pass: dict[int, list[float]] = defaultdict(list)
    every: list[float] = []
    for i, ids in enumerate(result.ids):
        level = int(result.levels[i])
        row = [float(result.scores[i, k]) for k, cid in enumerate(ids) if result.valid[i, k]]
        for k, cid in enumerate(ids):
            if result.valid[i, k]:
                by_id[cid].append(float(result.scores[i, k]))
        by_level[level].extend(row)
        every.extend(row)
        if result.reward_valid[i]:
            rewards[level].append(float(result.rewards[i]))
            all_pass[level].append(float(all(s > 0.5 for s in row)))
    out = {f"pass/id/{cid}": float(np.mean(v)) for cid, v in sorted(by_id.items())}
    for level in sorted(by_level):
        if by_level[level]:
            out[f"pass/level/L{level}"] = float(np.mean(by_level[level]))
        if rewards[level]:
            out[f"reward/level/L{level}"] = float(np.mean(rewards[level]))
            out[f"all_pass/level/L{level}"] = float(np.mean(all_pass[level]))
    if every:
        out["pass/all"] = float(np.mean(every))
    return out
