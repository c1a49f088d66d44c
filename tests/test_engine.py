"""The continuous engine draws what the static sampler draws, for the same keys, on fewer slots."""

from __future__ import annotations

import os

import jax
import numpy as np
import pytest

from ifrl_jax import engine, footprint, models, records, rollout, sampling, sharding
from ifrl_jax import tokenizer as tokenizer_lib
from ifrl_jax.errors import UserError
from ifrl_jax.jobs import common, grpo, warm_start

LENGTHS = [7, 3, 12, 5]  # prompts of different lengths; 12 > the chunk: several prefill chunks
N, M = 3, 10  # 12 rows on 4 slots: 8 refills
ENGINE = dict(num_slots=4, prefill_chunk=4, min_slots=1)  # tail: 4 -> 2 -> 1 slots


@pytest.fixture(scope="module")
def model():
    cfg = models.get_preset("tiny")
    return cfg, models.init_params(cfg, jax.random.key(0))


def _prompts(vocab, lengths, seed=0):
    rng = np.random.default_rng(seed)
    t = max(lengths)
    ids, mask = np.zeros((len(lengths), t), np.int32), np.zeros((len(lengths), t), np.int32)
    for i, n in enumerate(lengths):
        ids[i, t - n :] = rng.integers(3, vocab, n)
        mask[i, t - n :] = 1
    return ids, mask


def _eos_ids(free: np.ndarray) -> list[int]:
    """Tokens of an EOS-free run that end rows at different steps (some rows never)."""
    return [int(free[0, 2]), int(free[4, 6])]


@pytest.mark.parametrize(
    "mode",
    [dict(temperature=0.0), dict(temperature=1.0), dict(temperature=1.0, top_p=0.7)],
    ids=["greedy", "sampled", "top_p"],
)
def test_continuous_equals_static_for_the_same_keys(model, mode):
    cfg, params = model
    ids, mask = _prompts(cfg.vocab_size, LENGTHS)
    kw = dict(max_new_tokens=M, num_samples=N, rng=jax.random.key(3), buckets=(16,), **mode)
    free = np.asarray(sampling.generate(cfg, params, ids, mask, eos_ids=[-1], **kw).tokens)
    kw["eos_ids"] = _eos_ids(free)
    if mode.get("top_p"):  # per-row caps as well (the benchmarks' forced lengths)
        kw["max_lengths"] = M - 2 * (np.arange(len(free)) % 4)  # 10, 8, 6, 4, 10, ...
    static = sampling.generate(cfg, params, ids, mask, **kw)
    cont = engine.generate(cfg, params, ids, mask, **ENGINE, **kw)
    got = {k: np.asarray(getattr(cont, k)) for k in ("tokens", "lengths", "finished", "logprobs")}
    ref = {k: np.asarray(getattr(static, k)) for k in ("tokens", "lengths", "finished", "logprobs")}
    np.testing.assert_array_equal(got["tokens"], ref["tokens"])
    np.testing.assert_array_equal(got["lengths"], ref["lengths"])
    np.testing.assert_array_equal(got["finished"], ref["finished"])
    np.testing.assert_allclose(got["logprobs"], ref["logprobs"], atol=1e-5)
    # The case covers what it claims: rows ended by EOS at different steps, rows cut at M (or
    # at their cap), slots refilled and shrunk.
    lengths, finished = ref["lengths"], ref["finished"]
    assert finished.any() and (~finished).any() and len(set(lengths[finished])) > 1
    cap = kw.get("max_lengths", np.full(len(free), M))
    assert np.all(lengths <= cap) and np.all(lengths[~finished] == cap[~finished])
    assert np.all(got["tokens"][np.arange(M)[None] >= lengths[:, None]] == 0)  # pad_id after
    assert cont.stats["refills"] == len(free) - ENGINE["num_slots"]
    assert cont.stats["shrinks"] >= 1 and cont.stats["decode_steps"] < len(free) * M
    if mode["temperature"]:  # sampling happens: samples of a prompt differ
        assert len({tuple(r) for r in free[:N]}) > 1


