"""Planner: mesh flags, per-device bytes equal to what real sharded arrays hold, fit verdicts,
FLOP counting through scans, and a lowered (not compiled) plan of the tiny preset."""

import dataclasses

import jax
import jax.numpy as jnp
import pytest

from ifrl_jax import models, planner, sharding
from ifrl_jax import train_step as ts

GiB = planner.GiB
MESHES = {  # one mesh per preset on the 8 fake devices, using the axes the preset shards over
    "replicated": {"data": 8},
    "fsdp": {"fsdp": 8},
    "tp": {"data": 4, "tp": 2},
    "fsdp_tp": {"fsdp": 4, "tp": 2},
}


def test_parse_mesh():
    assert planner.parse_mesh("fsdp:8") == {"fsdp": 8}
    assert planner.parse_mesh("data:1, fsdp:-1,tp:2") == {"data": 1, "fsdp": -1, "tp": 2}
    assert planner.parse_meshes("fsdp:8;fsdp:4,tp:2;") == [{"fsdp": 8}, {"fsdp": 4, "tp": 2}]


@pytest.mark.parametrize(
    "spec, message",
    [
        ("fsdp8", "not axis:size"),
        ("model:2", "unknown axis 'model'"),
        ("fsdp:x", "not an integer"),
        ("fsdp:2,fsdp:4", "given twice"),
        ("fsdp:0", "must be positive"),
        ("", "is empty"),
    ],
)
def test_parse_mesh_errors_name_the_flag(spec, message):
    with pytest.raises(ValueError, match=message) as e:
        planner.parse_mesh(spec, flag="mesh")
    assert str(e.value).startswith("--mesh")
    with pytest.raises(ValueError, match="--meshes"):
        planner.parse_meshes(f"fsdp:8;{spec}" if spec else " ; ")


@pytest.fixture(scope="module", params=["tiny", "cpu_small"])
def sharded_params(request):
    """(cfg, params made by init_params on the 8-device mesh under the fsdp_tp preset)."""
    cfg = models.get_preset(request.param)
    mesh = sharding.make_mesh(MESHES["fsdp_tp"])
    return cfg, models.init_params(cfg, jax.random.key(0), mesh=mesh, rules="fsdp_tp")


def _per_device_bytes(tree, mesh) -> list[int]:
    order = mesh.devices.flatten().tolist()
    out = [0] * len(order)
    for x in jax.tree.leaves(tree):
        for shard in x.addressable_shards:
            out[order.index(shard.device)] += shard.data.nbytes
    return out


@pytest.mark.parametrize("preset", sorted(MESHES))
def test_planned_param_bytes_equal_real_sharded_arrays(sharded_params, preset):
    cfg, params = sharded_params
    mesh = sharding.make_mesh(MESHES[preset])
    if preset != "fsdp_tp":  # the same real params, moved into this preset's shardings
        params = jax.device_put(params, models.param_shardings(cfg, mesh, preset))
    planned = planner.state_bytes(ts.TrainConfig(model=cfg), mesh, sharding.get_rules(preset))
    assert _per_device_bytes(params, mesh) == [planned["params"]] * 8
    assert planned["gradients"] == planned["params"]  # float32 params: same bytes
    assert planned["optimizer"] == 2 * planned["params"] + 12  # mu, nu; 3 int32 counters


def test_planned_optimizer_bytes_equal_real_state(sharded_params):
    cfg, params = sharded_params
    tcfg = ts.TrainConfig(model=cfg)
    mesh = sharding.make_mesh(MESHES["fsdp_tp"])
    state = ts.init_state(params, cfg=tcfg, shardings=ts.state_shardings(tcfg, mesh, "fsdp_tp"))
    planned = planner.state_bytes(tcfg, mesh, sharding.get_rules("fsdp_tp"))
    assert _per_device_bytes((state.opt_state, state.step), mesh) == [planned["optimizer"]] * 8


