"""Model families: ModelConfig.family -> Linen module, HF architecture names, HF tensor table.

A family is one module file that builds its `Family` and calls `register` at import time, and
one import line in `models/__init__.py`. `qwen2.py` is the example. HF import reads the family
from config.json's `model_type` (else its `architectures`) through `family_for_hf`.

The tensor tables map a flax param path (inside one decoder layer, or at the top level) to
(HF tensor name, to_flax(hf_array, cfg), to_hf(flax_array, cfg)). The layouts most HF decoders
share are defined here: HF Linear weights are [out, in]; our kernels are [in, out] with heads
split out (q_proj [D, N, H], o_proj [N, H, D]).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import numpy as np

Layout = Callable[[np.ndarray, object], np.ndarray]  # (array, ModelConfig) -> array
Table = Mapping[tuple[str, ...], tuple[str, Layout, Layout]]


@dataclasses.dataclass(frozen=True)
class Family:
    """One architecture family.

    Attributes:
      name: the ModelConfig.family value and HF config.json's `model_type`.
      module: Linen module class; `module(cfg)(ids, positions, mask, cache, cache_index,
        head=...)` returns (logits or hidden states, cache), as `qwen2.Qwen2`.
      causal_lm: HF architecture name of the causal LM (written to config.json).
      classifier: HF architecture name of the sequence classifier (cfg.num_labels > 0).
      layer_table: per decoder layer, flax path -> (HF name suffix after `model.layers.{i}.`,
        to_flax, to_hf).
      top_table: top-level flax path -> (full HF name, to_flax, to_hf).
      check_hf_config: raises ValueError (naming `where`) on config.json features the module
        does not implement; called as check_hf_config(config_dict, where).
      hf_config_extra: fields export writes into config.json beyond the common ones.
    """

    name: str
    module: type
    causal_lm: str
    classifier: str
    layer_table: Table
    top_table: Table
    check_hf_config: Callable[[dict, str], None] = lambda d, where: None
    hf_config_extra: Mapping[str, object] = dataclasses.field(default_factory=dict)

    @property
    def architectures(self) -> tuple[str, str]:
        return (self.causal_lm, self.classifier)


_FAMILIES: dict[str, Family] = {}


def register(family: Family) -> Family:
    """Adds a family (at import of its module); a second family of the same name is an error."""
    if family.name in _FAMILIES and _FAMILIES[family.name] is not family:
        raise ValueError(f"model family {family.name!r} is already registered")
    _FAMILIES[family.name] = family
    return family


def known() -> list[str]:
    """Names of the registered families, sorted."""
    return sorted(_FAMILIES)


def get(name: str) -> Family:
    """The registered family `name`; a ValueError naming it and the known ones otherwise."""
    if name not in _FAMILIES:
        raise ValueError(f"unknown model family {name!r}; known: {known()}")
    return _FAMILIES[name]


def family_for_hf(d: dict, *, where: str = "config.json", default: str = "qwen2") -> Family:
    """The family of a HF config dict: by `model_type`, else by `architectures`, else default."""
    model_type = d.get("model_type")
    if model_type is not None:
        if model_type not in _FAMILIES:
            raise ValueError(
                f"{where}: model_type={model_type!r} is not a supported model family; "
                f"known: {known()}"
            )
        return _FAMILIES[model_type]
    archs = d.get("architectures") or []
    for fam in _FAMILIES.values():
        if any(a in fam.architectures for a in archs):
            return fam
    if archs:
        raise ValueError(
            f"{where}: architectures={archs} match no supported model family; known: "
            + ", ".join(f"{f.name} {list(f.architectures)}" for f in _FAMILIES.values())
        )
    return get(default)


# --- layouts most HF decoders share (each a (to_flax, to_hf) pair) -------------------------------


def heads_kernel(heads: str) -> tuple[Layout, Layout]:
    """HF [n*H, D] <-> ours [D, n, H], n = getattr(cfg, heads)."""
    return (
        lambda a, c: a.T.reshape(c.hidden_size, getattr(c, heads), c.head_dim),
        lambda a, c: a.reshape(c.hidden_size, -1).T,
    )


def heads_bias(heads: str) -> tuple[Layout, Layout]:
    """HF [n*H] <-> ours [n, H], n = getattr(cfg, heads)."""
    return (lambda a, c: a.reshape(getattr(c, heads), c.head_dim), lambda a, c: a.reshape(-1))


O_PROJ = (  # HF [D, N*H] <-> ours [N, H, D]
    lambda a, c: a.T.reshape(c.num_heads, c.head_dim, c.hidden_size),
    lambda a, c: a.reshape(-1, c.hidden_size).T,
)
TRANSPOSE = (lambda a, c: a.T, lambda a, c: a.T)
IDENTITY = (lambda a, c: a, lambda a, c: a)
