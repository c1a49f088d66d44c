"""Qwen2 models: config presets, the Flax module, functional API, HF checkpoint I/O."""

from ifrl_jax.models.api import (
    abstract_params,
    apply,
    balanced_chunk,
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

__all__ = [
    "PRESETS",
    "ModelConfig",
    "abstract_params",
    "apply",
    "balanced_chunk",
    "attention_mask",
    "config_from_hf",
    "config_to_hf",
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
