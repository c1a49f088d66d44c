"""Supervised warm start: examples, batches and the cross-entropy loss (a `train_step` loss;
`jobs.warm_start` runs it through `train_step.make_update` like every other stage)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ifrl_jax import tokenizer as tokenizer_lib
from ifrl_jax.models import ModelConfig
from ifrl_jax.models import api as model_api
from ifrl_jax.records import Record


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


def denominators(batch) -> jax.Array:
    """The full batch's trained-token count (at least 1): the loss's denominator."""
    return jnp.maximum(jnp.sum(batch["loss_mask"].astype(jnp.float32)), 1.0)


def loss(params: dict, batch, den, *, model: ModelConfig, chunk_size: int | None = None):
    """Mean negative log-likelihood of the loss_mask tokens: a `train_step` loss function.

    Args:
      batch: input_ids, attention_mask, loss_mask [B, T]; den: `denominators` of the full batch.

    Returns:
      (loss [], aux {"tokens"}).
    """
    logp = model_api.sequence_logprobs(
        model, params, batch["input_ids"], batch["attention_mask"], chunk_size=chunk_size
    )
    m = batch["loss_mask"].astype(jnp.float32)
    den = denominators(batch) if den is None else den
    return -jnp.sum(logp * m) / den, {"tokens": jnp.sum(m)}
