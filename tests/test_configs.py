"""Every config file loads, validates, and names presets instead of copying sizes."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import pytest

from ifrl_jax.jobs import grpo as grpo_job
from ifrl_jax.models import config as model_config

CONFIGS = sorted(p.stem for p in (Path(__file__).parents[1] / "configs").glob("*.py")
                 if p.stem not in ("__init__", "common"))  # fmt: skip


def test_there_are_configs():
    assert {"default_cpu", "qwen2_5_7b_grpo", "r1_distill_qwen_7b_grpo",
            "qwen2_5_0_5b_gpu"} <= set(CONFIGS)  # fmt: skip


@pytest.mark.parametrize("name", CONFIGS)
def test_config_loads_and_validates(name):
    module = importlib.import_module(f"configs.{name}")
    assert "python launch/" in module.__doc__  # the command that runs it is in the docstring
    config = module.get_config()
    if "launch/train_grpo.py" not in module.__doc__:
        return  # another stage's config (e.g. the reward model's): loading it is the check
    if not config.model.hf_path:
        assert config.model.preset in model_config.PRESETS
    grpo_job.validate(config)
    source = inspect.getsource(module)
    assert "hidden_size" not in source and "num_layers" not in source  # presets only
    assert config.rollout.prompts_per_batch % config.grpo.minibatch_prompts == 0


def test_reference_hyperparameters():
    c = importlib.import_module("configs.qwen2_5_7b_grpo").get_config()
    assert (c.rollout.n, c.rollout.prompts_per_batch, c.grpo.minibatch_prompts) == (5, 384, 96)
    assert (c.grpo.learning_rate, c.grpo.weight_decay, c.grpo.grad_clip) == (1e-6, 0.01, 1.0)
    assert (c.grpo.kl_coef, c.grpo.kl_estimator, c.grpo.agg) == (0.01, "low_var_kl", "token-mean")
    assert (c.rollout.temperature, c.rollout.top_p, c.grpo.clip_low) == (1.0, 1.0, 0.2)
    assert (c.data.max_prompt_len, c.rollout.max_new_tokens) == (2048, 8192)
    assert c.grpo.std == "unbiased" and c.grpo.eps == 1e-6 and c.reward.scale == 5.0
    r1 = importlib.import_module("configs.r1_distill_qwen_7b_grpo").get_config()
    assert r1.reward.think_mode == "required"
