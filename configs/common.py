"""Shared defaults of every GRPO experiment: the upstream (verl-if) hyperparameters.

Experiment files call `base()` and change what differs; model sizes come from presets only.
"""

import ml_collections

from configs import rm_tiny


def base() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.workdir = "/tmp/ifrl_jax/run"
    c.tokenizer = ""  # a local HF tokenizer directory; "" = the shipped tiny tokenizer
    c.mesh = {"data": 1, "fsdp": -1, "tp": 1}  # -1 = the remaining devices
    c.sharding = "fsdp"  # a key of ifrl_jax.sharding.RULES

    c.model = ml_collections.ConfigDict()
    c.model.preset = "qwen2_5_7b"  # used when hf_path is empty (random weights)
    c.model.hf_path = ""  # local HF checkpoint directory of the initial policy
    c.model.overrides = {}  # ModelConfig fields changed on the preset
    c.model.param_dtype = "float32"
    c.model.dtype = "bfloat16"
    c.model.remat = "full"
    c.model.scan_layers = True
    c.model.attention_impl = "auto"
    # LoRA on the GRPO policy (rank 0 = full fine-tuning): adapters on `targets` (HF module
    # names, or "all" = q/k/v/o and gate/up/down), scaled by alpha / rank; the KL reference is
    # the base with the adapters off; the export is merged, plus the adapters in PEFT's layout.
    c.model.lora = ml_collections.ConfigDict(
        {"rank": 0, "alpha": 16.0, "dropout": 0.0, "targets": ("all",)}
    )

    c.data = ml_collections.ConfigDict()
    c.data.train = ""  # comma-separated JSONL/Parquet; "" = the shipped tiny instruction set
    c.data.heldout = ""
    c.data.levels = True  # curriculum decomposition L1..LK
    c.data.schedule = "mixed"  # "mixed" (upstream code) or "in_order" (the paper's curriculum)
    c.data.max_prompt_len = 2048
    c.data.overlong = "truncate_left"
    c.data.prompt_buckets = ()  # prompt lengths compiled for; () = sampling.DEFAULT_BUCKETS
    c.data.on_error = "strict"

    c.rollout = ml_collections.ConfigDict()
    c.rollout.n = 5
    c.rollout.prompts_per_batch = 384
    c.rollout.max_new_tokens = 8192
    c.rollout.temperature = 1.0
    c.rollout.top_p = 1.0
    c.rollout.top_k = 0
    c.rollout.cache_dtype = "bfloat16"
    c.rollout.sample_prompts = 0  # prompts per sampler call and process; 0 = the whole batch
    # The sampler (`samplers.Options`): "continuous" = one call over the process's batch on
    # engine_slots refilled slots (0 = sample_prompts x n, the static sampler's rows per call),
    # prefill in chunks of engine_chunk tokens, engine_slot_len cache positions per slot (0 =
    # prompt bucket + max_new_tokens); "static" = `sampling.generate` per sample_prompts chunk.
    # Several processes run the static sampler.
    c.rollout.engine = "continuous"
    c.rollout.engine_slots = 0
    c.rollout.engine_chunk = 32
    c.rollout.engine_slot_len = 0
    # One step off-policy: batch i+1 is sampled (from a copy of the params: one params copy of
    # device memory) while update i runs, except after a checkpoint; needs grpo.tis_cap > 0.
    # overlap_devices: "same" = interleaved on the training devices; "split" = the sampler on
    # its own devices, sampler_mesh (e.g. {"fsdp": 2}) on the last ones, config.mesh on the rest.
    c.rollout.overlap = False
    c.rollout.overlap_devices = "same"
    c.rollout.sampler_mesh = {}

    c.reward = ml_collections.ConfigDict()
    c.reward.scale = 5.0
    c.reward.think_mode = "none"  # "required" for reasoning models
    c.reward.soft = "exclude"  # soft constraints without a reward model: exclude/zero/error
    c.reward.rm_path = ""  # a launch/train_rm.py workdir: its RM scores the soft constraints
    c.reward.rm_ids = ()  # hard ids the RM scores instead of the rules (rule verdicts logged)
    # Reward-hacking guard: warn once (and mark the step) when the RM agrees with the rules
    # on fewer than this fraction of the slots it scores on a step's rollouts; 0 = off.
    c.reward.rm_agreement_floor = 0.5  # chance level for a yes/no decision
    c.reward.rm_max_len = 1024
    c.reward.rm_batch_size = 16
    c.reward.verifier_processes = 8
    c.reward.timeout_s = 10.0

    c.grpo = ml_collections.ConfigDict()
    c.grpo.minibatch_prompts = 96  # 4 updates per rollout batch of 384
    c.grpo.ppo_epochs = 1
    c.grpo.micro_batches = 1
    c.grpo.std = "unbiased"
    c.grpo.eps = 1e-6
    c.grpo.filter_zero_variance = False
    # Dynamic sampling (DAPO): sample oversample x prompts_per_batch prompts, train on the
    # prompts_per_batch groups whose rewards differ (topped up with uniform ones); 1 = off.
    c.grpo.oversample = 1
    # Responses at the length limit: keep / filter (no EOS: weight 0) / penalty (DAPO's soft
    # punishment, up to overlong_penalty reward units over the last overlong_buffer tokens).
    c.grpo.overlong = "keep"
    c.grpo.overlong_buffer = 0
    c.grpo.overlong_penalty = 1.0
    c.grpo.clip_low = 0.2
    c.grpo.clip_high = 0.2
    c.grpo.dual_clip = ml_collections.config_dict.placeholder(float)
    c.grpo.kl_coef = 0.01
    c.grpo.kl_estimator = "low_var_kl"
    c.grpo.agg = "token-mean"
    c.grpo.entropy_coef = 0.0
    c.grpo.tis_cap = 0.0  # truncated importance sampling min(pi_old / pi_sampler, C); 0 = off
    c.grpo.learning_rate = 1e-6
    c.grpo.schedule = "constant"
    c.grpo.warmup_steps = 0
    c.grpo.b1 = 0.9
    c.grpo.b2 = 0.999
    c.grpo.weight_decay = 0.01
    c.grpo.grad_clip = 1.0
    c.grpo.logprob_chunk_size = 0  # 0 = chosen by memory

    c.sft = ml_collections.ConfigDict()
    c.sft.steps = 0  # warm start on reference responses; 0 = none
    c.sft.responses = ""
    c.sft.learning_rate = 1e-3
    c.sft.batch_size = 16
    c.sft.max_len = 512

    # The self-supervised RM before GRPO: levels -> policy pairs -> RM (train.reward_model_stage).
    c.pipeline = ml_collections.ConfigDict()
    c.pipeline.enabled = False
    c.pipeline.limit = 0  # instructions whose levels are sampled for pairs; 0 = all
    c.pipeline.num_samples = 1  # responses per level prompt
    c.pipeline.temperature = 1.0
    c.pipeline.max_new_tokens = 0  # 0 = rollout.max_new_tokens
    c.pipeline.batch_size = 64  # prompts per sampler call
    c.pipeline.rm_init = "policy"  # RM from the warm-started policy; "config": pipeline.rm's own
    c.pipeline.rm = rm_tiny.get_config()  # the RM training config (launch/train_rm.py's)

    c.train = ml_collections.ConfigDict()
    c.train.steps = 200
    c.train.eval_every = 20
    c.train.eval_batch_size = 64
    c.train.checkpoint_every = 10
    c.train.keep_checkpoints = 3
    c.train.export_hf = True
    c.train.eval_init = True  # with a warm start: also evaluate the policy before it
    # IFBench's out-of-domain prompts in every evaluation: the first N of its 294 (-1 = all,
    # 0 = off); the CPU default leaves it off (the tiny model scores ~0 on them).
    c.train.eval_ifbench = 0

    return c


def one_gpu(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The one-GPU shape (planner.ONE_GPU): a 1x1x1 mesh, bf16 params (+ a float32 master of
    the trained ones) and compute, full remat, prompt 1024 + response 2048, 64 x 5 responses
    per rollout batch in sampler calls of 16 prompts, 4 updates of 80 rows in micro-batches of
    2 rows."""
    c.mesh = {"data": 1, "fsdp": 1, "tp": 1}
    c.sharding = "fsdp"
    c.model.param_dtype = "bfloat16"
    c.model.dtype = "bfloat16"
    c.model.remat = "full"
    c.model.scan_layers = True
    c.data.max_prompt_len = 1024
    c.data.prompt_buckets = (1024,)
    c.rollout.max_new_tokens = 2048
    c.rollout.prompts_per_batch = 64
    c.rollout.sample_prompts = 16
    c.grpo.minibatch_prompts = 16
    c.grpo.micro_batches = 40
    c.train.eval_batch_size = 64
    return c
