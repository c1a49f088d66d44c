"""DeepSeek-R1-Distill-Qwen-7B GRPO (reasoning model) on 3 hosts x 8 A100-80GB, the reference
hyperparameters (configs/common.py: n=5, 384 prompts per rollout batch, 96 per update, lr 1e-6,
low-variance KL k3 1e-2, responses up to 8192 tokens).

The soft constraints of upstream's train.parquet (e.g. `style:open_ended` with its text) are
scored by the constraint-wise RM, the hard ones by the rules. First, on one host of 8 GPUs, the
RM's pseudo-label pairs sampled from the policy and the RM from its backbone:

    python launch/build_pairs.py --input=/data/train.parquet --output=/data/pairs.jsonl \
        --policy=/ckpt/DeepSeek-R1-Distill-Qwen-7B \
        --tokenizer=/ckpt/DeepSeek-R1-Distill-Qwen-7B --max_new_tokens=2048 \
        --mesh=data:1,fsdp:-1,tp:1 --sharding=fsdp
    python launch/train_rm.py --config=configs/rm_tiny.py --config.pairs=/data/pairs.jsonl \
        --config.init_from=/ckpt/DeepSeek-R1-Distill-Qwen-7B \
        --config.tokenizer=/ckpt/DeepSeek-R1-Distill-Qwen-7B --config.max_len=2048 \
        --config.learning_rate=5e-6 --config.workdir=/ckpt/rm

then GRPO with that RM on every host (host 0's address as coordinator):

    FLAGS="--coordinator_address=host0:1234 --num_processes=3 --process_id=$RANK"
    python launch/train_grpo.py --config=configs/r1_distill_qwen_7b_grpo.py \
        --config.model.hf_path=/ckpt/DeepSeek-R1-Distill-Qwen-7B \
        --config.tokenizer=/ckpt/DeepSeek-R1-Distill-Qwen-7B \
        --config.data.train=/data/train.parquet --config.reward.rm_path=/ckpt/rm $FLAGS

(`--config.pipeline.enabled=True` instead of the first two commands runs both stages inside the
GRPO job.)

Only the text after `</think>\\n\\n` is judged; a response without it gets reward 0 (upstream).
"""

from configs import qwen2_5_7b_grpo


def get_config():
    c = qwen2_5_7b_grpo.get_config()
    c.workdir = "/tmp/ifrl_jax/r1_distill_qwen_7b"
    c.model.preset = "deepseek_r1_distill_qwen_7b"
    c.reward.think_mode = "required"
    return c
