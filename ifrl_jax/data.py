"""The input pipeline: curriculum schedules, the grain dataset of record batches, prompt encoding.

Data flow (host side, plain Python; nothing here touches a device)::

    JSONL/Parquet --records.load_records--> [Record] --curriculum.decompose_all--> levels L1..LK
      --make_dataset (schedule, shuffle, repeat, shard per JAX process, batch)--> list[Record]
      --encode_prompts (chat template, tokenizer, overlong rule)--> input_ids [B, T], mask [B, T]

Batches are lists of Record objects, not tensors: the training loop tokenizes them (with
``encode_prompts``) and keeps the records for the reward (``rewards.score``).

Schedules (``SCHEDULES``, keyed by the config string):

* ``"mixed"``: every epoch is one global shuffle of all records (what the public code does).
* ``"in_order"``: the paper's curriculum, in strict phases *within each epoch*: all L1 records
  (shuffled among themselves), then all L2, ..., then all LK. With several epochs the sequence of
  phases restarts every epoch, with a fresh shuffle inside each phase. Records without a level
  (math items, undecomposed records) are spread round-robin over the phases, in file order.
  Batches are cut from the phased stream, so the one batch at a phase boundary mixes two levels.

Sharding: the global stream is cut as ``stream[process_index::process_count]`` before batching,
so every host reads its own slice and global batch b is the union of the hosts' batch b.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import Any

import grain
import numpy as np

from ifrl_jax.records import Record

OVERLONG = ("truncate_left", "drop", "error")


# ----------------------------------------------------------------------------- schedules


def _mixed(records: Sequence[Record], *, seed: int) -> grain.MapDataset:
    return grain.MapDataset.source(list(records)).shuffle(seed=seed)


def _phase_of(records: Sequence[Record]) -> list[int]:
    """The phase (level) of each record; level-less records go round-robin over the phases."""
    levels = sorted({r.level for r in records if r.level is not None}) or [1]
    phases, n_free = [], 0
    for r in records:
        if r.level is not None:
            phases.append(r.level)
        else:
            phases.append(levels[n_free % len(levels)])
            n_free += 1
    return phases


def _in_order(records: Sequence[Record], *, seed: int) -> grain.MapDataset:
    phases = _phase_of(records)
    parts = []
    for level in sorted(set(phases)):
        members = [r for r, p in zip(records, phases) if p == level]
        # A distinct seed per phase, so phases of equal size are not shuffled alike.
        parts.append(grain.MapDataset.source(members).shuffle(seed=(seed + 7919 * level) % 2**32))
    return grain.MapDataset.concatenate(parts)


# One epoch of records in schedule order; `repeat` then reshuffles every epoch.
SCHEDULES: dict[str, Callable[..., grain.MapDataset]] = {
    "mixed": _mixed,
    "in_order": _in_order,
}


def _jax_process() -> tuple[int, int]:
    import jax

    return jax.process_index(), jax.process_count()


def make_dataset(
    records: Sequence[Record],
    *,
    batch_size: int,
    schedule: str = "mixed",
    seed: int = 0,
    num_epochs: int | None = None,
    shard_index: int | None = None,
    shard_count: int | None = None,
    drop_remainder: bool = True,
) -> grain.MapDataset:
    """Builds the grain dataset of record batches for this host.

    Args:
      records: all records (every host passes the same list, e.g. all curriculum levels).
      batch_size: global batch size in prompts; each host gets ``batch_size // shard_count``.
      schedule: a key of ``SCHEDULES`` (``"mixed"`` or ``"in_order"``).
      seed: shuffle seed (epochs are reshuffled with seeds derived from it).
      num_epochs: passes over the records; None repeats forever.
      shard_index: this host's slice; defaults to ``jax.process_index()``.
      shard_count: number of slices; defaults to ``jax.process_count()``.
      drop_remainder: drop the records of a last, partial global batch (only happens when
        num_epochs is finite), so that all hosts yield the same number of full batches.

    Returns:
      A ``grain.MapDataset`` whose elements are ``list[Record]`` of ``batch_size // shard_count``
      records: block ``shard_index`` of each global batch.

    Raises:
      ValueError: unknown schedule, empty records, or a batch size the shard count does not divide.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule={schedule!r}; expected one of {sorted(SCHEDULES)}")
    if not records:
        raise ValueError("no records to build a dataset from")
    if shard_index is None or shard_count is None:
        shard_index, shard_count = _jax_process()
    if not 0 <= shard_index < shard_count:
        raise ValueError(f"shard_index={shard_index} is not in [0, {shard_count})")
    if batch_size <= 0 or batch_size % shard_count:
        raise ValueError(
            f"batch_size={batch_size} must be a positive multiple of the {shard_count} hosts"
        )
    if num_epochs is not None and num_epochs < 1:
        raise ValueError(f"num_epochs={num_epochs}; expected >= 1 or None (forever)")
    ds = SCHEDULES[schedule](records, seed=seed)
    ds = ds.repeat(num_epochs)  # reshuffles every epoch (grain folds the epoch into the seeds)
    if num_epochs is not None and drop_remainder:
        # Whole global batches only, so that every host yields the same number of batches.
        ds = ds[: len(ds) // batch_size * batch_size]
    # Global batches, then this host's contiguous block of each: the rows of a multi-process
    # batch (process 0's block first, as host_to_global lays them out) are those of a
    # one-process run, in the same order, so both runs sample and train on the same data.
    ds = ds.batch(batch_size, drop_remainder=drop_remainder, batch_fn=list)
    local = batch_size // shard_count
    return ds.map(lambda batch: batch[shard_index * local : (shard_index + 1) * local])


def make_iterator(
    records: Sequence[Record], *, state: dict[str, Any] | None = None, **dataset_kw
) -> grain.DatasetIterator:
    """A checkpointable iterator over this host's record batches (see ``make_dataset``).

    Save ``it.get_state()`` (a small JSON-serializable dict) with the checkpoint; passing it back
    as ``state`` resumes with exactly the batches that would have come next.

    Args:
      records: all records.
      state: an earlier ``get_state()`` to resume from.
      dataset_kw: ``make_dataset``'s options (batch_size, schedule, seed, num_epochs,
        shard_index, shard_count).

    Returns:
      A ``grain.DatasetIterator`` yielding ``list[Record]``.
    """
    ds = make_dataset(records, **dataset_kw)
    # Records are in memory: no reader threads (grain's advice for in-memory sources).
    it = ds.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0)).__iter__()
    if state is not None:
        it.set_state(state)
    return it


