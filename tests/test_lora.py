"""LoRA (models/lora.py, train_step): only adapters train, zero adapters are the base model
exactly, merged export equals the adapted forward, the PEFT layout is what PEFT computes,
shardings cover the adapters, and bad settings are one clear error."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import traverse_util
from jax.sharding import PartitionSpec as P

from ifrl_jax import models, sft, sharding
from ifrl_jax import train_step as ts
from ifrl_jax.models import lora
from ifrl_jax.models.safetensors_io import SafetensorsFile
from tests.hf_fixtures import left_padded_batch

BASE = models.get_preset("tiny")
IDS, MASK, _ = left_padded_batch(256, [7, 5, 9, 3], seed=1)


def _random_adapters(cfg, params, seed=0, scale=0.2):
    """Adapters with lora_b non-zero, so the adapted model differs from the base."""
    flat = traverse_util.flatten_dict(params)
    for i, (p, v) in enumerate(sorted(flat.items())):
        if p[-1] == "lora_b":
            flat[p] = scale * jax.random.normal(jax.random.key(seed * 1000 + i), v.shape, v.dtype)
    return traverse_util.unflatten_dict(flat)


def test_zero_adapters_give_the_base_logits_exactly():
    scan = False  # scanned layers: the merge and training tests
    base = BASE.replace(scan_layers=scan)
    params = models.init_params(base, jax.random.key(0))
    cfg = lora.configure(base, rank=4, alpha=8, targets=("all",))
    adapted = lora.attach(cfg, params, jax.random.key(1))
    flat = traverse_util.flatten_dict(adapted)
    assert sum(p[-1] == "lora_a" for p in flat) == (1 if scan else base.num_layers) * 7
    want = np.asarray(models.forward(base, params, IDS, MASK))
    np.testing.assert_array_equal(np.asarray(models.forward(cfg, adapted, IDS, MASK)), want)
    trained = _random_adapters(cfg, adapted)
    assert np.abs(np.asarray(models.forward(cfg, trained, IDS, MASK)) - want).max() > 1e-2
    # the KL reference: adapters switched off on the same base buffers
    np.testing.assert_array_equal(
        np.asarray(models.forward(cfg, lora.disable(trained), IDS, MASK)), want
    )


def _sft_batch():
    mask = MASK.astype(np.int32)
    return {"input_ids": IDS.astype(np.int32), "attention_mask": mask, "loss_mask": mask}


def _train(cfg, params, steps=3, lr=1e-2, micro_batches=1):
    optim = ts.OptimConfig(learning_rate=lr, weight_decay=0.0)
    mesh = sharding.make_mesh({"data": -1}, devices=jax.devices()[:1])
    step_fn = ts.make_update(
        lambda p, b, d: sft.loss(p, b, d, model=cfg), model=cfg, optim=optim, mesh=mesh,
        rules="replicated", denominators_fn=sft.denominators, micro_batches=micro_batches,
    )  # fmt: skip
    state = ts.init_state(params, optim=optim, shardings=step_fn.state_shardings, model=cfg)
    losses = []
    for _ in range(steps):
        state, m = step_fn(state, _sft_batch())
        losses.append(float(m["loss"]))
    return state, losses


def test_only_adapters_train_and_the_optimizer_state_is_theirs():
    scan = True  # unrolled: the GRPO job test (test_lora_jobs.py)
    base = BASE.replace(scan_layers=scan)
    params = models.init_params(base, jax.random.key(0))
    cfg = lora.configure(base, rank=4, alpha=8, targets=("q_proj", "v_proj", "down_proj"))
    adapted = lora.attach(cfg, params, jax.random.key(1))
    before = jax.device_get(adapted)
    state, losses = _train(cfg, adapted)
    assert losses[-1] < losses[0]
    after = traverse_util.flatten_dict(jax.device_get(state.params))
    for path, old in traverse_util.flatten_dict(before).items():
        changed = not np.array_equal(after[path], old)
        assert changed == (path[-1] in lora.ADAPTER_KEYS), path
    # Adam's moments cover the adapters only: two moments of num_adapter_params each
    moments = [x for x in jax.tree.leaves(state.opt_state) if x.ndim > 0]
    assert sum(x.size for x in moments) == 2 * lora.num_adapter_params(cfg)
    assert state.master is None  # fp32 adapters: no master copy


def test_lora_dropout_is_used_in_training_only_and_deterministic():
    params = models.init_params(BASE, jax.random.key(0))
    cfg = lora.configure(BASE, rank=4, alpha=8, dropout=0.5, targets=("all",))
    adapted = _random_adapters(cfg, lora.attach(cfg, params, jax.random.key(1)))
    train, frozen = lora.split(cfg, adapted)
    loss = lambda p, b, d: sft.loss(lora.combine(p, frozen), b, d, model=cfg)
    batch = jax.tree.map(jnp.asarray, _sft_batch())
    grads = jax.jit(lambda key: ts.loss_and_grads(loss, train, batch, dropout_key=key,
                                                  denominators_fn=sft.denominators)[0])  # fmt: skip
    full = lambda: ts.loss_and_grads(loss, train, batch, denominators_fn=sft.denominators)[0]
    plain = float(jax.jit(full)())
    k1, k2 = jax.random.key(1), jax.random.key(2)
    assert float(grads(k1)) == float(grads(k1)) != plain
    assert float(grads(k2)) != float(grads(k1))
    # no dropout outside the training loss: the forward is deterministic
    np.testing.assert_array_equal(models.forward(cfg, adapted, IDS, MASK),
                                  models.forward(cfg, adapted, IDS, MASK))  # fmt: skip


def test_merged_export_equals_the_adapted_forward_in_transformers(tmp_path):
    scan = True  # unrolled: the GRPO job's export (test_lora_jobs.py)
    base = BASE.replace(scan_layers=scan)
    cfg = lora.configure(base, rank=4, alpha=8, targets=("all",))
    adapted = _random_adapters(cfg, lora.attach(cfg, models.init_params(base, jax.random.key(0)),
                                                jax.random.key(1)))  # fmt: skip
    want = np.asarray(models.forward(cfg, adapted, IDS, MASK))
    merged_cfg, merged = lora.merge(cfg, adapted)
    assert merged_cfg.lora_rank == 0
    assert not any(p[-1] in lora.ADAPTER_KEYS for p in traverse_util.flatten_dict(merged))
    models.save_hf(merged_cfg, merged, str(tmp_path))
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path)).eval()
    pos = np.maximum(np.cumsum(MASK, axis=1) - 1, 0)
    with torch.no_grad():
        got = hf(input_ids=torch.tensor(IDS), attention_mask=torch.tensor(MASK),
                 position_ids=torch.tensor(pos)).logits.numpy()  # fmt: skip
    real = MASK.astype(bool)
    np.testing.assert_allclose(got[real], want[real], atol=2e-4, rtol=1e-4)


def test_peft_layout_is_the_adapted_model_when_applied_as_peft_does(tmp_path):
    cfg = lora.configure(BASE, rank=4, alpha=12, targets=("q_proj", "o_proj", "up_proj"))
    params = models.init_params(BASE, jax.random.key(0))
    adapted = _random_adapters(cfg, lora.attach(cfg, params, jax.random.key(1)))
    models.save_hf(BASE, params, str(tmp_path / "base"))
    lora.save_peft(cfg, adapted, str(tmp_path / "adapter"), base_model="base")
    conf = json.load(open(tmp_path / "adapter" / "adapter_config.json"))
    assert (conf["peft_type"], conf["r"], conf["lora_alpha"]) == ("LORA", 4, 12.0)
    assert conf["target_modules"] == ["q_proj", "o_proj", "up_proj"]
    st = SafetensorsFile(str(tmp_path / "adapter" / "adapter_model.safetensors"))
    assert len(st.keys()) == 2 * 3 * BASE.num_layers
    # PEFT's forward: W x + (alpha / r) B (A x), i.e. W += (alpha / r) B @ A on HF's [out, in]
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "base")).eval()
    sd = hf.state_dict()
    scale = conf["lora_alpha"] / conf["r"]
    for name in st.keys():
        if ".lora_A." in name:
            a = torch.tensor(st.get(name))
            b = torch.tensor(st.get(name.replace("lora_A", "lora_B")))
            assert a.shape[0] == b.shape[1] == 4
            key = name.removeprefix("base_model.model.").replace(".lora_A.weight", ".weight")
            sd[key] = sd[key] + scale * b @ a
    hf.load_state_dict(sd)
    pos = np.maximum(np.cumsum(MASK, axis=1) - 1, 0)
    with torch.no_grad():
        got = hf(input_ids=torch.tensor(IDS), attention_mask=torch.tensor(MASK),
                 position_ids=torch.tensor(pos)).logits.numpy()  # fmt: skip
    want = np.asarray(models.forward(cfg, adapted, IDS, MASK))
    real = MASK.astype(bool)
    np.testing.assert_allclose(got[real], want[real], atol=2e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="no LoRA adapters"):
        lora.save_peft(BASE, params, str(tmp_path / "x"))
    assert not os.path.exists(tmp_path / "x")


def test_sharding_presets_cover_adapters():
    cfg = lora.configure(BASE, rank=4, targets=("q_proj", "down_proj"))
    mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tp": 2})
    sh = traverse_util.flatten_dict(models.param_shardings(cfg, mesh, "fsdp_tp"))
    layer = "layers_0"
    assert sh[(layer, "self_attn", "q_proj", "lora_a")].spec == P("fsdp", None)
    assert sh[(layer, "self_attn", "q_proj", "lora_b")].spec == P(None, "tp", None)
    assert sh[(layer, "mlp", "down_proj", "lora_a")].spec == P("tp", None)
    assert sh[(layer, "mlp", "down_proj", "lora_b")].spec == P(None, "fsdp")
    # and a LoRA train state places on the mesh: moments sharded like their adapters
    st = ts.state_shardings(cfg, ts.OptimConfig(), mesh, "fsdp_tp")
    mu = traverse_util.flatten_dict(st.opt_state[1][0].mu)
    assert set(mu) == {p for p in sh if p[-1] in lora.ADAPTER_KEYS}
    assert mu[(layer, "self_attn", "q_proj", "lora_a")].spec == P("fsdp", None)


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(rank=4, targets=("qkv_proj",)), "'qkv_proj' names no module"),
        (dict(rank=65, targets=("q_proj",)), "lora_rank=65 is above the width 64 of q_proj"),
        (dict(rank=-1, targets=("q_proj",)), "lora_rank=-1"),
        (dict(rank=4, targets=()), "lora_targets is empty"),
        (dict(rank=4, dropout=1.0), "lora_dropout=1.0"),
    ],
)
def test_bad_lora_settings_are_one_clear_error(kw, match):
    with pytest.raises(ValueError, match=match):
        lora.configure(BASE, **kw)
