"""The self-supervised reward model: input template, batched scoring, loss, checkpoints.

A Qwen2 backbone with a 2-class head `score` on the last non-pad token (the layout of
`transformers.Qwen2ForSequenceClassification`), trained with cross-entropy on pseudo-label pairs
(`ifrl_jax.pairs`); P(class 1) is the soft score of a (response, constraint) pair
(../shared/DESIGN.md, points 3-5). Letters: P pairs, B rows, T length, D model dim, C classes.

Input: exactly the upstream template (`TEMPLATE`, double spaces included), tokenized as
upstream's `tokenizer(text)` (no chat template, the tokenizer's own special tokens, e.g.
DeepSeek's BOS); `chat_template=True` wraps it in one user turn instead. Over `max_len` the
response is cut (its middle by default, `TRUNCATIONS`), never the constraint, and the text is
re-tokenized: every input is the exact tokenization of a real string. Only when template and
constraint alone exceed `max_len` are the first tokens dropped.

Pooling is HF's rule: the rightmost id != `cfg.pad_token_id` (T - 1 if None; HF raises there
for B > 1); with left padding that is T - 1 unless the text itself ends in the pad id.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import Mesh

from ifrl_jax import checkpoint, models, sharding
from ifrl_jax import tokenizer as tokenizer_lib
from ifrl_jax.models import api
from ifrl_jax.models.config import ModelConfig
from ifrl_jax.models.qwen2 import attention_mask
from ifrl_jax.train_step import TrainState

TEMPLATE = (
    "You need to determine whether the response adheres to this constraint. Only output  1 if "
    "it does, otherwise only output  0.  Response: {response}. Constraint: {constraint}"
)
_HEAD, _REST = TEMPLATE.split("{response}")
_MID = _REST.removesuffix("{constraint}")
MIDDLE_MARK = " ... "  # joins the kept head and tail of a response cut in the middle
_SENTINEL = "\x00RESPONSE\x00"


def format_input(response: str, constraint: str) -> str:
    """The reward model's input text for one pair (`TEMPLATE` filled in)."""
    return _HEAD + response + _MID + constraint


# --- Tokenization with truncation that keeps the constraint ---
def _cut_end(text: str, spans: list[tuple[int, int]], keep: int) -> str:
    """Keeps the response's first `keep` tokens (spans: char spans of its tokens)."""
    if keep >= len(spans):
        return text
    return text[: spans[keep - 1][1]] if keep > 0 else ""


def _cut_middle(text: str, spans: list[tuple[int, int]], keep: int) -> str:
    """Keeps the first ceil(keep/2) and last floor(keep/2) tokens, joined by MIDDLE_MARK."""
    if keep >= len(spans):
        return text
    if keep <= 0:
        return ""
    head, tail = (keep + 1) // 2, keep // 2
    right = text[spans[len(spans) - tail][0] :] if tail else ""
    return text[: spans[head - 1][1]] + MIDDLE_MARK + right


# Where a too-long response is cut (config `truncation`): its middle keeps both ends, which
# many constraints are about (end phrases, postscripts, quotes, titles).
TRUNCATIONS: dict[str, Callable[[str, list[tuple[int, int]], int], str]] = {
    "middle": _cut_middle, "end": _cut_end
}  # fmt: skip


@dataclasses.dataclass
class EncodedInputs:
    """Token ids of P inputs: `seqs` (unpadded, each <= max_len); `truncated` [P] bool, the
    response was cut; `head_cut` [P] bool, even an empty response did not fit, so the first
    tokens (template head) were dropped (the constraint too, if it alone exceeds max_len)."""

    seqs: list[list[int]]
    truncated: np.ndarray
    head_cut: np.ndarray


def input_pieces(
    tokenizer: tokenizer_lib.Tokenizer, responses: Sequence[str], constraints: Sequence[str], *,
    chat_template: bool = False,
) -> list[tuple[str, str, str]]:  # fmt: skip
    """(text before the response, response, text after it) per pair; the input is their join."""
    if len(responses) != len(constraints):
        raise ValueError(f"{len(responses)} responses but {len(constraints)} constraint texts")
    if not chat_template:
        return [(_HEAD, r, _MID + c) for r, c in zip(responses, constraints)]
    chats = tokenizer.apply_chat_template([_HEAD + _SENTINEL + _MID + c for c in constraints])
    halves = [chat.split(_SENTINEL) for chat in chats]
    return [(pre, r, suf) for (pre, suf), r in zip(halves, responses)]