# ----------------------------------------------------------------------------- prompt encoding


@dataclasses.dataclass
class EncodedPrompts:
    """Tokenized prompts of a batch of records.

    Attributes:
      input_ids: ``[B, T]`` int32 token ids, left-padded (B = kept records).
      attention_mask: ``[B, T]`` int32, 1 on real tokens.
      records: the records that were kept, aligned with the rows.
      kept: ``[B]`` indices of the kept records in the input list.
      num_truncated: prompts cut on the left to ``max_prompt_len``.
      num_dropped: prompts dropped for being longer than ``max_prompt_len``.
    """

    input_ids: np.ndarray
    attention_mask: np.ndarray
    records: list[Record]
    kept: np.ndarray
    num_truncated: int
    num_dropped: int


def encode_prompts(
    tokenizer: Any,
    records: Sequence[Record],
    *,
    max_prompt_len: int,
    overlong: str = "truncate_left",
    system: str | None = None,
    pad_to_multiple: int | None = None,
    buckets: Sequence[int] | None = None,
) -> EncodedPrompts:
    """Renders records' prompts with the chat template and tokenizes them, left-padded.

    Args:
      tokenizer: an ``ifrl_jax.tokenizer.Tokenizer`` (``apply_chat_template``, ``encode``,
        ``pad_id``).
      records: the batch's records.
      max_prompt_len: longest prompt in tokens, chat template included.
      overlong: what to do with a longer prompt: ``"truncate_left"`` keeps its last
        ``max_prompt_len`` tokens (the generation prompt survives), ``"drop"`` leaves the record
        out of the batch, ``"error"`` raises naming the record.
      system: optional system message for the chat template.
      pad_to_multiple: round the padded length up to a multiple of this (fewer compilations).
      buckets: or pad to the smallest of these lengths that fits.

    Returns:
      EncodedPrompts: ``input_ids``/``attention_mask`` ``[B, T]`` int32 (B = kept records),
      the kept records and their indices, and the truncated/dropped counts.

    Raises:
      ValueError: unknown ``overlong`` rule, or an over-long prompt under ``"error"``.
    """
    from ifrl_jax import tokenizer as tokenizer_lib

    if overlong not in OVERLONG:
        raise ValueError(f"overlong={overlong!r}; expected one of {OVERLONG}")
    chats = tokenizer.apply_chat_template([r.prompt for r in records], system=system)
    seqs = tokenizer.encode(chats)
    kept, kept_seqs, truncated, dropped = [], [], 0, 0
    for i, seq in enumerate(seqs):
        if len(seq) > max_prompt_len:
            if overlong == "error":
                raise ValueError(
                    f"{records[i].source}: prompt has {len(seq)} tokens with the chat template, "
                    f"more than max_prompt_len={max_prompt_len}; raise it or set "
                    "overlong='truncate_left' or 'drop'"
                )
            if overlong == "drop":
                dropped += 1
                continue
            seq = seq[len(seq) - max_prompt_len :]
            truncated += 1
        kept.append(i)
        kept_seqs.append(seq)
    if truncated or dropped:
        logging.info(
            "encode_prompts: %d prompts over %d tokens truncated on the left, %d dropped",
            truncated,
            max_prompt_len,
            dropped,
        )
    if kept_seqs:
        ids, mask = tokenizer_lib.pad_left(
            kept_seqs,
            pad_id=tokenizer.pad_id,
            max_len=max_prompt_len,
            pad_to_multiple=pad_to_multiple,
            buckets=buckets,
        )
    else:
        ids = mask = np.zeros((0, 0), np.int32)
    return EncodedPrompts(
        input_ids=ids,
        attention_mask=mask,
        records=[records[i] for i in kept],
        kept=np.asarray(kept, np.int64),
        num_truncated=truncated,
        num_dropped=dropped,
    )
