"""DeepSeek-R1-Distill-Qwen-7B GRPO (reasoning model) on 3 hosts x 8 A100-80GB.

    python launch/train_grpo.py --config=configs/r1_distill_qwen_7b_grpo.py \
        --config.model.hf_path=/ckpt/DeepSeek-R1-Distill-Qwen-7B \
        --config.tokenizer=/ckpt/DeepSeek-R1-Distill-Qwen-7B \
        --config.data.train=/data/train.parquet \
        --coordinator_address=host0:1234 --num_processes=3 --process_id=$RANK

Only the text after `</think>\\n\\n` is judged; a response without it gets reward 0 (upstream).
"""

from configs import qwen2_5_7b_grpo


def get_config():
    c = qwen2_5_7b_grpo.get_config()
    c.workdir = "/tmp/ifrl_jax/r1_distill_qwen_7b"
    c.model.preset = "deepseek_r1_distill_qwen_7b"
    c.reward.think_mode = "required"
    return c