def test_prompt_ids_key_rows_across_split_calls(model):
    """Two static calls over halves of a batch, prompt ids 0-1 and 2-3, draw what one
    continuous call over the whole batch draws."""
    cfg, params = model
    ids, mask = _prompts(cfg.vocab_size, LENGTHS, seed=1)
    kw = dict(max_new_tokens=M, num_samples=N, rng=jax.random.key(5), buckets=(16,),
              eos_ids=[-1], temperature=1.0)  # fmt: skip
    halves = [
        np.asarray(sampling.generate(cfg, params, ids[s], mask[s], prompt_ids=pid, **kw).tokens)
        for s, pid in ((slice(0, 2), [0, 1]), (slice(2, 4), [2, 3]))
    ]
    # slot_len: the longest prompt (12) + M exactly, below the default bucket (16) + M.
    whole = engine.generate(cfg, params, ids, mask, slot_len=22, **ENGINE, **kw)
    np.testing.assert_array_equal(np.concatenate(halves), np.asarray(whole.tokens))
    other = engine.generate(cfg, params, ids, mask, prompt_ids=[4, 5, 6, 7], slot_len=22,
                            **ENGINE, **kw)  # fmt: skip
    assert not np.array_equal(np.asarray(other.tokens), np.asarray(whole.tokens))


def test_bad_inputs_are_clear_errors_before_compiling(model):
    cfg, params = model
    ids, mask = _prompts(cfg.vocab_size, LENGTHS)
    kw = dict(max_new_tokens=M, num_samples=N, eos_ids=[1], prefill_chunk=4)
    before = engine._init._cache_size(), engine._run._cache_size()
    cases = [
        (
            dict(num_slots=4, slot_len=12),
            r"prompt of 12 tokens does not fit .*rollout.engine_slot_len",
        ),
        (dict(num_slots=4, slot_len=20), r"max_new_tokens=10 \(rollout.max_new_tokens\) is above"),
        (
            dict(num_slots=2),
            r"num_samples=3 \(rollout.n\) is more than num_slots=2 "
            r"\(rollout.engine_slots\)",
        ),  # fmt: skip
        (dict(num_slots=4, prefill_chunk=0), r"prefill_chunk=0"),
        (dict(num_slots=4, eos_ids=[]), "eos_ids is empty"),
        (dict(num_slots=4, max_lengths=[M + 1] * 12), r"max_lengths must be in \[1, "),
    ]
    for extra, match in cases:
        with pytest.raises(ValueError, match=match):
            engine.generate(cfg, params, ids, mask, **{**kw, **extra})
    assert (engine._init._cache_size(), engine._run._cache_size()) == before


@pytest.mark.parametrize("shape", [{"fsdp": 2}, {"data": 4}], ids=["fsdp2", "data4"])
def test_sharded_engine_equals_single_device(model, shape):
    """Same tokens on a mesh; data4: ceil(4 slots / 3) = 2 prefill lanes round up to 4 (the
    model splits its batch over the 4 devices; 2 lanes would not divide)."""
    cfg, params = model
    ids, mask = _prompts(cfg.vocab_size, LENGTHS, seed=1)
    kw = dict(max_new_tokens=M, num_samples=N, rng=jax.random.key(5), buckets=(16,),
              eos_ids=[-1], temperature=1.0, slot_len=22, **ENGINE)  # fmt: skip
    ref = engine.generate(cfg, params, ids, mask, **kw)
    ways = int(np.prod(list(shape.values())))
    mesh = sharding.make_mesh(shape, devices=jax.devices()[:ways])
    placed = jax.device_put(params, models.param_shardings(cfg, mesh, "fsdp"))
    out = engine.generate(cfg, placed, ids, mask, mesh=mesh, rules="fsdp", **kw)
    np.testing.assert_array_equal(np.asarray(out.tokens), np.asarray(ref.tokens))
    np.testing.assert_allclose(np.asarray(out.logprobs), np.asarray(ref.logprobs), atol=1e-5)
    bad = rf"num_slots=3 \(rollout.engine_slots\) must be .* {ways} data"
    with pytest.raises(ValueError, match=bad):
        engine.generate(cfg, placed, ids, mask, mesh=mesh, rules="fsdp", **{**kw, "num_slots": 3})


