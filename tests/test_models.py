"""Model parity against transformers (PyTorch, CPU) and HF checkpoint import/export."""

from __future__ import annotations

import dataclasses
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from ifrl_jax import models
from ifrl_jax.models import kernels
from ifrl_jax.models.qwen2 import Qwen2
from tests.hf_fixtures import hf_logits, left_padded_batch, random_hf_model, tiny_hf_config

FP32_TOL = 1e-4  # max-abs logits difference, fp32, ours vs transformers
BF16_U = 2.0**-8  # bf16 unit roundoff: 8 significant bits, round to nearest
LENGTHS = [9, 5, 2, 9]  # left-padded rows of different lengths


@pytest.fixture(scope="module", params=[False, True], ids=["untied", "tied"])
def hf_dir(request, tmp_path_factory):
    model = random_hf_model(tiny_hf_config(tied=request.param), seed=int(request.param))
    path = tmp_path_factory.mktemp("hf") / "model"
    model.save_pretrained(path)
    return str(path), model


def _valid(a, mask):
    return a[mask.astype(bool)]


def test_logits_match_transformers_end_to_end_and_per_layer(hf_dir):
    path, hf = hf_dir
    cfg, params = models.load_hf(path)
    ids, mask, pos = left_padded_batch(cfg.vocab_size, LENGTHS)
    ref_logits, ref_hidden = hf_logits(hf, ids, mask, pos)
    ours = np.asarray(models.forward(cfg, params, ids, mask))
    assert ours.shape == ref_logits.shape
    assert np.abs(_valid(ours, mask) - _valid(ref_logits, mask)).max() < FP32_TOL

    # Per layer: the output of each decoder layer (HF hidden_states[i + 1], the last one normed).
    t = ids.shape[1]
    _, state = Qwen2(cfg).apply(
        {"params": params},
        jnp.asarray(ids, jnp.int32),
        jnp.asarray(pos, jnp.int32),
        models.attention_mask(jnp.asarray(mask), 0, t),
        capture_intermediates=True,
        mutable=["intermediates"],
    )
    inter = state["intermediates"]
    for i in range(cfg.num_layers - 1):
        (((x, _), _),) = inter[f"layers_{i}"]["__call__"]
        err = np.abs(_valid(np.asarray(x), mask) - _valid(ref_hidden[i + 1], mask)).max()
        assert err < FP32_TOL, (i, err)
    (normed,) = inter["norm"]["__call__"]
    assert np.abs(_valid(np.asarray(normed), mask) - _valid(ref_hidden[-1], mask)).max() < FP32_TOL


def test_scanned_and_remat_layers_give_the_same_logits(hf_dir):
    path, hf = hf_dir
    ids, mask, pos = left_padded_batch(256, LENGTHS)
    ref, _ = hf_logits(hf, ids, mask, pos)
    for kw in (dict(scan_layers=True), dict(remat="full"), dict(scan_layers=True, remat="dots")):
        cfg, params = models.load_hf(path, **kw)
        ours = np.asarray(models.forward(cfg, params, ids, mask))
        assert np.abs(_valid(ours, mask) - _valid(ref, mask)).max() < FP32_TOL, kw


def test_bf16_checkpoint_loads_and_matches(tmp_path):
    hf = random_hf_model(tiny_hf_config(tied=False), seed=3)
    hf.to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
    with open(tmp_path / "bf16" / "model.safetensors", "rb") as f:
        assert b"BF16" in f.read(4096)
    ids, mask, pos = left_padded_batch(256, LENGTHS)
    ref, _ = hf_logits(hf.float(), ids, mask, pos)  # fp32 model holding the bf16-rounded weights
    cfg, params = models.load_hf(str(tmp_path / "bf16"))  # bf16 on disk -> fp32 params: exact
    assert (
        np.abs(
            _valid(np.asarray(models.forward(cfg, params, ids, mask)), mask) - _valid(ref, mask)
        ).max()
        < FP32_TOL
    )
    cfg16, p16 = models.load_hf(str(tmp_path / "bf16"), dtype="bfloat16", compute_dtype="bfloat16")
    assert p16["embed_tokens"]["embedding"].dtype == jnp.bfloat16
    out16 = np.asarray(models.forward(cfg16, p16, ids, mask)).astype(np.float32)
    # bf16 compute rounds every op's output to 8 significant bits (relative error <= u); the
    # logits inherit a few roundings of values of their own scale (the head's output, its normed
    # input, the residual stream). We allow 4 of them: 4u * max|logits| (0.024 here; measured
    # 0.012-0.014 = 2.0-2.4u * max|logits| on three random fixtures). A fixed 0.1 was 6% of
    # max|logits| (1.6), a quarter of their std (0.4): it passed the head's input rounded to
    # float8_e5m2 (error 0.091).
    ref_valid = _valid(ref, mask)
    tol = 4 * BF16_U * np.abs(ref_valid).max()
    assert np.abs(_valid(out16, mask) - ref_valid).max() < tol


