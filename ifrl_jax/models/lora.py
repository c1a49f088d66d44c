"""LoRA: low-rank adapters on the attention and MLP projections, trained alone.

The adapters live in the param tree beside the kernel they adapt (`q_proj: {kernel, bias,
lora_a, lora_b}`; `qwen2.Linear` adds (alpha / r) * x @ lora_a @ lora_b), so every function
that takes params (sampling, log-probs, sharding, checkpoints) takes an adapted model as is.

    cfg = lora.configure(base_cfg, rank=16, alpha=32, targets=("all",))
    params = lora.attach(cfg, base_params, key, mesh=mesh, rules=rules)   # B = 0: same model
    trainable, frozen = lora.split(cfg, params)     # train_step differentiates `trainable` only
    ref = lora.disable(params)                      # the KL reference: the base, no 2nd copy
    base_cfg, merged = lora.merge(cfg, params)      # a plain model (models.save_hf exports it)
    lora.save_peft(cfg, params, path)               # the adapters alone, PEFT's layout

What trains with LoRA on: the adapters, plus a classifier's new `score` head (the reward model);
the optimizer state is theirs only. Adapter shardings follow the base weight's axes on the
in/out dims; the rank axis ("lora") is replicated in every preset.
"""

from __future__ import annotations

import functools
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from ifrl_jax.models import api, registry
from ifrl_jax.models.config import LORA_TARGETS, ModelConfig
from ifrl_jax.models.safetensors_io import write

ADAPTER_KEYS = ("lora_a", "lora_b")
# A LoRA run's workdir holds its settings here (the exported config.json is the merged model's),
# so that `checkpoint.load_policy` rebuilds the adapted model from the run's checkpoint.
SETTINGS_FILE = "lora.json"


def settings(cfg: ModelConfig) -> dict:
    """The LoRA fields of cfg as `configure`'s keyword arguments (JSON-ready)."""
    return {"rank": cfg.lora_rank, "alpha": cfg.lora_alpha, "dropout": cfg.lora_dropout,
            "targets": list(cfg.lora_targets)}  # fmt: skip


def has_adapters(tree: dict) -> bool:
    """Whether a param-shaped tree holds LoRA adapters."""
    return any(p[-1] in ADAPTER_KEYS for p in traverse_util.flatten_dict(tree))


def configure(
    cfg: ModelConfig, *, rank: int, alpha: float = 16.0, dropout: float = 0.0,
    targets=("all",),
) -> ModelConfig:  # fmt: skip
    """cfg with LoRA on ("all" in targets: every projection); rank 0 returns cfg unchanged.

    Raises ValueError (from ModelConfig) for a target that names no module or a rank above a
    target's width."""
    if not rank:
        return cfg
    targets = tuple(targets)
    if "all" in targets:
        targets = LORA_TARGETS
    return cfg.replace(lora_rank=rank, lora_alpha=float(alpha), lora_dropout=float(dropout),
                       lora_targets=targets)  # fmt: skip


def base_config(cfg: ModelConfig) -> ModelConfig:
    """cfg without LoRA (the model the adapters sit on)."""
    return cfg.replace(lora_rank=0, lora_dropout=0.0, lora_targets=())


def is_trainable(cfg: ModelConfig, path: tuple[str, ...]) -> bool:
    """Whether the param at `path` trains: every param without LoRA; with it, the adapters and
    a classifier's `score` head."""
    return not cfg.lora_rank or path[-1] in ADAPTER_KEYS or path[0] == "score"


def split(cfg: ModelConfig, tree: dict) -> tuple[dict, dict]:
    """(trainable, frozen) sub-trees of a param-shaped tree (nested dicts; `combine` inverts)."""
    flat = traverse_util.flatten_dict(tree)
    train = {p: v for p, v in flat.items() if is_trainable(cfg, p)}
    frozen = {p: v for p, v in flat.items() if not is_trainable(cfg, p)}
    return traverse_util.unflatten_dict(train), traverse_util.unflatten_dict(frozen)


def combine(trainable: dict, frozen: dict) -> dict:
    """The whole tree from `split`'s two parts."""
    flat = traverse_util.flatten_dict(frozen)
    flat.update(traverse_util.flatten_dict(trainable))
    return traverse_util.unflatten_dict(flat)


def num_adapter_params(cfg: ModelConfig) -> int:
    """Adapter parameters of a LoRA config (0 without LoRA)."""
    if not cfg.lora_rank:
        return 0
    per_layer = sum(sum(cfg.lora_dims(t)) * cfg.lora_rank for t in cfg.lora_targets)
    return per_layer * cfg.num_layers


def _init_adapter(path, shape, dtype, key):
    """lora_b: zeros; lora_a [(L,) *in, r]: uniform(+-1/sqrt(fan_in)), PEFT's kaiming init."""
    if path[-1] == "lora_b":
        return jnp.zeros(shape, dtype)
    in_dims = shape[1:-1] if path[0] == "layers" else shape[:-1]
    bound = 1.0 / math.sqrt(math.prod(in_dims))
    return jax.random.uniform(key, shape, dtype, -bound, bound)