def test_fits():
    assert planner.fits(72 * GiB, "a100-80gb")  # 0.9 x 80 GiB
    assert not planner.fits(72 * GiB + 1, "a100-80gb")
    assert planner.fits(40 * GiB, "a100-40gb", headroom=1.0)
    assert not planner.fits(15 * GiB, "tpu-v5e")  # 16 GiB x 0.9 = 14.4 GiB
    assert planner.fits(85 * GiB, "tpu-v5p")
    with pytest.raises(ValueError, match="--accelerator"):
        planner.fits(1, "v100")
    with pytest.raises(ValueError, match="--headroom"):
        planner.fits(1, "h100-80gb", headroom=1.5)


def test_matmul_flops_counts_scan_bodies_times_their_length():
    def f(x, w):
        return jax.lax.scan(lambda c, wi: (c @ wi, None), x, w)[0]

    x = jax.ShapeDtypeStruct((8, 16), jnp.float32)
    w = jax.ShapeDtypeStruct((10, 16, 16), jnp.float32)
    want = 10 * 2 * 8 * 16 * 16
    assert planner.matmul_flops(jax.make_jaxpr(f)(x, w)) == want
    # XLA's cost analysis counts the loop body once: the reason the planner walks the jaxpr.
    assert jax.jit(f).lower(x, w).cost_analysis()["flops"] < want


def test_flash_extrapolation_is_linear_and_capped_by_the_measurement():
    t = 1024
    line = lambda s: 1000 + 3 * s  # temporaries without attention scores grow linearly in T
    assert planner._extrapolate(line(t // 8), line(t // 4), t, 10**9) == line(t)
    assert planner._extrapolate(line(t // 8), line(t // 4), t, 2000) == 2000  # the XLA bound
    assert planner._extrapolate(500, 400, t, 10**9) == 400  # never below the T/4 program


def test_plan_tiny_lowered_only():
    pc = planner.PlanConfig(
        model="tiny", mesh=(("fsdp", 8),), prompt_len=32, response_len=32, n=2,
        prompts_per_batch=16, minibatch_prompts=8, remat="none", compile=False,
    )  # fmt: skip
    p = planner.plan(pc)
    cfg = models.get_preset("tiny")
    mesh = sharding.make_mesh({"fsdp": 8})
    bytes_ = planner.state_bytes(ts.TrainConfig(model=cfg), mesh, sharding.get_rules("fsdp"))
    assert p["params_bytes_per_device"] == bytes_["params"] == p["reference_bytes_per_device"]
    assert p["optimizer_bytes_per_device"] == bytes_["optimizer"]
    # k and v caches [L, R, S, K, H] in bf16, rows split over the 8 devices.
    assert p["kv_cache_bytes_per_device"] == 2 * 2 * (16 * 2 // 8) * 64 * 2 * 16 * 2
    assert p["micro_batches"] == 2 and p["fits"] is None and "not decided" in p["note"]
    # FLOPs of one update without remat: 3 x forward (matmuls + attention) of every token, the
    # LM head on the 32 response positions only (as the GRPO loop runs it).
    d, f, n, k, h, v, t, r = 64, 128, 4, 2, 16, 256, 64, 32
    layer = 2 * (d * n * h + 2 * d * k * h + n * h * d + 3 * d * f) + 4 * t * n * h
    assert p["flops_per_update"] == 16 * 3 * (t * 2 * layer + r * 2 * d * v)
    text = planner.format_plan(p)
    assert "KV cache" in text and "tiny" in text


def test_plan_errors_name_the_flag():
    base = planner.PlanConfig(model="tiny", prompts_per_batch=16, minibatch_prompts=8, n=2)
    with pytest.raises(ValueError, match="needs 16 devices"):
        planner.plan(dataclasses.replace(base, mesh=(("fsdp", 16),)))
    with pytest.raises(ValueError, match="--micro_batch_rows"):
        planner.plan(dataclasses.replace(base, micro_batch_rows=3))
    with pytest.raises(ValueError, match="--accelerator"):
        planner.plan(dataclasses.replace(base, accelerator="tpu-v4"))
    with pytest.raises(ValueError, match="no -1"):
        planner.plan(dataclasses.replace(base, mesh=(("fsdp", -1),)))
