"""Model families: ModelConfig.family -> module and HF table through `models.registry`."""

from __future__ import annotations

import dataclasses
import json

import jax
import numpy as np
import pytest

from ifrl_jax import models
from ifrl_jax.models import api, qwen2, registry
from ifrl_jax.models.safetensors_io import SafetensorsFile

HF_FIELDS = dict(
    vocab_size=256, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, intermediate_size=128, rope_theta=10000.0,
)  # fmt: skip


def test_default_family_is_qwen2_and_hf_names_come_from_it():
    cfg = models.get_preset("tiny")
    assert cfg.family == "qwen2" and registry.known() == ["qwen2"]
    assert isinstance(api.module(cfg), qwen2.Qwen2)
    d = models.config_to_hf(cfg, dtype="float32")
    assert d["model_type"] == "qwen2" and d["architectures"] == ["Qwen2ForCausalLM"]
    assert d["use_sliding_window"] is False  # the family's own config.json fields
    d = models.config_to_hf(cfg.replace(num_labels=2), dtype="float32")
    assert d["architectures"] == ["Qwen2ForSequenceClassification"]
    # config.json without model_type: the family from `architectures`, else the default.
    for extra in ({"architectures": ["Qwen2ForSequenceClassification"]}, {}):
        got = models.config_from_hf({**HF_FIELDS, **extra})
        assert got.family == "qwen2" and got.num_labels == (2 if extra else 0)


def test_unknown_family_is_a_clear_error():
    known = r"known: \['qwen2'\]"
    with pytest.raises(ValueError, match=rf"unknown model family 'llama'; {known}"):
        registry.get("llama")
    cfg = models.get_preset("tiny", family="llama")
    for build in (
        lambda: models.init_params(cfg, jax.random.key(0)),
        lambda: models.abstract_params(cfg),
        lambda: models.config_to_hf(cfg, dtype="float32"),
    ):
        with pytest.raises(ValueError, match=rf"unknown model family 'llama'; {known}"):
            build()
    with pytest.raises(ValueError, match=rf"x/config.json: model_type='llama' .*; {known}"):
        models.config_from_hf({**HF_FIELDS, "model_type": "llama"}, where="x/config.json")
    with pytest.raises(ValueError, match=r"\['LlamaForCausalLM'\] match no .* qwen2"):
        models.config_from_hf({**HF_FIELDS, "architectures": ["LlamaForCausalLM"]})


class _Toy(qwen2.Qwen2):
    """A stand-in second family: Qwen2's module under another class and HF names."""


def test_a_registered_family_drives_the_module_and_hf_io(tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "_FAMILIES", dict(registry._FAMILIES))  # undone after
    top = {**qwen2.FAMILY.top_table}
    top[("embed_tokens", "embedding")] = ("toy.embed.weight", *registry.IDENTITY)
    toy = registry.register(
        registry.Family(
            name="toy", module=_Toy, causal_lm="ToyForCausalLM", classifier="ToyForScore",
            layer_table=qwen2.FAMILY.layer_table, top_table=top,
        )
    )  # fmt: skip
    with pytest.raises(ValueError, match="'toy' is already registered"):
        registry.register(dataclasses.replace(toy, causal_lm="Other"))
    cfg = models.get_preset("tiny", family="toy")
    rng = np.random.default_rng(0)  # random host params: no init program to compile
    params = jax.tree_util.tree_map(
        lambda a: rng.standard_normal(a.shape).astype(np.float32), models.abstract_params(cfg)
    )
    assert isinstance(api.module(cfg), _Toy)

    models.save_hf(cfg, params, str(tmp_path))
    d = json.loads((tmp_path / "config.json").read_text())
    assert d["model_type"] == "toy" and d["architectures"] == ["ToyForCausalLM"]
    assert "use_sliding_window" not in d
    names = set(SafetensorsFile(str(tmp_path / "model.safetensors")).keys())
    assert "toy.embed.weight" in names and "model.embed_tokens.weight" not in names
    cfg2, params2 = models.load_hf(str(tmp_path))
    assert cfg2 == cfg
    jax.tree_util.tree_map(np.testing.assert_array_equal, params2, params)
