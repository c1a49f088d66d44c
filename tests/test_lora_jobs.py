"""LoRA through the jobs: a GRPO run trains adapters on a frozen base (KL against the base),
exports merged + PEFT adapters, and reloads from its checkpoint; the RM trains with LoRA; bad
LoRA / dtype settings are one line naming the config key."""

from __future__ import annotations

import json
import os
import types

import jax
import numpy as np
import pytest
from flax import traverse_util

from configs import rm_tiny
from ifrl_jax import checkpoint, models, reward_model
from ifrl_jax import tokenizer as tokenizer_lib
from ifrl_jax.jobs import grpo
from ifrl_jax.jobs import reward_model as rm_job
from ifrl_jax.models import lora
from tests.hf_fixtures import left_padded_batch
from tests.tiny_train_config import tiny_config

LORA = {"model.lora.rank": 4, "model.lora.alpha": 8.0, "model.lora.targets": ("all",)}


def _flat(tree):
    return traverse_util.flatten_dict(jax.device_get(tree))


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("lora_run")
    config = tiny_config(workdir, **LORA, **{"train.steps": 2, "train.checkpoint_every": 2,
                                             "train.eval_every": 2})  # fmt: skip
    return workdir, grpo.run(config)


def test_a_lora_grpo_run_trains_adapters_on_the_frozen_warm_start(lora_run):
    workdir, summary = lora_run
    assert summary["pass_rate_after"] is not None
    cfg, params = checkpoint.load_policy(checkpoint=str(workdir))
    assert (cfg.lora_rank, cfg.lora_alpha, len(cfg.lora_targets)) == (4, 8.0, 7)
    _, base = checkpoint.load_policy(hf_path=str(workdir / "sft"))  # the warm start
    flat, base = _flat(params), _flat(base)
    for path, value in flat.items():
        if path[-1] in lora.ADAPTER_KEYS:
            continue
        np.testing.assert_array_equal(value, base[path], err_msg=str(path))  # frozen
    b = [v for p, v in flat.items() if p[-1] == "lora_b"]
    assert len(b) == 7 * cfg.num_layers and max(np.abs(x).max() for x in b) > 0  # trained
    rows = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
    assert all(np.isfinite(r["train/kl"]) for r in rows if "train/kl" in r)


def test_a_lora_run_exports_the_merged_model_and_the_peft_adapters(lora_run):
    workdir, _ = lora_run
    cfg, params = checkpoint.load_policy(checkpoint=str(workdir))
    merged_cfg, merged = checkpoint.load_policy(hf_path=str(workdir / "hf_final"))
    assert merged_cfg.lora_rank == 0
    ids, mask, _ = left_padded_batch(cfg.vocab_size, [6, 9, 4], seed=3)
    want = np.asarray(models.forward(cfg, params, ids, mask))
    got = np.asarray(models.forward(merged_cfg, merged, ids, mask))
    np.testing.assert_allclose(got[mask == 1], want[mask == 1], atol=1e-4, rtol=1e-4)
    conf = json.load(open(workdir / "lora_adapter" / "adapter_config.json"))
    assert (conf["r"], conf["lora_alpha"], conf["peft_type"]) == (4, 8.0, "LORA")
    assert os.path.exists(workdir / "lora_adapter" / "adapter_model.safetensors")


def test_the_reward_model_trains_with_lora(tmp_path):
    c = rm_tiny.get_config()
    c.workdir, c.num_steps, c.log_every = str(tmp_path), 4, 2
    c.lora.rank, c.lora.targets = 4, ("q_proj", "v_proj")
    summary = rm_job.run(c)
    assert 0 <= summary["heldout_accuracy"] <= 1
    cfg, params, _ = reward_model.load_reward_model(str(tmp_path))
    assert (cfg.lora_rank, cfg.lora_targets, cfg.num_labels) == (4, ("q_proj", "v_proj"), 2)
    tok = tokenizer_lib.load_tokenizer(tokenizer_lib.TINY_TOKENIZER_DIR)
    _, init = reward_model.init_model("", tokenizer=tok, preset=c.model, seed=c.seed)
    init, flat = _flat(init), _flat(params)
    changed = {p for p in init if not np.array_equal(init[p], flat[p])}
    assert changed and changed <= {p for p in init if p[0] == "score"}  # base frozen
    assert any(np.abs(v).max() > 0 for p, v in flat.items() if p[-1] == "lora_b")


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"model.lora.rank": 4, "model.lora.targets": ("qkv",)},
         r"config.model.lora.targets=.*\['qkv'\] name no module"),
        ({"model.lora.rank": -2}, r"config.model.lora.rank=-2: must be an integer >= 0"),
    ],
)  # fmt: skip
def test_bad_lora_settings_name_the_key_before_compiling(tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        grpo.validate(tiny_config(tmp_path, **kw))


def test_a_rank_above_the_width_names_the_key_before_training(tmp_path):
    # tiny: hidden 64, so rank 65 cannot fit q_proj; raised right after the model is loaded
    with pytest.raises(ValueError, match=r"config.model.lora.rank=65: .*above the width 64"):
        grpo.run(tiny_config(tmp_path, **{"model.lora.rank": 65}))
    assert not os.path.exists(tmp_path / "sft")  # nothing trained, nothing written


def test_bf16_where_the_backend_lacks_it_names_the_key(tmp_path, monkeypatch):
    v100 = types.SimpleNamespace(platform="gpu", compute_capability="7.0", device_kind="V100")
    monkeypatch.setattr(jax, "devices", lambda *a: [v100])
    with pytest.raises(ValueError, match=r"config.model.dtype='bfloat16': bfloat16 needs"):
        grpo.validate(tiny_config(tmp_path, **{"model.dtype": "bfloat16"}))
