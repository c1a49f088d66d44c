"""Planner: mesh flags, per-device bytes equal to what real sharded arrays hold, fit verdicts,
FLOP counting through scans, flag checks, and lowered (not compiled) plans of the tiny preset."""

import dataclasses
import json
import os
import shlex
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from ifrl_jax import footprint, models, planner, sharding
from ifrl_jax import train_step as ts
from ifrl_jax.errors import UserError
from ifrl_jax.jobs import plan as plan_job
from ifrl_jax.models.lora import num_adapter_params as lora_params

GiB = footprint.GiB
MESHES = {  # one mesh per preset on the 8 fake devices, using the axes the preset shards over
    "replicated": {"data": 8},
    "fsdp": {"fsdp": 8},
    "tp": {"data": 4, "tp": 2},
    "fsdp_tp": {"fsdp": 4, "tp": 2},
}


def test_parse_meshes():
    assert planner.parse_meshes("fsdp:8;fsdp:4,tp:2;") == [{"fsdp": 8}, {"fsdp": 4, "tp": 2}]
    assert planner.mesh_name({"data": 1, "fsdp": 4, "tp": 2}) == "fsdp:4,tp:2"
    for spec, message in [("fsdp:8;fsdp=2", "not axis:size"), (" ; ", "is empty")]:
        with pytest.raises(UserError, match=message) as e:
            planner.parse_meshes(spec)
        assert str(e.value).startswith("--meshes")


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
    planned = footprint.state_bytes(cfg, mesh, sharding.get_rules(preset))
    assert _per_device_bytes(params, mesh) == [planned["params"]] * 8
    assert planned["gradients"] == planned["params"]  # float32 params: same bytes
    assert planned["optimizer"] == 2 * planned["params"] + 12  # mu, nu; 3 int32 counters


def test_planned_optimizer_bytes_equal_real_state(sharded_params):
    cfg, params = sharded_params
    optim = ts.OptimConfig()
    mesh = sharding.make_mesh(MESHES["fsdp_tp"])
    shardings = ts.state_shardings(cfg, optim, mesh, "fsdp_tp")
    state = ts.init_state(params, optim=optim, shardings=shardings)
    planned = footprint.state_bytes(cfg, mesh, sharding.get_rules("fsdp_tp"), optim=optim)
    assert _per_device_bytes((state.opt_state, state.step), mesh) == [planned["optimizer"]] * 8


def test_fits():
    assert footprint.fits(72 * GiB, "a100-80gb")  # 0.9 x 80 GiB
    assert not footprint.fits(72 * GiB + 1, "a100-80gb")
    assert footprint.fits(40 * GiB, "a100-40gb", headroom=1.0)
    assert not footprint.fits(15 * GiB, "tpu-v5e")  # 16 GiB x 0.9 = 14.4 GiB
    assert footprint.fits(85 * GiB, "tpu-v5p")
    with pytest.raises(UserError, match="--accelerator"):
        footprint.fits(1, "v100")
    with pytest.raises(UserError, match="--headroom"):
        footprint.fits(1, "h100-80gb", headroom=1.5)