def test_long_left_padded_rows_at_rope_theta_1e6_match_transformers(tmp_path):
    """Qwen2.5's rope_theta (1e6) at positions up to 1099: logits equal transformers' for a
    1100-token row and a 700-token row left-padded by 400 (the short fixtures stop at 9)."""
    config = tiny_hf_config(tied=False, rope_theta=1e6, max_position_embeddings=2048)
    hf = random_hf_model(config, seed=5)
    hf.save_pretrained(tmp_path / "m")
    cfg, params = models.load_hf(str(tmp_path / "m"))
    assert cfg.rope_theta == 1e6
    ids, mask, pos = left_padded_batch(cfg.vocab_size, [1100, 700], seed=5)
    ref, _ = hf_logits(hf, ids, mask, pos)
    ours = np.asarray(models.forward(cfg, params, ids, mask))
    err = np.abs(ours - ref).max(-1)  # [B, T]
    assert err[0, 1000:].max() < FP32_TOL and err[mask.astype(bool)].max() < FP32_TOL


def test_sharded_checkpoint_and_both_config_styles(tmp_path):
    hf = random_hf_model(tiny_hf_config(tied=False), seed=4)
    hf.save_pretrained(tmp_path / "m", max_shard_size="40KB")
    assert os.path.exists(tmp_path / "m" / "model.safetensors.index.json")
    ids, mask, pos = left_padded_batch(256, LENGTHS)
    ref, _ = hf_logits(hf, ids, mask, pos)
    cfg_path = tmp_path / "m" / "config.json"
    d = json.loads(cfg_path.read_text())
    theta = d.get("rope_theta") or d["rope_parameters"]["rope_theta"]
    styles = {
        "4.x": {**{k: v for k, v in d.items() if k != "rope_parameters"}, "rope_theta": theta},
        "5.x": {
            **{k: v for k, v in d.items() if k != "rope_theta"},
            "rope_parameters": {"rope_type": "default", "rope_theta": theta},
        },
    }
    for style, content in styles.items():
        cfg_path.write_text(json.dumps(content))
        cfg, params = models.load_hf(str(tmp_path / "m"))
        assert cfg.rope_theta == 10000.0, style
        out = np.asarray(models.forward(cfg, params, ids, mask))
        assert np.abs(_valid(out, mask) - _valid(ref, mask)).max() < FP32_TOL, style


@pytest.mark.parametrize("scan", [False, True])
def test_export_round_trip_is_exact_and_transformers_loads_it(hf_dir, tmp_path, scan):
    path, hf = hf_dir
    cfg, params = models.load_hf(path, scan_layers=scan)
    models.save_hf(cfg, params, str(tmp_path / "out"), max_shard_bytes=60_000)
    assert os.path.exists(tmp_path / "out" / "model.safetensors.index.json")  # sharded export
    cfg2, params2 = models.load_hf(str(tmp_path / "out"), scan_layers=scan)
    assert cfg2 == cfg
    jax.tree_util.tree_map(np.testing.assert_array_equal, params, params2)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "out")).eval()
    for (name, a), (_, b) in zip(hf.state_dict().items(), reloaded.state_dict().items()):
        assert torch.equal(a, b), name


