"""Qwen2.5-0.5B-Instruct GRPO on one GPU (A100/H100), reference hyperparameters scaled down.

    python launch/train_grpo.py --config=configs/qwen2_5_0_5b_gpu.py \
        --config.model.hf_path=/ckpt/Qwen2.5-0.5B-Instruct \
        --config.tokenizer=/ckpt/Qwen2.5-0.5B-Instruct --config.data.train=/data/train.parquet
"""

from configs.common import base


def get_config():
    c = base()
    c.workdir = "/tmp/ifrl_jax/qwen2_5_0_5b"
    c.mesh = {"data": 1, "fsdp": 1, "tp": 1}
    c.sharding = "replicated"
    c.model.preset = "qwen2_5_0_5b"
    c.model.dtype = "bfloat16"
    c.model.remat = "full"
    c.model.scan_layers = True
    c.rollout.prompts_per_batch = 64
    c.rollout.max_new_tokens = 2048
    c.grpo.minibatch_prompts = 16
    c.grpo.micro_batches = 4
    c.reward.verifier_processes = 4
    c.train.eval_batch_size = 64
    return c
