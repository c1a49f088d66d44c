"""Sharding presets on 8 fake CPU devices: golden specs, equality with one device, errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from ifrl_jax import models, sharding
from ifrl_jax.errors import UserError

B = ("data", "fsdp")
MESHES = {
    "replicated": {"data": 8},
    "fsdp": {"fsdp": 8},
    "tp": {"data": 4, "tp": 2},
    "fsdp_tp": {"fsdp": 4, "tp": 2},
}
# Golden table: param -> expected PartitionSpec under each preset (tiny preset, unrolled layers).
GOLDEN = {
    ("embed_tokens", "embedding"): {
        "replicated": P(None, None), "fsdp": P(None, "fsdp"), "tp": P("tp", None),
        "fsdp_tp": P("tp", "fsdp"),
    },
    ("layers_0", "self_attn", "q_proj", "kernel"): {
        "replicated": P(None, None, None), "fsdp": P("fsdp", None, None),
        "tp": P(None, "tp", None), "fsdp_tp": P("fsdp", "tp", None),
    },
    ("layers_0", "self_attn", "k_proj", "bias"): {
        "replicated": P(None, None), "fsdp": P(None, None), "tp": P("tp", None),
        "fsdp_tp": P("tp", None),
    },
    ("layers_1", "self_attn", "o_proj", "kernel"): {
        "replicated": P(None, None, None), "fsdp": P(None, None, "fsdp"),
        "tp": P("tp", None, None), "fsdp_tp": P("tp", None, "fsdp"),
    },
    ("layers_1", "mlp", "gate_proj", "kernel"): {
        "replicated": P(None, None), "fsdp": P("fsdp", None), "tp": P(None, "tp"),
        "fsdp_tp": P("fsdp", "tp"),
    },
    ("layers_1", "mlp", "down_proj", "kernel"): {
        "replicated": P(None, None), "fsdp": P(None, "fsdp"), "tp": P("tp", None),
        "fsdp_tp": P("tp", "fsdp"),
    },
    ("norm", "scale"): {
        "replicated": P(None), "fsdp": P("fsdp"), "tp": P(None), "fsdp_tp": P("fsdp"),
    },
    ("lm_head", "kernel"): {
        "replicated": P(None, None), "fsdp": P("fsdp", None), "tp": P(None, "tp"),
        "fsdp_tp": P("fsdp", "tp"),
    },
}  # fmt: skip
LOGITS_SPEC = {"replicated": P(B, None, None), "fsdp": P(B, None, None),
               "tp": P(B, None, "tp"), "fsdp_tp": P(B, None, "tp")}  # fmt: skip


def _leaf(tree, path):
    for k in path:
        tree = tree[k]
    return tree


@pytest.fixture(scope="module")
def tiny():
    cfg = models.get_preset("tiny")
    params = models.init_params(cfg, jax.random.key(0))
    ids = jax.random.randint(jax.random.key(1), (8, 12), 1, cfg.vocab_size)
    mask = jnp.ones_like(ids).at[:4, :5].set(0)  # half the rows left-padded
    ref = np.asarray(models.forward(cfg, params, ids, mask))  # one device, no constraints
    return cfg, params, ids, mask, ref


@pytest.mark.parametrize("preset", sorted(MESHES))
def test_preset_specs_and_forward_equal_single_device(tiny, preset):
    cfg, params, ids, mask, ref = tiny
    mesh = sharding.make_mesh(MESHES[preset])
    shardings = models.param_shardings(cfg, mesh, preset)
    for path, specs in GOLDEN.items():
        assert _leaf(shardings, path).spec == specs[preset], path
    placed = jax.device_put(params, shardings)
    for path, specs in GOLDEN.items():  # the arrays really are laid out that way
        assert _leaf(placed, path).sharding.spec == specs[preset], path
    logits = models.forward(cfg, placed, ids, mask, mesh=mesh, rules=preset)
    # The activation constraints took effect (compared as layouts: size-1 axes normalise away).
    assert logits.sharding.is_equivalent_to(NamedSharding(mesh, LOGITS_SPEC[preset]), 3)
    assert not logits.sharding.is_fully_replicated  # the batch is split under every preset
    np.testing.assert_allclose(np.asarray(logits), ref, atol=1e-5)


def test_init_params_directly_sharded():
    cfg = models.get_preset("tiny")
    mesh = sharding.make_mesh(MESHES["fsdp_tp"])
    params = models.init_params(cfg, jax.random.key(0), mesh=mesh, rules="fsdp_tp")
    q = params["layers_0"]["self_attn"]["q_proj"]["kernel"]
    assert q.sharding.spec == P("fsdp", "tp", None)
    assert q.addressable_shards[0].data.shape == (16, 2, 16)  # [64/4, 4/2, 16]


def test_scanned_layers_get_a_layers_axis():
    cfg = models.get_preset("tiny", scan_layers=True)
    mesh = sharding.make_mesh(MESHES["fsdp_tp"])
    spec = models.param_shardings(cfg, mesh, "fsdp_tp")["layers"]["self_attn"]["q_proj"]["kernel"]
    assert spec.spec == P(None, "fsdp", "tp", None)


def test_parse_mesh():
    assert sharding.parse_mesh("fsdp:8", flag="mesh") == {"fsdp": 8}
    want = {"data": 1, "fsdp": -1, "tp": 2}
    assert sharding.parse_mesh("data:1, fsdp:-1,tp:2", flag="mesh") == want
    assert sharding.make_mesh(sharding.parse_mesh("data:2,fsdp:-1", flag="mesh")).shape == {
        "data": 2, "fsdp": 4, "tp": 1,
    }  # fmt: skip


@pytest.mark.parametrize(
    "spec, message",
    [
        ("fsdp=2", r"'fsdp=2' is not axis:size; use axis:size pairs such as data:1,fsdp:-1"),
        ("fsdp8", "not axis:size"),
        ("model:2", "unknown axis 'model'"),
        ("fsdp:x", "not an integer"),
        ("fsdp:2,fsdp:4", "given twice"),
        ("fsdp:0", "must be positive"),
        ("data:-1,fsdp:-1", "at most one axis may be -1"),
        ("", "is empty"),
    ],
)
def test_parse_mesh_errors_name_the_flag(spec, message):
    with pytest.raises(UserError, match=message) as e:
        sharding.parse_mesh(spec, flag="mesh")
    assert str(e.value).startswith(f"--mesh={spec!r}:" if spec else "--mesh is empty")


def test_mesh_errors_name_the_flag_and_numbers():
    with pytest.raises(UserError, match=r"--mesh=.*needs 12 devices, but 8 are available"):
        sharding.make_mesh({"data": 3, "fsdp": 4})
    with pytest.raises(UserError, match=r"fixed axes multiply to 3, which does not divide the 8"):
        sharding.make_mesh({"data": 3, "fsdp": -1})
    with pytest.raises(UserError, match=r"--config.mesh: unknown mesh axes \['model'\]"):
        sharding.make_mesh({"model": 2}, flag="config.mesh")
    assert sharding.make_mesh({"data": 2, "fsdp": -1}).shape == {"data": 2, "fsdp": 4, "tp": 1}


def test_indivisible_dimension_is_a_clear_error():
    cfg = models.get_preset("tiny")  # 4 query heads, 2 kv heads
    mesh = sharding.make_mesh({"tp": 8})
    with pytest.raises(UserError, match=r"k_proj.*size 2, which mesh axes \('tp',\) \(size 8\)"):
        models.param_shardings(cfg, mesh, "tp")
    with pytest.raises(
        UserError, match=r"unknown sharding preset 'zero3' \(flag --config.sharding\)"
    ):
        sharding.get_rules("zero3")
    with pytest.raises(UserError, match=r"\(flag --sharding\)"):
        sharding.get_rules("zero3", flag="sharding")


def test_constrain_is_identity_without_context_and_pins_inside():
    mesh = sharding.make_mesh({"fsdp": 8})
    x = jnp.ones((8, 4))
    f = jax.jit(lambda a: sharding.constrain(a * 2, ("act_batch", None)))
    assert f(x).sharding.is_fully_replicated

    def g(a):
        with sharding.activation_sharding(mesh, sharding.get_rules("fsdp")):
            return sharding.constrain(a * 2, ("act_batch", None))

    out = jax.jit(g)(x).sharding
    assert out.is_equivalent_to(NamedSharding(mesh, P(B, None)), 2) and not out.is_fully_replicated
