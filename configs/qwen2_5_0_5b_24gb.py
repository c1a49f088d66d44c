"""Qwen2.5-0.5B-Instruct GRPO, full fine-tuning, on ONE 24 GB GPU (L4, A10, RTX 4090).

bf16 params with a float32 master copy and float32 Adam state (14 bytes per param: 6.4 GiB), a
bf16 reference copy for the KL term (0.9 GiB). The planner's figures for these settings (per
device: train phase peak 19.5 GiB, rollout phase peak 18.1 of 21.6 usable -> fits; XLA
attention, compiled on CPU):

    python launch/plan.py --model=qwen2_5_0_5b --mesh=fsdp:1 --accelerator=l4-24gb \
      --param_dtype=bfloat16 --prompt_len=1024 --response_len=2048 --prompts_per_batch=64 \
      --minibatch_prompts=16 --sample_prompts=16 --micro_batch_rows=2

Run:

    python launch/train_grpo.py --config=configs/qwen2_5_0_5b_24gb.py \
      --config.model.hf_path=/ckpt/Qwen2.5-0.5B-Instruct \
      --config.tokenizer=/ckpt/Qwen2.5-0.5B-Instruct --config.data.train=/data/train.parquet

Not yet run on a GPU (WORKSPACE.md says what has been).
"""

from configs.common import base


def get_config():
    c = base()
    c.workdir = "/tmp/ifrl_jax/qwen2_5_0_5b_24gb"
    c.mesh = {"data": 1, "fsdp": 1, "tp": 1}
    c.sharding = "fsdp"
    c.model.preset = "qwen2_5_0_5b"
    c.model.param_dtype = "bfloat16"  # + a float32 master copy inside the train state
    c.model.dtype = "bfloat16"
    c.model.remat = "full"
    c.model.scan_layers = True
    c.data.max_prompt_len = 1024
    c.data.prompt_buckets = (1024,)
    c.rollout.max_new_tokens = 2048
    c.rollout.prompts_per_batch = 64
    c.rollout.sample_prompts = 16
    c.grpo.minibatch_prompts = 16  # 4 updates per rollout batch, 80 rows each
    c.grpo.micro_batches = 40  # 2 rows per micro-batch
    c.reward.verifier_processes = 4
    c.train.eval_batch_size = 64
    return c
