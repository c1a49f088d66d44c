"""Hidden rule oracles for the tiny instruction set's soft constraints: for measuring only.

The shipped tiny set (ifrl_jax/assets/instructions/) has soft ids that no rule verifier serves:
the policy and the reward model see them only as text, and GRPO's reward takes the RM's
probability for them, as for any soft constraint (../shared/DESIGN.md). To *measure* how well
the RM judges them and whether the policy learns them, each has a rule here that says what
the text asks for. Nothing on the training path calls this module: the evaluation (held-out
soft pass rate), the RM's held-out summary (agreement with the oracle) and the GRPO loop's
reward-hacking guard (the RM against the oracle on fresh rollouts) do.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import numpy as np

WEATHER_WORDS = frozenset(
    "weather sunny rainy rain cloudy windy snowy snow stormy foggy".split()
)  # fmt: skip


def _enthusiastic(response: str) -> bool:
    return "!" in response


def _weather(response: str) -> bool:
    return bool(WEATHER_WORDS & set(re.findall(r"[a-z]+", response.lower())))


ORACLES: dict[str, Callable[[str], bool]] = {
    "style:enthusiastic": _enthusiastic,  # "Write with enthusiasm ...": an exclamation
    "soft_content:weather": _weather,  # "Mention the weather ...": a weather word
}


def has_oracle(cid: str) -> bool:
    return cid in ORACLES


def check(cid: str, response: str) -> bool:
    """The oracle's verdict for soft id `cid` on `response` (KeyError for an id without one)."""
    return ORACLES[cid](response)


def verdicts(ids: Sequence[str], responses: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(indices of the items whose id has an oracle, their verdicts as a bool array)."""
    idx = np.array([i for i, cid in enumerate(ids) if cid in ORACLES], int)
    return idx, np.array([check(ids[i], responses[i]) for i in idx], bool)


def agreement(ids: Sequence[str], decisions, responses: Sequence[str]) -> dict:
    """How often a yes/no decision per item (e.g. the RM's P > 0.5) equals the oracle.

    Returns:
      {"agreement": overall fraction or None when no id has an oracle, "per_id": {id: fraction},
      "count": items judged}.
    """
    idx, verdict = verdicts(ids, responses)
    decisions = np.asarray(decisions, bool)
    if not len(idx):
        return {"agreement": None, "per_id": {}, "count": 0}
    agree = decisions[idx] == verdict
    judged = np.array(ids)[idx]
    per_id = {str(c): float(agree[judged == c].mean()) for c in sorted(set(judged))}
    return {"agreement": float(agree.mean()), "per_id": per_id, "count": int(len(idx))}