def test_engine_cache_bytes_counts_the_engines_caches(model):
    cfg, _ = model
    ids = jax.ShapeDtypeStruct((4, 16), np.int32)
    consts, state = jax.eval_shape(
        lambda i, m: engine._init(
            i, m, jax.random.key(0), None, None, np.array([1]), 1.0, 1.0, 0, cfg=cfg,
            num_samples=N, num_slots=4, lanes=2, chunk=4, slot_len=26, max_new_tokens=M,
            cache_dtype="bfloat16", mesh=None, rules=None,
        ),
        ids, ids,
    )  # fmt: skip
    caches = [*state.cache.values(), *state.lane_cache.values()]
    held = sum(x.size * x.dtype.itemsize for x in caches)
    mesh = sharding.make_mesh({"fsdp": 1}, devices=jax.devices()[:1])
    counted = footprint.engine_cache_bytes(
        cfg, mesh, sharding.get_rules("fsdp"), slots=4, slot_len=26, lanes=2, prompt_len=16,
        cache_dtype="bfloat16",
    )  # fmt: skip
    assert counted == held == 2 * 2 * (4 * 26 + 2 * 16) * 2 * 16 * 2


def test_rollout_batches_are_the_same_from_either_engine():
    """`rollout.sample`: the static sampler in calls of 2 prompts and the engine in one call on
    4 slots give the same rows, texts and behaviour log-probs (per-row keys)."""
    tok = tokenizer_lib.load_tokenizer(tokenizer_lib.TINY_TOKENIZER_DIR)
    cfg = models.get_preset("tiny", vocab_size=tok.vocab_size)
    params = models.init_params(cfg, jax.random.key(1))
    recs = records.load_records(os.path.join(warm_start.ASSETS, "train.jsonl")).records[:4]
    mesh = sharding.make_mesh({"data": 1}, devices=jax.devices()[:1])
    base = dict(n=3, max_new_tokens=12, cache_dtype="float32", max_prompt_len=160)
    out = {}
    for name, extra in (("static", dict(sample_prompts=2)), ("continuous", dict(engine_slots=4))):
        opts = rollout.Options(engine=name, **base, **extra)
        out[name] = rollout.sample(cfg, params, tok, recs, opts=opts, rng=jax.random.key(2),
                                   mesh=mesh, rules=sharding.get_rules("fsdp"))  # fmt: skip
    a, b = out["static"], out["continuous"]
    assert a.texts == b.texts and len(set(a.texts)) > 6
    np.testing.assert_array_equal(a.lengths, b.lengths)
    for k in ("input_ids", "attention_mask", "response_mask"):
        np.testing.assert_array_equal(a.rows[k], b.rows[k])
    np.testing.assert_allclose(a.rows["rollout_logp"], b.rows["rollout_logp"], atol=1e-5)


@pytest.mark.parametrize(
    "key,value,match",
    [
        ("rollout.engine_slots", 3, r"num_samples=8 \(rollout.n\) is more than num_slots=3"),
        ("rollout.engine_slot_len", 200, r"max_new_tokens=80 \(rollout.max_new_tokens\) is above"),
        ("rollout.engine", "paged", r"rollout.engine='paged': use one of"),
    ],
)
def test_engine_settings_of_a_job_fail_before_compiling_and_name_the_key(key, value, match):
    """The default job's config with one bad engine key: one UserError before any sampling."""
    from configs import default_cpu
    from tests.tiny_train_config import override

    config = override(default_cpu.get_config(), **{key: value})
    mesh = sharding.make_mesh({"data": 1}, devices=jax.devices()[:1])
    opts = common.from_section(rollout.Options, {**config.rollout, **config.data})
    with pytest.raises(UserError, match=match):
        grpo._check_rollout_fits_mesh(config, mesh, opts, 32768)
