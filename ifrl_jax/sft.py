"""Supervised warm start: cross-entropy on reference responses, the same sharded jit pattern
as the GRPO step (explicit shardings, donated state, optimizer from `train_step`)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from ifrl_jax import sharding
from ifrl_jax import tokenizer as tokenizer_lib
from ifrl_jax.models import api as model_api
from ifrl_jax.records import Record
from ifrl_jax.train_step import TrainConfig, TrainState, make_optimizer, state_shardings


def encode_pairs(
    tokenizer, records: Sequence[Record], responses: Sequence[str], *, max_len: int
) -> list[tuple[list[int], int]]:
    """(chat prompt + response + EOS token ids, number of prompt tokens) per example."""
    chats = tokenizer.apply_chat_template([r.prompt for r in records])
    prompts = tokenizer.encode(chats)
    answers = tokenizer.encode(list(responses))
    eos = tokenizer.eos_ids[0]
    out = []
    for p, a in zip(prompts, answers):
        seq = (p + a + [eos])[-max_len:]
        out.append((seq, max(0, len(seq) - len(a) - 1)))
    return out


def batches(
    examples: list[tuple[list[int], int]], *, batch_size: int, seed: int, pad_id: int
) -> Iterator[dict[str, np.ndarray]]:
    """Endless shuffled batches {input_ids, attention_mask, loss_mask} [B, T], left-padded."""
    rng = np.random.default_rng(seed)
    while True:
        order = rng.permutation(len(examples))
        for s in range(0, len(order) - batch_size + 1, batch_size):
            chosen = [examples[i] for i in order[s : s + batch_size]]
            ids, mask = tokenizer_lib.pad_left(
                [seq for seq, _ in chosen], pad_id=pad_id, pad_to_multiple=32
            )
            loss_mask = np.zeros_like(mask)
            t = ids.shape[1]
            for row, (seq, n_prompt) in enumerate(chosen):
                loss_mask[row, t - len(seq) + n_prompt :] = 1  # response tokens and EOS
            yield {"input_ids": ids, "attention_mask": mask, "loss_mask": loss_mask}


def _sft_step(state: TrainState, batch, *, cfg: TrainConfig):
    def loss_fn(params):
        logp = model_api.sequence_logprobs(
            cfg.model, params, batch["input_ids"], batch["attention_mask"],
            chunk_size=cfg.logprob_chunk_size,
        )  # fmt: skip
        m = batch["loss_mask"].astype(jnp.float32)
        return -jnp.sum(logp * m) / jnp.maximum(jnp.sum(m), 1.0)

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    updates, opt_state = make_optimizer(cfg).update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new = TrainState(params=params, opt_state=opt_state, step=state.step + 1)
    return new, {"sft/loss": loss, "sft/grad_norm": optax.tree.norm(grads)}


def make_sft_step(cfg: TrainConfig, mesh: Mesh, rules):
    """Jitted SFT update with explicit shardings; the state is donated."""
    rules = sharding.get_rules(rules) if isinstance(rules, str) else rules
    state_sh = state_shardings(cfg, mesh, rules)

    def fn(state, batch):
        with sharding.activation_sharding(mesh, rules):
            return _sft_step(state, batch, cfg=cfg)

    return jax.jit(
        fn,
        in_shardings=(state_sh, sharding.data_sharding(mesh)),
        out_shardings=(state_sh, sharding.replicated(mesh)),
        donate_argnums=0,
    )
