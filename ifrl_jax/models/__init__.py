"""Decoder models: config presets, the Flax modules, functional API, HF checkpoint I/O.

Model families register themselves in `registry` when their module is imported: import each
family module here (today only `qwen2`).
"""

from ifrl_jax.models import qwen2  # noqa: F401  (a family: importing it registers it)
from ifrl_jax.models.api import (
    abstract_params,
    apply,
    balanced_chunk,
    check_backend,
    dropout_rng,
    forward,
    hidden_states,
    init_params,
    lm_head_weight,
    logical_axes,
    param_shardings,
    positions_from_mask,
    sequence_logprobs,
    token_logprobs,
)
from ifrl_jax.models.config import PRESETS, ModelConfig, get_preset
from ifrl_jax.models.hf import config_from_hf, config_to_hf, load_hf, save_hf
from ifrl_jax.models.qwen2 import attention_mask, dot_product_attention
from ifrl_jax.models.registry import Family

__all__ = [
    "PRESETS",
    "Family",
    "ModelConfig",
    "abstract_params",
    "apply",
    "balanced_chunk",
    "attention_mask",
    "check_backend",
    "config_from_hf",
    "config_to_hf",
    "dropout_rng",
    "dot_product_attention",
    "forward",
    "get_preset",
    "hidden_states",
    "init_params",
    "lm_head_weight",
    "load_hf",
    "logical_axes",
    "param_shardings",
    "positions_from_mask",
    "save_hf",
    "sequence_logprobs",
    "token_logprobs",
]