def test_missing_unexpected_and_truncated_checkpoints_are_clear_errors(hf_dir, tmp_path):
    path, _ = hf_dir
    cfg, params = models.load_hf(path)
    models.save_hf(cfg, params, str(tmp_path / "m"))
    d = json.loads((tmp_path / "m" / "config.json").read_text())
    d["num_hidden_layers"] = 4  # config asks for a layer the weights lack
    (tmp_path / "m" / "config.json").write_text(json.dumps(d))
    with pytest.raises(ValueError, match=r"missing tensors \['model\.layers\.3\."):
        models.load_hf(str(tmp_path / "m"))
    d["num_hidden_layers"] = 2
    (tmp_path / "m" / "config.json").write_text(json.dumps(d))
    with pytest.raises(ValueError, match=r"unexpected tensors \['model\.layers\.2\."):
        models.load_hf(str(tmp_path / "m"))
    d["num_hidden_layers"] = 3
    (tmp_path / "m" / "config.json").write_text(json.dumps(d))
    st = tmp_path / "m" / "model.safetensors"
    st.write_bytes(st.read_bytes()[:-1000])
    with pytest.raises(ValueError, match=r"model\.safetensors: tensor .* ends at byte .*truncated"):
        models.load_hf(str(tmp_path / "m"))
    with pytest.raises(FileNotFoundError, match="config.json"):
        models.load_hf(str(tmp_path / "nowhere"))