def encode_inputs(
    tokenizer: tokenizer_lib.Tokenizer, responses: Sequence[str], constraints: Sequence[str], *,
    max_len: int, truncation: str = "middle", chat_template: bool = False,
    add_special_tokens: bool = True,
) -> EncodedInputs:  # fmt: skip
    """Tokenizes P (response, constraint) pairs, cutting responses (not constraints) to max_len.

    Args:
      responses, constraints: [P] texts; max_len: longest input in tokens.
      truncation: a key of TRUNCATIONS ("middle" or "end").
      chat_template: wrap the text in one user turn of the tokenizer's chat template.
      add_special_tokens: run the tokenizer's post-processor, as HF's `tokenizer(text)` does.
    Returns:
      EncodedInputs.
    """
    if truncation not in TRUNCATIONS:
        raise ValueError(f"truncation={truncation!r}; choose from {sorted(TRUNCATIONS)}")
    pieces = input_pieces(tokenizer, responses, constraints, chat_template=chat_template)
    backend = tokenizer.hf.backend_tokenizer
    backend.no_padding()
    backend.no_truncation()
    encode = lambda texts: backend.encode_batch(texts, add_special_tokens=add_special_tokens)
    encs = encode(["".join(p) for p in pieces]) if pieces else []
    seqs = [list(e.ids) for e in encs]
    truncated = np.array([len(s) > max_len for s in seqs], bool)
    head_cut = np.zeros(len(seqs), bool)
    spans, budget = {}, {}
    for i in np.flatnonzero(truncated):
        lo, hi = len(pieces[i][0]), len(pieces[i][0]) + len(pieces[i][1])
        spans[i] = [(a - lo, b - lo) for a, b in encs[i].offsets if lo <= a < b <= hi]
        budget[i] = len(spans[i]) - (len(seqs[i]) - max_len)
    todo = list(spans)
    cut = TRUNCATIONS[truncation]
    while todo:  # each round shrinks every budget by the remaining excess: it terminates
        texts = [pieces[i][0] + cut(pieces[i][1], spans[i], budget[i]) + pieces[i][2] for i in todo]
        retry = []
        for i, e in zip(todo, encode(texts)):
            excess = len(e.ids) - max_len
            if excess <= 0:
                seqs[i] = list(e.ids)
            elif budget[i] <= 0:
                seqs[i], head_cut[i] = list(e.ids[-max_len:]), True
            else:
                budget[i] = max(0, budget[i] - excess)
                retry.append(i)
        todo = retry
    return EncodedInputs(seqs, truncated, head_cut)


