"""The CPU default job: a small Qwen2-architecture model learns hard constraints on 2 cores.

    python launch/train_grpo.py                       # this config is the default
    python launch/train_grpo.py --config=configs/default_cpu.py --config.seed=1

Warm start (SFT on the shipped reference responses), then GRPO with rule verifiers on the
shipped instruction set; prints the held-out pass rate before and after GRPO.
"""

from configs.common import base


def get_config():
    c = base()
    c.workdir = "/tmp/ifrl_jax/default_cpu"
    c.sharding = "replicated"  # the mesh stays the default: all devices (1 CPU device here)
    c.model.preset = "cpu_small"
    c.model.dtype = "float32"
    c.model.remat = "none"
    c.model.scan_layers = False
    c.data.max_prompt_len = 160
    c.data.prompt_buckets = (160,)  # one program for the sampler and one for the update
    c.rollout.n = 8
    c.rollout.prompts_per_batch = 16
    c.rollout.max_new_tokens = 80
    c.rollout.cache_dtype = "float32"
    c.reward.verifier_processes = 0  # in-process, in the reward thread
    c.grpo.minibatch_prompts = 8  # 2 updates per rollout batch (old log-probs are used)
    c.grpo.learning_rate = 1e-4
    c.grpo.kl_coef = 0.0
    c.sft.steps = 300
    c.sft.learning_rate = 2e-3
    c.sft.batch_size = 16
    c.sft.max_len = 256
    c.train.steps = 40
    c.train.eval_every = 10
    c.train.eval_batch_size = 50
    c.train.checkpoint_every = 10
    return c
