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

from configs.common import base, one_gpu


def get_config():
    c = one_gpu(base())
    c.workdir = "/tmp/ifrl_jax/qwen2_5_0_5b_24gb"
    c.model.preset = "qwen2_5_0_5b"
    c.reward.verifier_processes = 4
    return c
