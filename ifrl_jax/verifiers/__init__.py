"""Hard-constraint verifiers: IFEval's and IFBench's checks, a parallel batch stage, evaluators.

Pure Python (no JAX), deterministic, offline. Public API:

* `HARD_IDS` (IFEval's 25), `IFBENCH_IDS` (IFBench's, bare; each also accepted as
  "ifbench/<id>"), `is_hard` (either), `ifbench_id`, `is_soft`, `SOFT_PREFIXES`, `check_spec`,
  `SpecError` (spec.py): which ids exist and load-time validation of their kwargs. IFBench ids
  run through the same batch stage, time limits, pool and strict/loose modes as IFEval's.
* `verify`, `verify_outcome` (batch.py), `strip_think` (core.py): one response against one
  constraint, strict or loose; `verify_outcome` also says whether the check raised or timed out.
* `verify_batch`, `verify_batch_modes`, `verify_batch_report` (batch.py), `VerifierPool`
  (pool.py): [B, K] score and validity arrays, in-process or on reusable worker processes;
  `BatchReport` adds the per-slot status and the timeout/error counts.
* Time limits hold in every mode and for every caller: `timeout_s` is capped at
  `MAX_TIMEOUT_S` and None means that cap; outside the main thread the checks run on the shared
  worker process `shared_pool()` (call it early to have it warm before the first batch). The
  design and its reasons are in core.py's docstring.
* `CHECKS` (checks.py): IFEval id -> check function, without the wrappers; IFBench's are
  `ifbench.CHECKS` (bare ids); `resolve_check` (core.py) finds either.
* The IFEval-compatible evaluator, which also scores IFBench (`benchmark="ifbench"`), lives in
  `ifrl_jax.verifiers.ifeval`.

Module layering (imports go one way): nlp, checks <- ifbench <- spec <- core <- layout <- pool
<- batch.
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
from ifrl_jax.verifiers.core import (
    MAX_TIMEOUT_S,
    STATUS_NAMES,
    THINK_MODES,
    resolve_check,
    strip_think,
)
from ifrl_jax.verifiers.layout import DEFAULT_TIMEOUT_S, BatchReport
from ifrl_jax.verifiers.pool import VerifierPool, shared_pool
from ifrl_jax.verifiers.spec import (
    HARD_IDS,
    IFBENCH_IDS,
    IFBENCH_PREFIX,
    RELATIONS,
    SOFT_IDS,
    SOFT_PREFIXES,
    SpecError,
    check_spec,
    ifbench_id,
    is_hard,
    is_soft,
)

__all__ = [
    "CHECKS",
    "DEFAULT_TIMEOUT_S",
    "HARD_IDS",
    "IFBENCH_IDS",
    "IFBENCH_PREFIX",
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
    "ifbench_id",
    "is_hard",
    "is_soft",
    "resolve_check",
    "shared_pool",
    "strip_think",
    "verify",
    "verify_batch",
    "verify_batch_modes",
    "verify_batch_report",
    "verify_outcome",
]
