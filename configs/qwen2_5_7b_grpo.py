"""Qwen2.5-7B-Instruct GRPO with the reference hyperparameters on 3 hosts x 8 A100-80GB.

On every host (host 0's address as coordinator; see WORKSPACE.md "Multi-host"):

    python launch/train_grpo.py --config=configs/qwen2_5_7b_grpo.py \
        --config.model.hf_path=/ckpt/Qwen2.5-7B-Instruct \
        --config.tokenizer=/ckpt/Qwen2.5-7B-Instruct \
        --config.data.train=/data/train.parquet --config.data.heldout=/data/heldout.jsonl \
        --coordinator_address=host0:1234 --num_processes=3 --process_id=$RANK

Upstream (verl-if): n=5, 384 prompts per rollout batch, 96 per update, lr 1e-6, KL 0.01 k3,
token-mean, prompt 2048 / response 8192, 24 A100-80GB with FSDP and CPU offload.
"""

from configs.common import base


def get_config():
    c = base()
    c.workdir = "/tmp/ifrl_jax/qwen2_5_7b"
    # Hybrid FSDP: 8-way within a host, data-parallel across hosts (3584 is not a multiple of
    # 24, so fsdp:24 cannot split the model dim); launch/plan.py shows this fits A100-80GB.
    c.mesh = {"data": -1, "fsdp": 8, "tp": 1}
    c.sharding = "fsdp"
    c.model.preset = "qwen2_5_7b"  # shapes only; weights from model.hf_path
    c.model.dtype = "bfloat16"
    c.model.remat = "full"
    c.model.scan_layers = True
    c.rollout.sample_prompts = 32  # per host: 96 prompts per sampler call over 3 hosts
    c.grpo.micro_batches = 24  # 480 rows per update -> 20 rows per micro-batch step
    c.train.steps = 200
    c.train.eval_batch_size = 96
    return c
