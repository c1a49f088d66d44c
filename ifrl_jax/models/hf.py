"""Hugging Face checkpoints in and out: config.json (4.x and 5.x styles) and safetensors.

The model family (Qwen2 today) comes from config.json's `model_type` / `architectures` through
`models/registry.py`, which also holds each family's tensor name/layout table.
Import reads one tensor at a time from memory-mapped files and places it directly in its target
sharding (`jax.make_array_from_callback`); a scanned param ([L, ...]) is allocated on the devices
in its final sharding and filled one layer at a time (a donated, jitted update), so peak host
memory is about one layer's tensor, never all layers of a weight stacked.
Export plans every file and header from the params' shapes, then fetches one tensor (one layer
slice of a scanned param, sliced on the devices) at a time and streams its bytes into the open
file, so peak host memory is about one layer slice (converted copies included).
Layouts: HF Linear weights are [out, in]; ours are kernels [in, out] with heads split out
(q_proj [D, N, H], o_proj [N, H, D]).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import re

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ifrl_jax.models import api, registry
from ifrl_jax.models.config import ModelConfig
from ifrl_jax.models.safetensors_io import SafetensorsFile, Writer

_NP_DTYPES = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16, "float16": np.float16}
# Buffers some exporters include; not parameters.
_IGNORED = re.compile(r".*rotary_emb\.inv_freq$")


# --- config -----------------------------------------------------------------------------------


def config_from_hf(d: dict, *, where: str = "config.json", **overrides) -> ModelConfig:
    """ModelConfig from a HF config dict (rope_theta at top level, or 5.x `rope_parameters`).

    The family comes from `model_type` (else `architectures`) through the registry; a model_type
    no family registers is a ValueError naming it and the known ones.
    """
    family = registry.family_for_hf(d, where=where)
    family.check_hf_config(d, where)
    rope = d.get("rope_parameters") or d.get("rope_scaling") or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type != "default":
        raise ValueError(f"{where}: rope type {rope_type!r} is not supported (only 'default')")
    theta = d.get("rope_theta", rope.get("rope_theta"))
    if theta is None:
        raise ValueError(f"{where}: no rope_theta (neither top level nor in rope_parameters)")
    try:
        heads = d["num_attention_heads"]
        kw = dict(
            vocab_size=d["vocab_size"],
            hidden_size=d["hidden_size"],
            num_layers=d["num_hidden_layers"],
            num_heads=heads,
            num_kv_heads=d.get("num_key_value_heads") or heads,
            head_dim=d.get("head_dim") or d["hidden_size"] // heads,
            intermediate_size=d["intermediate_size"],
            tie_word_embeddings=bool(d.get("tie_word_embeddings", False)),
            rope_theta=float(theta),
            rms_norm_eps=float(d.get("rms_norm_eps", 1e-6)),
            max_position_embeddings=int(d.get("max_position_embeddings", 32768)),
            pad_token_id=d.get("pad_token_id"),
            family=family.name,
        )
    except KeyError as e:
        raise ValueError(f"{where}: missing field {e.args[0]!r}") from None
    if family.classifier in (d.get("architectures") or []):
        kw["num_labels"] = len(d.get("id2label") or {}) or int(d.get("num_labels", 2))
    kw.update(overrides)
    return ModelConfig(**kw)


def config_to_hf(cfg: ModelConfig, *, dtype: str) -> dict:
    """HF config dict (4.x layout with top-level rope_theta, which 5.x reads as well)."""
    family = registry.get(cfg.family)
    d = {
        "architectures": [family.classifier if cfg.num_labels else family.causal_lm],
        "model_type": family.name,
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads,
        "head_dim": cfg.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": cfg.max_position_embeddings,
        "rms_norm_eps": cfg.rms_norm_eps,
        "rope_theta": cfg.rope_theta,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        **family.hf_config_extra,
        "attention_dropout": 0.0,
        "torch_dtype": dtype,
    }
    if cfg.pad_token_id is not None:
        d["pad_token_id"] = cfg.pad_token_id
    if cfg.num_labels:
        d["num_labels"] = cfg.num_labels
        d["id2label"] = {str(i): f"LABEL_{i}" for i in range(cfg.num_labels)}
        d["label2id"] = {f"LABEL_{i}": i for i in range(cfg.num_labels)}
    return d


# --- the plan: flax paths -> HF names through the family's table --------------------------------


def _flat(tree, prefix=()):
    for k, v in tree.items():
        if isinstance(v, dict):
            yield from _flat(v, prefix + (k,))
        else:
            yield prefix + (k,), v


def _set(tree, path, value):
    for k in path[:-1]:
        tree = tree.setdefault(k, {})
    tree[path[-1]] = value


def _plan(cfg: ModelConfig, abstract) -> dict:
    """flax path -> (list of HF names (one per layer when scanned), to_flax, to_hf, scanned)."""
    family = registry.get(cfg.family)
    plan = {}
    for path, _ in _flat(abstract):
        if path in family.top_table:
            name, to_flax, to_hf = family.top_table[path]
            plan[path] = ([name], to_flax, to_hf, False)
        elif path[0] == "layers":  # scanned: [L, ...]
            suffix, to_flax, to_hf = family.layer_table[path[1:]]
            names = [f"model.layers.{i}.{suffix}" for i in range(cfg.num_layers)]
            plan[path] = (names, to_flax, to_hf, True)
        else:
            i = int(path[0].split("_")[1])
            suffix, to_flax, to_hf = family.layer_table[path[1:]]
            plan[path] = ([f"model.layers.{i}.{suffix}"], to_flax, to_hf, False)
    return plan


# --- import -------------------------------------------------------------------------------------


def _open_tensors(path: str) -> dict[str, SafetensorsFile]:
    index = os.path.join(path, "model.safetensors.index.json")
    single = os.path.join(path, "model.safetensors")
    if os.path.exists(index):
        with open(index) as f:
            weight_map = json.load(f)["weight_map"]
        files = {
            fn: SafetensorsFile(os.path.join(path, fn)) for fn in sorted(set(weight_map.values()))
        }
        out = {}
        for name, fn in weight_map.items():
            if name not in files[fn].header:
                raise ValueError(
                    f"{os.path.join(path, fn)}: tensor {name!r} listed in {index} is missing"
                )
            out[name] = files[fn]
        return out
    if os.path.exists(single):
        st = SafetensorsFile(single)
        return {name: st for name in st.keys()}
    raise FileNotFoundError(
        f"{path}: no model.safetensors or model.safetensors.index.json (pytorch .bin files are "
        "not read: they are pickles)"
    )


def load_hf(
    path: str,
    *,
    dtype: str = "float32",
    mesh: Mesh | None = None,
    rules=None,
    **overrides,
) -> tuple[ModelConfig, dict]:
    """Loads a local HF directory of a registered family (causal LM or sequence classifier).

    Args:
      path: directory with config.json and safetensors weights (single or sharded).
      dtype: param dtype to hold the weights in ("float32", "bfloat16", ...).
      mesh, rules: place each tensor straight into its sharding (rules: preset name or table).
      overrides: ModelConfig fields (compute `dtype` is spelled `compute_dtype` here, plus
        `remat`, `scan_layers`, `attention_impl`).
    Returns:
      (cfg, params).
    """
    cfg_path = os.path.join(path, "config.json")
    if not os.path.exists(cfg_path):
        raise FileNotFoundError(f"{cfg_path}: not found (is {path!r} a HF model directory?)")
    with open(cfg_path) as f:
        hf_cfg = json.load(f)
    if "compute_dtype" in overrides:
        overrides["dtype"] = overrides.pop("compute_dtype")
    cfg = config_from_hf(hf_cfg, where=cfg_path, param_dtype=dtype, **overrides)
    abstract = api.abstract_params(cfg)
    shardings = api.param_shardings(cfg, mesh, rules) if mesh is not None else None
    plan = _plan(cfg, abstract)
    tensors = _open_tensors(path)
    wanted = {n for names, *_ in plan.values() for n in names}
    present = {n for n in tensors if not _IGNORED.match(n)}
    if cfg.tie_word_embeddings and "lm_head.weight" in present:
        present.discard(
            "lm_head.weight"
        )  # some exporters save the tied copy; ours is the embedding
    missing, unexpected = sorted(wanted - present), sorted(present - wanted)
    if missing or unexpected:
        raise ValueError(
            f"{path}: checkpoint does not match config.json: missing tensors {missing}, "
            f"unexpected tensors {unexpected}"
        )
    np_dtype = _NP_DTYPES[dtype]
    params: dict = {}
    for fpath, (names, to_flax, _, scanned) in plan.items():
        target = _leaf(abstract, fpath)
        target_sharding = None if shardings is None else _leaf(shardings, fpath)

        def convert(name, to_flax=to_flax):
            arr = to_flax(tensors[name].get(name), cfg)
            return np.asarray(arr, dtype=np_dtype)

        if scanned:
            arr = _load_scanned(path, names, convert, target, target_sharding)
        else:
            host = convert(names[0])
            _check_shape(path, names[0], host.shape, target.shape)
            arr = _place(host, target_sharding)
            del host
        _set(params, fpath, arr)
    return cfg, params


def _check_shape(path, name, got, want) -> None:
    if got != want:
        raise ValueError(
            f"{path}: tensor {name!r} converts to shape {got}, expected {want} from config.json"
        )


def _place(host: np.ndarray, sharding) -> jax.Array:
    """A host array on the devices: in `sharding`, or (None) on the default device."""
    if sharding is None:
        return jax.device_put(host)
    return jax.make_array_from_callback(host.shape, sharding, lambda i: host[i])


@functools.cache
def _stack_fns(sharding):
    """(zeros(shape, dtype), set_layer(stack, x, i)) jitted into `sharding`; the stack donated."""
    kw = {} if sharding is None else {"out_shardings": sharding}
    zeros = jax.jit(jnp.zeros, static_argnums=(0, 1), **kw)
    set_layer = jax.jit(
        lambda stack, x, i: jax.lax.dynamic_update_index_in_dim(stack, x, i, 0),
        donate_argnums=0,
        **kw,
    )
    return zeros, set_layer


def _load_scanned(path, names, convert, target, sharding) -> jax.Array:
    """A scanned param [L, ...] filled on the devices one layer at a time (one layer on the host).

    Each layer is placed with `sharding` minus its leading layer axis and written into its slot
    of the stack, which is allocated once in `sharding` and donated at every update.
    """
    host = convert(names[0])
    _check_shape(path, names[0], (len(names),) + host.shape, target.shape)
    layer_sharding = None
    if sharding is not None:
        layer_sharding = NamedSharding(sharding.mesh, PartitionSpec(*tuple(sharding.spec)[1:]))
    zeros, set_layer = _stack_fns(sharding)
    stack = zeros(target.shape, np.dtype(target.dtype))
    for i, name in enumerate(names):
        if i:
            host = convert(name)
            _check_shape(path, name, host.shape, target.shape[1:])
        stack = set_layer(stack, _place(host, layer_sharding), i)
        del host
    return stack


def _leaf(tree, path):
    for k in path:
        tree = tree[k]
    return tree


# --- export -------------------------------------------------------------------------------------


def _take_layer(x, i: int):
    """x[i] of a scanned param, sliced where x lives (on the devices for a jax.Array)."""
    if isinstance(x, jax.Array):
        return _TAKE_LAYER(x, i)
    return x[i]


_TAKE_LAYER = jax.jit(lambda x, i: jax.lax.dynamic_index_in_dim(x, i, 0, keepdims=False))


def _to_host(x) -> np.ndarray:
    if getattr(x, "is_fully_addressable", True):
        return np.asarray(jax.device_get(x))
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def _export_plan(cfg: ModelConfig, params: dict, np_dtype, max_shard_bytes: int) -> list[list]:
    """Every output tensor from the params' shapes alone, in file order, split into shard files.

    Returns:
      shards, each a list of (HF name, flax path, layer index or None, to_hf, HF shape).
    """
    entries = []
    for fpath, (names, _, to_hf, scanned) in _plan(cfg, params).items():
        x = _leaf(params, fpath)
        one = jax.ShapeDtypeStruct(x.shape[1:] if scanned else x.shape, x.dtype)
        shape = tuple(jax.eval_shape(lambda a, f=to_hf: f(a, cfg), one).shape)
        entries += [(n, fpath, i if scanned else None, to_hf, shape) for i, n in enumerate(names)]
    shards: list[list] = [[]]
    size = 0
    for e in entries:
        nbytes = math.prod(e[4]) * np.dtype(np_dtype).itemsize
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(e)
        size += nbytes
    return shards


def save_hf(
    cfg: ModelConfig,
    params: dict,
    path: str,
    *,
    dtype: str | None = None,
    max_shard_bytes: int = 4 << 30,
) -> None:
    """Writes a directory that `transformers.AutoModelForCausalLM.from_pretrained` loads.

    Streams: the files and their headers are planned from the params' shapes, then one tensor
    at a time (one layer `x[l]` of a scanned param, sliced on the devices) is fetched, converted
    and written at its place in the open file; only process 0 writes, and peak host memory is
    about one layer slice. A param that is not fully addressable (multi-host) is gathered one
    layer slice at a time with `process_allgather`, in which every process takes part (and so
    holds that slice for a moment); fully addressable ones are fetched by process 0 alone.
    Files above `max_shard_bytes` are split into `model-0000i-of-0000n.safetensors` plus an
    index.
    """
    dtype = dtype or cfg.param_dtype
    np_dtype = _NP_DTYPES[dtype]
    write_here = jax.process_index() == 0
    shards = _export_plan(cfg, params, np_dtype, max_shard_bytes)
    if write_here:
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, "config.json"), "w") as f:
            json.dump(config_to_hf(cfg, dtype=dtype), f, indent=2)
    files = ["model.safetensors"]
    if len(shards) > 1:
        files = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    for fn, shard in zip(files, shards):
        specs = [(name, np_dtype, shape) for name, _, _, _, shape in shard]
        out = Writer(os.path.join(path, fn), specs) if write_here else contextlib.nullcontext()
        with out as writer:
            for name, fpath, layer, to_hf, _ in shard:
                x = _leaf(params, fpath)
                if writer is None and getattr(x, "is_fully_addressable", True):
                    continue  # nothing to gather: process 0 fetches it alone
                host = _to_host(x if layer is None else _take_layer(x, layer))
                if writer is not None:
                    arr = np.ascontiguousarray(to_hf(host, cfg)).astype(np_dtype, copy=False)
                    writer.add(name, arr)
                del host
    if not write_here or len(shards) == 1:
        return
    weight_map = {e[0]: fn for fn, shard in zip(files, shards) for e in shard}
    total = sum(math.prod(e[4]) for shard in shards for e in shard) * np.dtype(np_dtype).itemsize
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    with open(os.path.join(path, "model.safetensors.index.json"), "w") as f:
        json.dump(index, f, indent=2)
    logging.info("wrote %d shards to %s", len(shards), path)
