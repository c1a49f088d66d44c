"""Qwen2.5-7B-Instruct GRPO with LoRA on ONE A100-80GB (or H100-80GB).

The base weights are held in bf16 and frozen; rank-64 adapters on every projection train (162M
params, with a float32 master copy and Adam state: 1.8 GiB). The KL reference is the base with
the adapters switched off, so no second copy of the 7B weights exists. The planner's figures for
these settings (per device: params 14.5 GiB, adapters' optimizer + master 1.8, train phase peak
57.3, rollout phase peak 62.7 of 72 usable -> fits; XLA attention, compiled on CPU):

    python launch/plan.py --model=qwen2_5_7b --mesh=fsdp:1 --accelerator=a100-80gb \
      --param_dtype=bfloat16 --lora_rank=64 --prompt_len=1024 --response_len=2048 \
      --prompts_per_batch=64 --minibatch_prompts=16 --sample_prompts=16 --micro_batch_rows=2

Run:

    python launch/train_grpo.py --config=configs/qwen2_5_7b_lora_1gpu.py \
      --config.model.hf_path=/ckpt/Qwen2.5-7B-Instruct \
      --config.tokenizer=/ckpt/Qwen2.5-7B-Instruct \
      --config.data.train=/data/train.parquet --config.data.heldout=/data/heldout.jsonl

Ends with hf_final/ (the merged model, a plain HF checkpoint) and lora_adapter/ (PEFT layout).
Not yet run on a GPU (WORKSPACE.md says what has been).
"""

from configs.common import base, one_gpu


def get_config():
    c = one_gpu(base())
    c.workdir = "/tmp/ifrl_jax/qwen2_5_7b_lora"
    c.model.preset = "qwen2_5_7b"  # shapes only; weights from model.hf_path
    c.model.lora.rank = 64
    c.model.lora.alpha = 128.0
    c.model.lora.targets = ("all",)
    c.grpo.learning_rate = 1e-5  # adapters take a larger step than full fine-tuning's 1e-6
    c.reward.verifier_processes = 8
    return c