def test_matmul_flops_counts_scan_bodies_times_their_length():
    def f(x, w):
        return jax.lax.scan(lambda c, wi: (c @ wi, None), x, w)[0]

    x = jax.ShapeDtypeStruct((8, 16), jnp.float32)
    w = jax.ShapeDtypeStruct((10, 16, 16), jnp.float32)
    want = 10 * 2 * 8 * 16 * 16
    assert footprint.matmul_flops(jax.make_jaxpr(f)(x, w)) == want
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
        prompts_per_batch=16, minibatch_prompts=8, remat="none", compile=False, engine="static",
    )  # fmt: skip
    p = planner.plan(pc)
    cfg = models.get_preset("tiny")
    mesh = sharding.make_mesh({"fsdp": 8})
    bytes_ = footprint.state_bytes(cfg, mesh, sharding.get_rules("fsdp"))
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
    text = plan_job.format_plan(p)
    assert "KV cache" in text and "tiny" in text
    # The continuous engine on 8 slots: k and v of the slots [L, 8, 64, K, H] (split over the
    # devices) and of its prefill lanes [L, W, 32, K, H] (replicated): W = min(ceil(8 / n),
    # 4 x 8 / chunk 32) = 1, rounded up to the 8 data-parallel devices here.
    e = planner.plan(dataclasses.replace(pc, engine="continuous", engine_slots=8))
    assert e["engine_slots"] == 8 and "engine's slots" in e["sources"]["kv_cache"]
    assert e["kv_cache_bytes_per_device"] == 2 * 2 * (8 // 8 * 64 + 8 * 32) * 2 * 16 * 2
    # Here the 8 replicated lanes cost what the static cache saves; on one device the engine's
    # 8 slots + 1 lane hold 544 positions against the static sampler's 32 rows x 64 = 2,048.
    one = dict(mesh=(("fsdp", 1),), engine_slots=8)
    e1 = planner.plan(dataclasses.replace(pc, engine="continuous", **one))
    s1 = planner.plan(dataclasses.replace(pc, **one))
    assert e1["kv_cache_bytes_per_device"] == 2 * 2 * (8 * 64 + 1 * 32) * 2 * 16 * 2
    assert s1["kv_cache_bytes_per_device"] == 2 * 2 * (32 * 64) * 2 * 16 * 2


def test_plan_errors_name_the_flag():
    base = planner.PlanConfig(model="tiny", prompts_per_batch=16, minibatch_prompts=8, n=2)
    with pytest.raises(UserError, match="needs 16 devices"):
        planner.plan(dataclasses.replace(base, mesh=(("fsdp", 16),)))
    with pytest.raises(UserError, match="--micro_batch_rows"):
        planner.plan(dataclasses.replace(base, micro_batch_rows=3))
    with pytest.raises(UserError, match="--accelerator"):
        planner.plan(dataclasses.replace(base, accelerator="tpu-v4"))
    with pytest.raises(UserError, match="no -1"):
        planner.plan(dataclasses.replace(base, mesh=(("fsdp", -1),)))
    with pytest.raises(UserError, match="--sample_prompts=3"):
        planner.plan(dataclasses.replace(base, sample_prompts=3))


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("model", "qwen9", "--model='qwen9': unknown preset"),
        ("attention", "cudnn", "--attention='cudnn': use xla or flash"),
        ("minibatch_prompts", 0, "--minibatch_prompts=0: must be at least 1"),
        ("sample_prompts", -1, "--sample_prompts=-1"),
        ("remat", "some", "ModelConfig.remat='some'.*--remat"),
        ("cache_dtype", "float8", "--cache_dtype='float8'"),
        ("headroom", 0.0, "--headroom=0.0"),
        ("engine", "paged", "--engine='paged': use one of"),
        ("engine_slots", 1, "--engine_slots=1: must be 0"),
    ],
)
def test_plan_config_checks_every_flag(field, value, message):
    with pytest.raises(UserError, match=message):
        planner.PlanConfig(**{field: value})


def test_plan_job_sweep_prints_a_table_and_keeps_pairs_that_cannot_work(capsys):
    config = planner.PlanConfig(
        model="tiny", prompt_len=32, response_len=32, n=2, prompts_per_batch=16,
        minibatch_prompts=8, remat="none", compile=False,
    )  # fmt: skip
    out = plan_job.run(config, sweep=[{"fsdp": 8}, {"tp": 8}], presets=["tp"])
    fsdp, tp = out["sweep"]
    assert fsdp["mesh"] == "fsdp:8" and fsdp["fits"] is None and "error" not in fsdp
    assert tp["fits"] is False and "k_proj" in tp["error"]  # 2 kv heads over 8 devices
    table = capsys.readouterr().out
    assert "n/a:" in table and "fsdp:8" in table
    with pytest.raises(UserError, match="--presets"):
        plan_job.run(config, sweep=[{"fsdp": 8}], presets=["zero3"])


def _compiled_plan(**kw):
    pc = planner.PlanConfig(
        model="tiny", mesh=(("data", 8),), sharding="replicated", prompt_len=32,
        response_len=32, n=2, prompts_per_batch=16, minibatch_prompts=8, remat="none", **kw,
    )  # fmt: skip
    return pc, planner.plan(pc)


def test_a_lora_bf16_plan_counts_adapter_state_only_and_no_reference_copy():
    pc, p = _compiled_plan(param_dtype="bfloat16", lora_rank=4, lora_targets="q_proj,down_proj")
    cfg = pc.model_config()
    adapters = 2 * 4 * (64 + 64) + 2 * 4 * (128 + 64)  # q_proj 64->64, down_proj 128->64, 2 layers
    assert lora_params(cfg) == adapters == p["trainable_params"]
    # replicated: each device holds everything
    assert p["params_bytes_per_device"] == 2 * (cfg.num_params() + adapters)  # bf16
    assert p["master_bytes_per_device"] == 4 * adapters  # float32 master of the adapters
    assert p["optimizer_bytes_per_device"] == 8 * adapters + 12  # Adam mu, nu; 3 int32 counters
    assert p["reference_bytes_per_device"] == 0  # the base with adapters off is the reference
    # XLA's arguments of the compiled step are exactly the planned state + batch
    assert p["argument_bytes_measured"] == p["argument_bytes_planned"]
    text = plan_job.format_plan(p)
    assert "LoRA rank 4" in text and "float32 master copy" in text