def _einsum_attention(q, k, v, mask):
    """Plain numpy reference: repeat kv heads, softmax(q k^T / sqrt(H)) v."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    g = q.shape[2] // k.shape[2]
    k, v = np.repeat(k, g, axis=2), np.repeat(v, g, axis=2)
    logits = np.einsum("btnh,bsnh->bnts", q, k) / np.sqrt(q.shape[-1])
    logits = np.where(np.asarray(mask)[:, None], logits, -np.inf)
    logits -= logits.max(-1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(-1, keepdims=True)
    return np.einsum("bnts,bsnh->btnh", p, v)


@pytest.mark.parametrize("impl", ["auto", "xla"])
def test_attention_matches_einsum_reference(impl):
    kq, kk, kv = jax.random.split(jax.random.key(0), 3)
    q = jax.random.normal(kq, (2, 5, 4, 8))
    k = jax.random.normal(kk, (2, 7, 2, 8))
    v = jax.random.normal(kv, (2, 7, 2, 8))
    key_valid = jnp.array([[0, 0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1]])
    mask = models.attention_mask(key_valid, 2, 5)  # queries at slots 2..6
    out = models.dot_product_attention(q, k, v, mask, impl=impl)
    np.testing.assert_allclose(np.asarray(out), _einsum_attention(q, k, v, mask), atol=1e-5)
    # The same through jax.nn.dot_product_attention's XLA path (what "cudnn" swaps on GPU).
    ref = jax.nn.dot_product_attention(q, k, v, mask=mask[:, None], implementation="xla")
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=1e-5)


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("chunk", [1, 3, 4, None])
def test_chunked_token_logprobs_equal_full_softmax(chunk, tied):
    """Values and gradients (hand-written VJP) equal autodiff through the full softmax."""
    cfg = dataclasses.replace(models.get_preset("tiny"), tie_word_embeddings=tied)
    params = models.init_params(cfg, jax.random.key(1))
    ids = jax.random.randint(jax.random.key(2), (3, 10), 1, cfg.vocab_size)
    mask = jnp.ones_like(ids)

    def chunked(p):
        logp, ent = models.sequence_logprobs(cfg, p, ids, mask, chunk_size=chunk, with_entropy=True)
        return logp.sum() + 0.1 * ent.sum(), (logp, ent)

    def full(p):
        logits = models.forward(cfg, p, ids, mask)[:, :-1]
        lp = jax.nn.log_softmax(logits, -1)
        logp = jnp.take_along_axis(lp, ids[:, 1:, None], -1)[..., 0]
        ent = -(jnp.exp(lp) * lp).sum(-1)
        return logp.sum() + 0.1 * ent.sum(), (logp, ent)

    (v1, (lp1, e1)), g1 = jax.value_and_grad(chunked, has_aux=True)(params)
    (v2, (lp2, e2)), g2 = jax.value_and_grad(full, has_aux=True)(params)
    np.testing.assert_allclose(lp1[:, 1:], lp2, atol=1e-5)
    np.testing.assert_allclose(e1[:, 1:], e2, atol=1e-5)
    assert np.all(np.asarray(lp1[:, 0]) == 0)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), g1, g2)


def test_sequence_logprobs_from_a_first_position():
    cfg = models.get_preset("tiny")
    params = models.init_params(cfg, jax.random.key(1))
    ids = jax.random.randint(jax.random.key(2), (2, 12), 1, cfg.vocab_size)
    mask = jnp.ones_like(ids)
    every = models.sequence_logprobs(cfg, params, ids, mask)
    late = models.sequence_logprobs(cfg, params, ids, mask, first=7, chunk_size=2)
    np.testing.assert_allclose(late[:, 7:], every[:, 7:], atol=1e-5)
    assert not np.asarray(late[:, :7]).any()
    with pytest.raises(ValueError, match="first=12"):
        models.sequence_logprobs(cfg, params, ids, mask, first=12)


def test_chunked_logprobs_never_hold_full_logits():
    cfg = models.get_preset("tiny")
    params = models.init_params(cfg, jax.random.key(1))
    hidden = jnp.zeros((2, 64, cfg.hidden_size))
    targets = jnp.zeros((2, 64), jnp.int32)
    f = lambda h: models.token_logprobs(cfg, params, h, targets, chunk_size=8).sum()
    hlo = jax.jit(jax.grad(f)).lower(hidden).as_text()
    assert f"2x64x{cfg.vocab_size}" not in hlo and f"2x8x{cfg.vocab_size}" in hlo


@pytest.mark.parametrize("name", [n for n in models.PRESETS if n != "tiny"])
def test_real_presets_by_abstract_evaluation(name):
    cfg = models.get_preset(name)
    shapes = models.abstract_params(cfg)
    n = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(shapes))
    assert n == cfg.num_params()
    ids = jax.ShapeDtypeStruct((2, 16), jnp.int32)
    out = jax.eval_shape(
        lambda p, i: models.forward(cfg, p, i, jnp.ones((2, 16), jnp.int32)), shapes, ids
    )
    assert out.shape == (2, 16, cfg.vocab_size)


def test_published_sizes():
    billions = {n: models.get_preset(n).num_params() / 1e9 for n in models.PRESETS}
    assert 0.49 < billions["qwen2_5_0_5b"] < 0.50  # 494M
    assert 7.6 < billions["qwen2_5_7b"] < 7.7  # 7.62B
    assert 32.7 < billions["qwen2_5_32b"] < 32.8  # 32.76B


def test_boxed_params_carry_logical_axes():
    cfg = models.get_preset("tiny")
    axes = models.logical_axes(cfg)
    for spec in jax.tree_util.tree_leaves(
        axes, is_leaf=lambda s: isinstance(s, jax.sharding.PartitionSpec)
    ):
        assert all(a is not None for a in spec)  # every dim of every param is named
    assert nn.unbox  # flax logical partitioning is the mechanism


@pytest.mark.parametrize(
    "x_shape,k_shape,in_ndim",
    [((2, 5, 6), (6, 4), 1), ((2, 5, 6), (6, 3, 2), 1), ((2, 5, 3, 2), (3, 2, 6), 2)],
)
def test_cpu_dense_vjp_equals_autodiff(x_shape, k_shape, in_ndim):
    """The CPU weight-gradient layout (kernels.dense_cpu) gives autodiff's dx and dkernel."""
    kx, kk, kg = jax.random.split(jax.random.key(0), 3)
    x, kernel = jax.random.normal(kx, x_shape), jax.random.normal(kk, k_shape)
    out_shape = x_shape[: len(x_shape) - in_ndim] + k_shape[in_ndim:]
    g = jax.random.normal(kg, out_shape)
    ours = jax.grad(lambda a, b: jnp.sum(kernels.dense_cpu(a, b, in_ndim) * g), (0, 1))(x, kernel)
    ref = jax.grad(lambda a, b: jnp.sum(kernels.dense(a, b, in_ndim) * g), (0, 1))(x, kernel)
    for a, b in zip(ours, ref):
        assert a.shape == b.shape
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)
