"""The tests' tiny GRPO run: the CPU default with a tiny model on the 8 fake devices.

python launch/train_grpo.py --config=tests/tiny_train_config.py --config.workdir=/tmp/x
"""

from configs import default_cpu


def tiny_config(workdir, **kw):
    """configs/default_cpu.py shrunk for tests; kw: dotted keys to override."""
    c = default_cpu.get_config()
    c.workdir = str(workdir)
    c.model.preset = "tiny"
    c.model.overrides = {"vocab_size": 2048}
    c.mesh = {"data": 2, "fsdp": 2, "tp": 2}  # the 8 fake devices, every axis used
    c.sharding = "fsdp_tp"
    c.data.max_prompt_len = 160
    c.rollout.n = 2
    c.rollout.prompts_per_batch = 4
    c.rollout.max_new_tokens = 8
    c.grpo.minibatch_prompts = 2  # 2 updates per rollout batch: old log-probs are used
    c.grpo.kl_coef = 0.01  # reference log-probs too
    c.sft.steps = 4
    c.sft.batch_size = 4
    c.train.steps = 4
    c.train.eval_every = 2
    c.train.eval_batch_size = 50
    c.train.checkpoint_every = 2
    c.train.keep_checkpoints = 2
    c.train.eval_init = False
    c.pipeline.enabled = False  # the RM stage has its own test
    c.reward.rm_ids = ()
    return override(c, **kw)


def override(c, **kw):
    """Sets dotted keys of a ConfigDict (e.g. {"rollout.n": 4})."""
    for k, v in kw.items():
        node = c
        *path, last = k.split(".")
        for p in path:
            node = node[p]
        node[last] = v
    return c


def get_config():
    return tiny_config("/tmp/ifrl_jax/tiny_test")
