"""Hard-constraint verifiers: IFEval's 25 checks, a parallel batch stage, an IFEval evaluator.

Pure Python (no JAX), deterministic, offline. Public API:

* `HARD_IDS`, `is_hard`, `is_soft`, `SOFT_PREFIXES`, `check_spec`, `SpecError` (spec.py):
  which ids exist and load-time validation of their kwargs.
* `verify`, `strip_think` (core.py): one response against one constraint, strict or loose.
* `verify_batch`, `verify_batch_modes` (batch.py), `VerifierPool` (pool.py): [B, K] score
  and validity arrays, in-process or on reusable worker processes, per-check time limits.
* `CHECKS` (checks.py): instruction id -> check function, without the wrappers.
* The IFEval-compatible evaluator lives in `ifrl_jax.verifiers.ifeval`.
"""

from ifrl_jax.verifiers.batch import DEFAULT_TIMEOUT_S, verify_batch, verify_batch_modes
from ifrl_jax.verifiers.checks import CHECKS
from ifrl_jax.verifiers.core import THINK_MODES, strip_think, verify
from ifrl_jax.verifiers.pool import VerifierPool
from ifrl_jax.verifiers.spec import (
    HARD_IDS,
    RELATIONS,
    SOFT_IDS,
    SOFT_PREFIXES,
    SpecError,
    check_spec,
    is_hard,
    is_soft,
)

__all__ = [
    "CHECKS",
    "DEFAULT_TIMEOUT_S",
    "HARD_IDS",
    "RELATIONS",
    "SOFT_IDS",
    "SOFT_PREFIXES",
    "THINK_MODES",
    "SpecError",
    "VerifierPool",
    "check_spec",
    "is_hard",
    "is_soft",
    "strip_think",
    "verify",
    "verify_batch",
    "verify_batch_modes",
]