def test_a_bf16_full_fine_tuning_plan_has_a_float32_master_of_every_param():
    _, p = _compiled_plan(param_dtype="bfloat16")
    cfg = models.get_preset("tiny")
    assert p["trainable_params"] == cfg.num_params() and p["lora_rank"] == 0
    assert p["master_bytes_per_device"] == 2 * p["params_bytes_per_device"]
    assert p["reference_bytes_per_device"] == p["params_bytes_per_device"]
    assert p["argument_bytes_measured"] == p["argument_bytes_planned"]


def test_the_plans_command_is_a_valid_training_config(tmp_path):
    # the command does not depend on the measured temporaries: lowered only
    _, p = _compiled_plan(param_dtype="bfloat16", lora_rank=4, lora_targets="q_proj,v_proj",
                          compile=False)  # fmt: skip
    args = shlex.split(p["command"].split("  #")[0])
    assert args[:2] == ["python", "launch/train_grpo.py"]
    # The launcher's flag parsing (absl + ml_collections, as launch/train_grpo.py), then the
    # job's own validation, in a fresh process.
    script = (
        "import json\n"
        "from absl import app\n"
        "from ml_collections import config_flags\n"
        "from ifrl_jax.jobs import grpo\n"
        "F = config_flags.DEFINE_config_file('config')\n"
        "def main(_):\n"
        "    c = F.value\n"
        f"    c.workdir = {str(tmp_path)!r}\n"
        "    grpo.validate(c)\n"
        "    print(json.dumps({'lora': c.model.lora.to_dict(), 'mesh': dict(c.mesh),\n"
        "        'dtype': c.model.param_dtype, 'micro': c.grpo.micro_batches}))\n"
        "app.run(main)\n"
    )  # fmt: skip
    out = subprocess.run([sys.executable, "-c", script, "--config=configs/default_cpu.py",
                          *args[2:]], capture_output=True, text=True, timeout=120,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                         env={**os.environ, "XLA_FLAGS": "", "JAX_PLATFORMS": "cpu"})  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["lora"]["rank"] == 4 and got["lora"]["targets"] == ["q_proj", "v_proj"]
    assert got["mesh"] == {"data": 8, "fsdp": 1, "tp": 1}
    assert (got["dtype"], got["micro"]) == ("bfloat16", 2)


def test_a_lora_target_or_rank_that_cannot_work_names_the_flag():
    with pytest.raises(UserError, match="'qkv' names no module.*--lora_targets"):
        planner.PlanConfig(model="tiny", lora_rank=4, lora_targets="qkv")
    with pytest.raises(UserError, match="lora_rank=99 is above the width 64"):
        planner.PlanConfig(model="tiny", lora_rank=99)


@pytest.mark.parametrize("name", sorted(planner.ONE_GPU))
def test_the_one_gpu_plans_match_their_config_files(name):
    import importlib

    pc = planner.ONE_GPU[name]
    path = planner.ONE_GPU_CONFIGS[name]
    c = importlib.import_module(path.removesuffix(".py").replace("/", ".")).get_config()
    cfg = pc.model_config()
    assert (c.model.preset, c.model.param_dtype, c.model.remat) == (pc.model, pc.param_dtype,
                                                                   pc.remat)  # fmt: skip
    assert c.model.lora.rank == pc.lora_rank
    assert (c.data.max_prompt_len, c.rollout.max_new_tokens) == (pc.prompt_len, pc.response_len)
    assert (c.rollout.n, c.rollout.prompts_per_batch, c.rollout.sample_prompts) == (
        pc.n, pc.prompts_per_batch, pc.sample_prompts)  # fmt: skip
    rows = pc.minibatch_prompts * pc.n
    assert (c.grpo.minibatch_prompts, c.grpo.micro_batches) == (
        pc.minibatch_prompts, rows // pc.micro_batch_rows)  # fmt: skip
    assert dict(c.mesh) == {"data": 1, "fsdp": 1, "tp": 1}
    # lowered only (fast): the persistent state, exact from the shardings
    p = planner.plan(dataclasses.replace(pc, compile=False))
    if cfg.lora_rank:
        assert (
            p["reference_bytes_per_device"] == 0 and p["trainable_params"] < 0.03 * p["num_params"]
        )
        assert p["optimizer_bytes_per_device"] < 0.1 * p["params_bytes_per_device"]
    else:
        assert p["master_bytes_per_device"] == 2 * p["params_bytes_per_device"]  # fp32 of bf16
