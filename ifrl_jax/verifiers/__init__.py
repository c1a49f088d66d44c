"""Hard-constraint verifiers: IFEval's 25 checks, a parallel batch stage, an IFEval evaluator.

Pure Python (no JAX), deterministic, offline. Public API:

* `HARD_IDS`, `is_hard`, `is_soft`, `SOFT_PREFIXES`, `check_spec`, `SpecError` (spec.py):
  which ids exist and load-time validation of their kwargs.
* `verify`, `verify_outcome` (batch.py), `strip_think` (core.py): one response against one
  constraint, strict or loose; `verify_outcome` also says whether the check raised or timed out.
* `verify_batch`, `verify_batch_modes`, `verify_batch_report` (batch.py), `VerifierPool`
  (pool.py): [B, K] score and validity arrays, in-process or on reusable worker processes;
  `BatchReport` adds the per-slot status and the timeout/error counts.
* Time limits hold in every mode and for every caller: `timeout_s` is capped at
  `MAX_TIMEOUT_S` and None means that cap; outside the main thread the checks run on the shared
  worker process `shared_pool()` (call it early to have it warm before the first batch). The
  design and its reasons are in core.py's docstring.
* `CHECKS` (checks.py): instruction id -> check function, without the wrappers.
* The IFEval-compatible evaluator lives in `ifrl_jax.verifiers.ifeval`.

Module layering (imports go one way): spec, checks, nlp <- core <- layout <- pool <- batch.
"""

from ifrl_jax.verifiers.batch import (
    Outcome,
    verify,
    verify_batch,
    verify_batch_modes,
    verify_batch_report,
    verify_outcome,
)
from ifrl_jax.verifiers.checks import CHECKS
from ifrl_jax.verifiers.core import MAX_TIMEOUT_S, STATUS_NAMES, THINK_MODES, strip_think
from ifrl_jax.verifiers.layout import DEFAULT_TIMEOUT_S, BatchReport
from ifrl_jax.verifiers.pool import VerifierPool, shared_pool
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
    "MAX_TIMEOUT_S",
    "RELATIONS",
    "SOFT_IDS",
    "SOFT_PREFIXES",
    "STATUS_NAMES",
    "THINK_MODES",
    "BatchReport",
    "Outcome",
    "SpecError",
    "VerifierPool",
    "check_spec",
    "is_hard",
    "is_soft",
    "shared_pool",
    "strip_think",
    "verify",
    "verify_batch",
    "verify_batch_modes",
    "verify_batch_report",
    "verify_outcome",
]