def length_buckets(max_len: int, *, smallest: int = 32) -> tuple[int, ...]:
    """Padded input lengths: 32, 48, 64, 96, 128, 192, ... (at most 1.5x apart), then max_len."""
    out, b = [], smallest
    while b < max_len:
        out += [x for x in (b, b * 3 // 2) if x < max_len]
        b *= 2
    return (*out, max_len)


def pad_rows(
    seqs: Sequence[Sequence[int]], *, length: int, rows: int, pad_id: int
) -> tuple[np.ndarray, np.ndarray]:
    """Left-pads id lists into [rows, length] int32 (ids, mask); filler rows hold one pad token."""
    ids = np.full((rows, length), pad_id, np.int32)
    mask = np.zeros((rows, length), np.int32)
    for i, s in enumerate(seqs):
        ids[i, length - len(s) :] = s
        mask[i, length - len(s) :] = 1
    mask[len(seqs) :, -1] = 1  # no all-padding rows
    return ids, mask


# --- The classifier ---
def pool_index(input_ids: jax.Array, *, pad_token_id: int | None) -> jax.Array:
    """[B] index of the pooled token: HF's rightmost id != pad_token_id (T - 1 if None)."""
    t = input_ids.shape[-1]
    if pad_token_id is None:
        return jnp.full(input_ids.shape[:-1], t - 1, jnp.int32)
    non_pad = (input_ids != pad_token_id).astype(jnp.int32)
    return jnp.argmax(jnp.arange(t, dtype=jnp.int32) * non_pad, axis=-1).astype(jnp.int32)


def classify(
    cfg: ModelConfig, params: dict, input_ids: jax.Array, attention_mask_: jax.Array
) -> jax.Array:
    """Class logits [B, C] fp32 of a left-padded batch [B, T] (pure; call under jit)."""
    t = input_ids.shape[1]
    positions = api.positions_from_mask(attention_mask_)
    mask = attention_mask(attention_mask_, 0, t)
    hidden, _ = api.apply(cfg, params, input_ids, positions, mask, head=False)  # [B, T, D]
    idx = pool_index(input_ids, pad_token_id=cfg.pad_token_id)  # [B]
    pooled = jnp.take_along_axis(hidden, idx[:, None, None], axis=1)[:, 0]  # [B, D]
    w = params["score"]["kernel"].astype(cfg.jnp_dtype)  # [D, C]
    return jnp.einsum("bd,dc->bc", pooled, w, preferred_element_type=jnp.float32)


@functools.partial(jax.jit, static_argnames=("cfg", "mesh", "rules"))
def _classify_jit(params, input_ids, attention_mask_, *, cfg, mesh, rules):
    with sharding.activation_sharding(mesh, rules):
        return classify(cfg, params, input_ids, attention_mask_)


def classifier_from_policy(
    cfg: ModelConfig, params: dict, *, rng: jax.Array, pad_token_id: int, num_labels: int = 2,
    mesh: Mesh | None = None, rules: sharding.Rules | str | None = None,
) -> tuple[ModelConfig, dict]:  # fmt: skip
    """(cfg, params) of a classifier on a causal LM's backbone: `lm_head` dropped, a new
    normal(0.02) `score` head, num_labels and pad_token_id set."""
    rm_cfg = cfg.replace(num_labels=num_labels, pad_token_id=pad_token_id)
    kernel = 0.02 * jax.random.normal(rng, (cfg.hidden_size, num_labels), jnp.float32)
    kernel = kernel.astype(cfg.jnp_param_dtype)
    kernel = jax.device_put(
        kernel, checkpoint.param_targets(rm_cfg, mesh, rules)["score"]["kernel"].sharding
    )
    backbone = {k: v for k, v in params.items() if k != "lm_head"}
    return rm_cfg, {**backbone, "score": {"kernel": kernel}}


def init_model(
    init_from: str, *, tokenizer: tokenizer_lib.Tokenizer, preset: str = "tiny", seed: int = 0,
    mesh: Mesh | None = None, rules: sharding.Rules | str | None = None,
) -> tuple[ModelConfig, dict]:  # fmt: skip
    """The reward model to train: from a HF dir (a classifier, or a causal LM's backbone plus a
    new head), an RM orbax checkpoint dir, or ("") a random `preset` sized to the tokenizer."""
    rng = jax.random.key(seed)
    if not init_from:
        base = models.get_preset(preset)
        vocab = max(base.vocab_size, tokenizer.vocab_size)
        cfg = base.replace(num_labels=2, pad_token_id=tokenizer.pad_id, vocab_size=vocab)
        return cfg, models.init_params(cfg, rng, mesh=mesh, rules=rules)
    hf_config = os.path.join(init_from, "config.json")
    if not os.path.exists(hf_config):
        cfg, params, _ = load_reward_model(init_from, mesh=mesh, rules=rules)
        return cfg, params
    cfg, params = models.load_hf(init_from, mesh=mesh, rules=rules)
    if cfg.num_labels == 0:
        return classifier_from_policy(cfg, params, rng=rng, pad_token_id=tokenizer.pad_id,
                                      mesh=mesh, rules=rules)  # fmt: skip
    if cfg.num_labels != 2:
        raise ValueError(f"{hf_config}: {cfg.num_labels} labels; the reward model needs 2")
    pad = tokenizer.pad_id if cfg.pad_token_id is None else cfg.pad_token_id
    return cfg.replace(pad_token_id=pad), params


# --- Batched scoring (the SoftScorer of ifrl_jax.rewards) ---
class RewardModelScorer:
    """P(constraint satisfied) for (response, constraint text) pairs, batched and bucketed.

    Pairs are sorted into length buckets; each bucket runs in calls of at most `batch_size`
    rows (rows rounded up to a power of two times the data-parallel ways), so a rollout batch
    takes a few jitted calls and the process compiles a few programs, never one per pair.
    """

    def __init__(
        self, cfg: ModelConfig, params: dict, tokenizer: tokenizer_lib.Tokenizer, *,
        max_len: int, batch_size: int, mesh: Mesh | None = None,
        rules: sharding.Rules | str | None = None, truncation: str = "middle",
        chat_template: bool = False, add_special_tokens: bool = True,
    ):  # fmt: skip
        if cfg.num_labels < 2:
            raise ValueError(f"cfg.num_labels={cfg.num_labels}: not a classifier (need 2)")
        self.ways = 1 if mesh is None else sharding.data_ways(mesh)
        if batch_size % self.ways:
            raise ValueError(f"batch_size={batch_size}: not a multiple of the {self.ways} "
                             "data-parallel devices (mesh axes data x fsdp)")  # fmt: skip
        if mesh is not None and batch_size % jax.process_count():
            raise ValueError(f"batch_size={batch_size}: not a multiple of the "
                             f"{jax.process_count()} processes")  # fmt: skip
        self.cfg, self.params, self.tokenizer = cfg, params, tokenizer
        self.max_len, self.batch_size, self.mesh = max_len, batch_size, mesh
        self.rules = sharding.get_rules(rules) if isinstance(rules, str) else rules
        self.encode_kw = dict(max_len=max_len, truncation=truncation, chat_template=chat_template,
                              add_special_tokens=add_special_tokens)  # fmt: skip
        self.buckets = length_buckets(max_len)
        self.num_calls = 0  # jitted calls made (for tests and logs)
        self.num_truncated = 0  # inputs whose response was cut, over all calls

    def _rows(self, n: int) -> int:
        rows = self.ways
        while rows < n:
            rows *= 2
        return min(rows, self.batch_size)

    def logits(self, responses: Sequence[str], constraint_texts: Sequence[str]) -> np.ndarray:
        """Class logits [P, C] float32 of the pairs.

        With several processes every process must call this the same number of times (it is a
        collective); each passes its own pairs (any count, none included), see `_logits_hosts`.
        """
        enc = encode_inputs(self.tokenizer, responses, constraint_texts, **self.encode_kw)
        self.num_truncated += int(enc.truncated.sum())
        if jax.process_count() > 1 and self.mesh is not None:
            return self._logits_hosts(enc.seqs)
        lengths = np.array([len(s) for s in enc.seqs], np.int64)
        padded = np.array([tokenizer_lib.bucket_length(n, self.buckets) for n in lengths])
        pending, pad_id = [], self.tokenizer.pad_id
        for length in np.unique(padded):
            idx = np.flatnonzero(padded == length)
            for start in range(0, len(idx), self.batch_size):
                chunk = idx[start : start + self.batch_size]
                seqs, rows = [enc.seqs[i] for i in chunk], self._rows(len(chunk))
                ids, mask = pad_rows(seqs, length=int(length), rows=rows, pad_id=pad_id)
                if self.mesh is not None:
                    ids, mask = jax.device_put((ids, mask), sharding.data_sharding(self.mesh))
                out = _classify_jit(self.params, ids, mask, cfg=self.cfg, mesh=self.mesh,
                                    rules=self.rules)  # fmt: skip
                pending.append((chunk, out))  # dispatched asynchronously; fetched below
                self.num_calls += 1
        result = np.zeros((len(enc.seqs), self.cfg.num_labels), np.float32)
        for chunk, out in pending:
            result[chunk] = np.asarray(jax.device_get(out))[: len(chunk)]
        return result

    def _logits_hosts(self, seqs: Sequence[Sequence[int]]) -> np.ndarray:
        """Several processes, each with its own pairs: the hosts agree on one padded length and
        on the number of calls; in each call every host feeds batch_size / processes rows (its
        pairs, then filler rows) as its block of the global batch and gets its block back."""
        local_rows = self.batch_size // jax.process_count()
        longest = max((len(s) for s in seqs), default=1)
        length = sharding.agree_max(tokenizer_lib.bucket_length(longest, self.buckets))
        calls = sharding.agree_max(-(-len(seqs) // local_rows))
        result = np.zeros((len(seqs), self.cfg.num_labels), np.float32)
        for c in range(calls):
            chunk = seqs[c * local_rows : (c + 1) * local_rows]
            rows = pad_rows(chunk, length=length, rows=local_rows, pad_id=self.tokenizer.pad_id)
            ids, mask = sharding.host_to_global(rows, self.mesh)
            out = _classify_jit(self.params, ids, mask, cfg=self.cfg, mesh=self.mesh,
                                rules=self.rules)  # fmt: skip
            self.num_calls += 1
            result[c * local_rows : c * local_rows + len(chunk)] = sharding.global_to_host(
                out, self.mesh
            )[: len(chunk)]
        return result

    def __call__(self, responses: list[str], constraint_texts: list[str]) -> np.ndarray:
        """[P] float32 softmax probability of class 1 (constraint satisfied)."""
        logits = self.logits(responses, constraint_texts).astype(np.float64)
        logits -= logits.max(axis=-1, keepdims=True) if len(logits) else 0.0
        probs = np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)
        return probs[:, 1].astype(np.float32)


# --- The loss (a train_step loss function) ---
def denominators(batch: dict) -> jax.Array:
    """The full batch's row weight (at least 1): the loss's denominator."""
    return jnp.maximum(jnp.sum(batch["weight"].astype(jnp.float32)), 1.0)


def loss(
    params: dict, batch: dict, den, *, cfg: ModelConfig, pairwise: float = 0.0
) -> tuple[jax.Array, dict]:
    """Weighted mean cross-entropy of the pooled logits, over the full batch's `denominators`,
    plus `pairwise` x the Bradley-Terry term: rows 2k, 2k + 1 are pair k's positive and negative
    (`jobs.reward_model.pair_rows`), m = logit_1 - logit_0, and the term is the mean over pairs
    of -log sigmoid(m_pos - m_neg): each positive must score above its own negative.

    Args:
      batch: input_ids, attention_mask [B, T]; labels [B] int (0/1); weight [B] (0 = filler).
    Returns:
      (loss, aux {"accuracy"}), sums over rows / the full-batch weight (pairs: / half of it).
    """
    logits = classify(cfg, params, batch["input_ids"], batch["attention_mask"])  # [B, C]
    labels = batch["labels"].astype(jnp.int32)
    nll = -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=-1)[:, 0]
    w = batch["weight"].astype(jnp.float32)
    den = denominators(batch) if den is None else den
    correct = jnp.sum(w * (jnp.argmax(logits, axis=-1) == labels))
    total = jnp.sum(w * nll) / den
    if pairwise:
        margin = (logits[:, 1] - logits[:, 0]).reshape(-1, 2)  # [B / 2, (pos, neg)]
        pair_w = jnp.min(w.reshape(-1, 2), axis=-1)
        bt = jax.nn.softplus(margin[:, 1] - margin[:, 0])  # -log sigmoid(m_pos - m_neg)
        total = total + pairwise * jnp.sum(pair_w * bt) / (den / 2)
    return total, {"accuracy": correct / den}


# --- Checkpoints: items `params`, `opt_state` ({"opt_state", "step"}) and `meta` (JSON) ---

_ITEMS = ("params", "opt_state", "meta")


def checkpoint_manager(directory: str, *, keep: int = 2) -> ocp.CheckpointManager:
    """An orbax CheckpointManager for RM checkpoints under `directory` (created)."""
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
    return ocp.CheckpointManager(os.path.abspath(directory), options=options, item_names=_ITEMS)


def save_checkpoint(mngr: ocp.CheckpointManager, state: TrainState, meta: dict) -> int:
    """Saves the state at its step (asynchronously; `mngr.wait_until_finished()` to join)."""
    step = int(jax.device_get(state.step))
    mngr.save(
        step,
        args=ocp.args.Composite(
            params=ocp.args.StandardSave(state.params),
            opt_state=ocp.args.StandardSave({"opt_state": state.opt_state, "step": state.step}),
            meta=ocp.args.JsonSave({**meta, "step": step}),
        ),
    )
    return step


def latest_meta(mngr: ocp.CheckpointManager) -> dict:
    """The `meta` item of the latest checkpoint (no arrays are read)."""
    return checkpoint.latest_json(mngr, "meta")


def restore_checkpoint(
    mngr: ocp.CheckpointManager, abstract: TrainState
) -> tuple[TrainState, dict]:
    """(state, meta) of the latest step, into the abstract state's shardings."""
    if mngr.latest_step() is None:
        raise FileNotFoundError(f"{mngr.directory}: no checkpoint to restore")
    opt_target = {"opt_state": abstract.opt_state, "step": abstract.step}
    args = ocp.args.Composite(params=ocp.args.StandardRestore(abstract.params),
                              opt_state=ocp.args.StandardRestore(opt_target),
                              meta=ocp.args.JsonRestore())  # fmt: skip
    out = mngr.restore(mngr.latest_step(), args=args)
    opt = out["opt_state"]
    return TrainState(out["params"], opt["opt_state"], opt["step"]), out["meta"]


def load_reward_model(
    directory: str, *, mesh: Mesh | None = None, rules=None
) -> tuple[ModelConfig, dict, dict]:
    """(cfg, params, meta) of the latest RM checkpoint in `directory`, params only (scoring);
    with a mesh the params land in the rules' shardings, else on the first device."""
    mngr = checkpoint_manager(directory)
    step = mngr.latest_step()
    if step is None:
        raise FileNotFoundError(f"{directory}: no reward-model checkpoint (run train_rm first)")
    meta = latest_meta(mngr)
    cfg = ModelConfig(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in meta["model"].items()}
    )
    target = checkpoint.param_targets(cfg, mesh, rules)
    out = mngr.restore(step, args=ocp.args.Composite(params=ocp.args.StandardRestore(target)))
    mngr.close()
    return cfg, out["params"], meta