def attach(cfg: ModelConfig, params: dict, key: jax.Array, *, mesh=None, rules=None) -> dict:
    """Adds fresh adapters (lora_b = 0, so the model is unchanged) to base params for a LoRA
    `cfg`; each adapter is created in its sharding. Adapters already present are kept."""
    abstract = traverse_util.flatten_dict(api.abstract_params(cfg))
    shardings = api.param_shardings(cfg, mesh, rules) if mesh is not None else None
    shardings = traverse_util.flatten_dict(shardings) if shardings is not None else {}
    flat = traverse_util.flatten_dict(params)
    missing = [p for p in abstract if p not in flat and p[-1] not in ADAPTER_KEYS]
    if missing:
        raise ValueError(f"params do not match the model config: missing {missing[:3]}")
    new = sorted(p for p in abstract if p[-1] in ADAPTER_KEYS and p not in flat)

    def init(key):  # one program for every new adapter
        keys = jax.random.split(key, max(len(new), 1))
        return {p: _init_adapter(p, abstract[p].shape, abstract[p].dtype, k)
                for p, k in zip(new, keys)}  # fmt: skip

    out_sh = {p: shardings[p] for p in new} if shardings else None
    flat.update(jax.jit(init, out_shardings=out_sh)(key))
    return traverse_util.unflatten_dict(flat)


def disable(params: dict) -> dict:
    """The same tree with every lora_b zero: the base model's outputs exactly, sharing the base
    weights' buffers (build it when needed: a donated train state invalidates them)."""
    flat = traverse_util.flatten_dict(params)
    bs = {p: v for p, v in flat.items() if p[-1] == "lora_b"}
    zeros = jax.jit(lambda t: jax.tree.map(jnp.zeros_like, t),
                    out_shardings={p: v.sharding for p, v in bs.items()})  # fmt: skip
    flat.update(zeros(bs))
    return traverse_util.unflatten_dict(flat)


def _delta(a: jax.Array, b: jax.Array, scanned: bool) -> jax.Array:
    """a @ b as a kernel-shaped array (fp32): a [(L,) *in, r], b [(L,) r, *out]."""
    lead = a.shape[:1] if scanned else ()
    r = a.shape[-1]
    in_shape, out_shape = a.shape[len(lead) : -1], b.shape[len(lead) + 1 :]
    a2 = a.reshape(*lead, -1, r).astype(jnp.float32)
    b2 = b.reshape(*lead, r, -1).astype(jnp.float32)
    return jnp.matmul(a2, b2).reshape(*lead, *in_shape, *out_shape)


def merge(cfg: ModelConfig, params: dict) -> tuple[ModelConfig, dict]:
    """(base config, params with kernel += (alpha / r) a @ b and no adapters): a plain model
    whose outputs equal the adapted one's (up to rounding), for `models.save_hf`."""
    if not cfg.lora_rank:
        return cfg, params
    flat = traverse_util.flatten_dict(params)
    out = {p: v for p, v in flat.items() if p[-1] not in ADAPTER_KEYS}
    scale = cfg.lora_scale

    @functools.partial(jax.jit, static_argnums=3)
    def fold(kernel, a, b, scanned):
        return (kernel.astype(jnp.float32) + scale * _delta(a, b, scanned)).astype(kernel.dtype)

    for p in flat:
        if p[-1] == "lora_a":
            mod = p[:-1]
            k, b = flat[mod + ("kernel",)], flat[mod + ("lora_b",)]
            out[mod + ("kernel",)] = fold(k, flat[p], b, p[0] == "layers")
    return base_config(cfg), traverse_util.unflatten_dict(out)


def _hf_module_names(cfg: ModelConfig, path: tuple[str, ...]) -> list[str]:
    """HF module names (one per layer when scanned) of the projection holding adapter `path`."""
    table = registry.get(cfg.family).layer_table
    suffix = table[path[1:-1] + ("kernel",)][0].removesuffix(".weight")
    if path[0] == "layers":
        return [f"model.layers.{i}.{suffix}" for i in range(cfg.num_layers)]
    return [f"model.layers.{int(path[0].split('_')[1])}.{suffix}"]


def save_peft(cfg: ModelConfig, params: dict, path: str, *, base_model: str = "") -> None:
    """Writes the adapters alone in PEFT's layout (adapter_config.json and
    adapter_model.safetensors: `base_model.model.<module>.lora_A.weight` [r, in] and
    `lora_B.weight` [out, r], alpha / r applied by the loader). Causal LMs only: a classifier's
    trained head has no adapter form (export it merged)."""
    if not cfg.lora_rank:
        raise ValueError("save_peft: the model has no LoRA adapters (lora_rank=0)")
    if cfg.num_labels:
        raise ValueError("save_peft: a classifier's head trains too; export it merged (save_hf)")
    tensors = {}
    flat = traverse_util.flatten_dict(params)
    for p, a in flat.items():
        if p[-1] != "lora_a":
            continue
        b = flat[p[:-1] + ("lora_b",)]
        a, b = np.asarray(jax.device_get(a)), np.asarray(jax.device_get(b))
        names = _hf_module_names(cfg, p)
        if p[0] != "layers":
            a, b = a[None], b[None]
        r = cfg.lora_rank
        for i, name in enumerate(names):
            pre = f"base_model.model.{name}"
            tensors[f"{pre}.lora_A.weight"] = np.ascontiguousarray(a[i].reshape(-1, r).T)
            tensors[f"{pre}.lora_B.weight"] = np.ascontiguousarray(b[i].reshape(r, -1).T)
    if jax.process_index() != 0:
        return
    os.makedirs(path, exist_ok=True)
    write(os.path.join(path, "adapter_model.safetensors"), tensors)
    config = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": cfg.lora_rank,
        "lora_alpha": cfg.lora_alpha, "lora_dropout": cfg.lora_dropout,
        "target_modules": list(cfg.lora_targets), "bias": "none", "fan_in_fan_out": False,
        "inference_mode": True, "init_lora_weights": True, "use_rslora": False,
        "use_dora": False, "modules_to_save": None, "base_model_name_or_path": base_model,
    }  # fmt: skip
    with open(os.path.join(path, "adapter_config.json"), "w") as f:
        json.dump(config, f, indent=2)
