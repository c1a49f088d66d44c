"""Pseudo-label pairs: reference and shipped data, policy samples, the quality check, I/O."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest

from ifrl_jax import (
    checkpoint,
    curriculum,
    engine,
    models,
    pairs,
    records,
    samplers,
    sampling,
    sharding,
)
from ifrl_jax import tokenizer as tokenizer_lib
from ifrl_jax.jobs import pairs as pairs_job
from ifrl_jax.records import Constraint, Record

SHARED = Path(__file__).resolve().parents[2] / "shared" / "upstream-verl-if-data"
NO_COMMA = Constraint("punctuation:no_comma", {}, "Do not use commas")
LOWER = Constraint("change_case:english_lowercase", {}, "Answer in lowercase")
ROLE = Constraint("situation:role_play", {}, "Answer as a pirate")


@pytest.fixture(scope="module")
def tok():
    return tokenizer_lib.load_tokenizer(tokenizer_lib.TINY_TOKENIZER_DIR)


@pytest.fixture(scope="module")
def shipped():
    return records.load_records(str(pairs.ASSETS / "train.jsonl")).records


def _row(c: Constraint, response: str, label: int, source: str = "t:1") -> dict:
    rec = Record("task", (c,), seed="task ", source=source)
    return pairs.make_pair(c, response, label, level=1, record=rec, origin="test")


# --- reference and shipped data ----------------------------------------------------------------


def _job_config(inputs, output, **kw):
    """launch/build_pairs.py's config for jobs.pairs.run."""
    return ml_collections.ConfigDict(
        {"input": [str(inputs)], "output": str(output), "format": "reference", "limit": 0, **kw}
    )


def test_reference_format_gives_a_positive_and_a_negative_for_the_last_constraint(tmp_path):
    rows = [
        {"prompt": "Say hi. Do not use commas. Answer in lowercase. ",
         "instruction_id_list": [NO_COMMA.id, LOWER.id], "kwargs": [{}, {}],
         "constraint": [NO_COMMA.text, LOWER.text], "chosen": "hi there", "rejected": "Hi there"},
        {"prompt": "Greet me. Answer as a pirate. ", "instruction_id_list": [ROLE.id],
         "kwargs": [{}], "constraint": [ROLE.text], "chosen": "Ahoy", "rejected": "Hello"},
    ]  # fmt: skip
    path = tmp_path / "ref.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = pairs_job.run(_job_config(path, tmp_path / "pairs.jsonl"))
    out = pairs.load_pairs(str(tmp_path / "pairs.jsonl"))
    assert [(p["constraint_id"], p["response"], p["label"], p["level"]) for p in out] == [
        (LOWER.id, "hi there", 1, 2), (LOWER.id, "Hi there", 0, 2),
        (ROLE.id, "Ahoy", 1, 1), (ROLE.id, "Hello", 0, 1),
    ]  # fmt: skip
    assert out[0]["constraint"] == LOWER.text and out[0]["source"] == f"{path}:1"
    assert out[0]["group"] == out[1]["group"] != out[2]["group"]
    assert (summary["pairs"], summary["soft_pairs"], summary["written"]) == (4, 2, 4)
    assert (summary["pos_hard_pass_rate"], summary["neg_hard_pass_rate"]) == (1.0, 0.0)
    del rows[0]["rejected"]
    path.write_text(json.dumps(rows[0]) + "\n")
    with pytest.raises(records.RecordError, match=r"ref.jsonl:1: fields 'chosen'/'rejected'"):
        pairs_job.run(_job_config(path, tmp_path / "x.jsonl"))


@pytest.mark.skipif(not (SHARED / "train_from_parquet.jsonl").exists(), reason="no ../shared")
def test_upstream_pair_data_counts_labels_and_levels():
    recs = records.load_records(str(SHARED / "train_from_parquet.jsonl")).records
    out = pairs.pairs_from_reference(recs)
    assert len(out) == 2 * 1319
    assert [p["label"] for p in out[:4]] == [1, 0, 1, 0] and {p["level"] for p in out} == {5}
    assert all(p["constraint_id"] == r.constraints[4].id for p, r in zip(out[::2], recs))
    assert out[0]["response"] == recs[0].meta["chosen"]
    assert out[1]["response"] == recs[0].meta["rejected"]


def test_shipped_responses_pair_each_constraint_with_a_response_that_lacks_it(shipped):
    responses = pairs.load_responses(str(pairs.ASSETS / "train_responses.jsonl"), shipped)
    out = pairs.pairs_from_responses(shipped, responses)
    by_source = {r.source: (r, resp) for r, resp in zip(shipped, responses)}
    constraints = sum(len(r.constraints) for r in shipped)  # one pair of each per constraint
    assert len(out) == 2 * constraints == 1240 and sum(p["label"] for p in out) == constraints
    for pos, neg in zip(out[::2], out[1::2]):
        rec, resp = by_source[pos["source"]]
        assert (pos["label"], neg["label"], pos["response"]) == (1, 0, resp)
        assert pos["constraint_id"] == neg["constraint_id"] == rec.constraints[pos["level"] - 1].id
        other, other_resp = by_source[neg["negative_source"]]
        assert neg["response"] == other_resp and other.seed == rec.seed
        assert pos["constraint_id"] not in other.instruction_ids
    train, held = pairs.split_heldout(out, fraction=0.2, seed=0)
    assert len(train) + len(held) == len(out) and len({p["group"] for p in held}) == 8
    assert not {p["group"] for p in train} & {p["group"] for p in held}


def test_pair_files_are_validated(tmp_path):
    path = tmp_path / "p.jsonl"
    good = _row(NO_COMMA, "a b", 1)
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "label": 2}) + "\n")
    with pytest.raises(ValueError, match=r"p.jsonl:2: field 'label' must be 0 or 1"):
        pairs.load_pairs(str(path))
    path.write_text(json.dumps({k: v for k, v in good.items() if k != "response"}) + "\n")
    with pytest.raises(ValueError, match=r"p.jsonl:1: missing fields \['response'\]"):
        pairs.load_pairs(str(path))
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "response": " \n"}) + "\n")
    with pytest.raises(ValueError, match=r"p.jsonl:2: field 'response' is empty"):
        pairs.load_pairs(str(path))


def test_a_blank_sampled_response_makes_no_pair(shipped):
    rec = next(r for r in shipped if len(r.constraints) == 1)
    groups = pairs.instruction_levels([rec])  # [[L0, L1]]
    out = pairs.pairs_from_policy(groups, [["a", " "], ["b", "c"]])  # sample 1's L0 is blank
    assert [(p["response"], p["label"], p["sample"]) for p in out] == [("b", 1, 0), ("a", 0, 0)]


# --- the quality check ------------------------------------------------------------------------


def test_quality_summary_on_a_hand_checked_case():
    """no_comma: positives pass 1 of 2; negatives pass 1 of 3; lowercase: 1 of 1 and 0 of 1."""
    rows = [
        _row(NO_COMMA, "a b", 1), _row(NO_COMMA, "a, b", 1),
        _row(NO_COMMA, "c, d", 0), _row(NO_COMMA, "c d", 0), _row(NO_COMMA, "e, f", 0),
        _row(LOWER, "all lower here", 1), _row(LOWER, "Not Lower", 0),
        _row(ROLE, "Arr", 1), _row(ROLE, "Hello", 0),
    ]  # fmt: skip
    q = pairs.quality_summary(rows, timeout_s=None)
    assert (q["pairs"], q["positives"], q["negatives"], q["soft_pairs"]) == (9, 4, 5, 2)
    assert (q["hard_positives"], q["hard_negatives"]) == (3, 4)
    assert q["pos_hard_pass_rate"] == pytest.approx(2 / 3)
    assert q["neg_hard_pass_rate"] == pytest.approx(1 / 4)
    assert q["per_id"] == {LOWER.id: [1.0, 0.0, 2], NO_COMMA.id: [0.5, 1 / 3, 5]}
    none = pairs.quality_summary([_row(ROLE, "Arr", 1)])
    assert none["pos_hard_pass_rate"] is None and none["per_id"] == {}


# --- policy samples ---------------------------------------------------------------------------


def test_levels_run_from_the_bare_seed_to_all_constraints(shipped):
    groups = pairs.instruction_levels(shipped[:3] + curriculum.decompose(shipped[3]))
    assert [len(g) for g in groups] == [len(r.constraints) + 1 for r in shipped[:4]]
    for levels, rec in zip(groups, shipped):
        assert levels[0].prompt == rec.seed and levels[0].constraints == ()
        assert levels[-1].prompt == rec.prompt and [lv.level for lv in levels] == list(
            range(len(levels))
        )


@pytest.mark.parametrize("which", ["static", "continuous"])
def test_sampling_batches_prompts_into_few_calls_and_maps_responses_back(tok, monkeypatch, which):
    """A fake sampler that answers "<prompt index>-<sample>": rows come back to their prompts.
    The static sampler runs batches of 4 prompts; the engine, one call on 4 x 2 slots."""
    prompts = [f"prompt {i} " + "x " * (i % 5) * 9 for i in range(11)]
    index = {tuple(s): i for i, s in enumerate(tok.encode(tok.apply_chat_template(prompts)))}
    calls = []

    def fake_generate(cfg, params, ids, mask, *, num_samples, **kw):
        calls.append((ids.shape, kw.get("num_slots"), tuple(kw["prompt_ids"])))
        texts = [f"{index[tuple(row[m.astype(bool)])]}-{j}" for row, m in zip(ids, mask)
                 for j in range(num_samples)]  # fmt: skip
        tokens, _ = tokenizer_lib.pad_left(tok.encode(texts), pad_id=tok.pad_id)
        lengths = np.full(len(texts), tokens.shape[1])
        return sampling.SampleOutput(tokens, tokens, lengths, lengths > 0, 0, ids.shape[1])

    monkeypatch.setattr(sampling if which == "static" else engine, "generate", fake_generate)
    out = pairs.sample_responses(None, None, tok, prompts, batch_size=4, max_prompt_len=64,
                                 max_new_tokens=4, num_samples=2,
                                 engine=samplers.Options(which))  # fmt: skip
    assert out == [[f"{i}-0", f"{i}-1"] for i in range(11)]
    if which == "static":  # same shape each call; prompt k of the sorted order keyed by k
        assert [c[0][0] for c in calls] == [4, 4, 4]
        assert [c[2] for c in calls] == [(0, 1, 2, 3), (4, 5, 6, 7), (8, 9, 10, 11)]
    else:
        assert calls == [((11, calls[0][0][1]), 8, tuple(range(11)))]
        # On a mesh of 4 data-parallel devices, the 11 prompts are filled up to 12.
        calls.clear()
        mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tp": 2})
        again = pairs.sample_responses(None, None, tok, prompts, batch_size=4, max_prompt_len=64,
                                       max_new_tokens=4, num_samples=2, mesh=mesh,
                                       engine=samplers.Options(which))  # fmt: skip
        assert again == out and [(c[0][0], c[2]) for c in calls] == [(12, tuple(range(12)))]


def test_pairs_from_a_tiny_random_policy(tok, shipped, tmp_path):
    cfg = models.get_preset("tiny", vocab_size=tok.vocab_size)
    rng = np.random.default_rng(0)
    draw = lambda x: jax.numpy.asarray(rng.normal(0.0, 0.5, x.shape), x.dtype)
    params = jax.tree.map(draw, models.abstract_params(cfg))
    recs = [next(r for r in shipped if len(r.constraints) == k) for k in (1, 2, 3)]
    groups = pairs.instruction_levels(recs)
    prompts = [lv.prompt for g in groups for lv in g]
    kw = dict(batch_size=4, max_prompt_len=128, max_new_tokens=8, num_samples=2)
    responses = pairs.sample_responses(cfg, params, tok, prompts, **kw)
    # The static sampler's batches of 4 draw the engine's tokens (one call, 8 slots).
    static = pairs.sample_responses(cfg, params, tok, prompts, engine=samplers.Options("static"),
                                    **kw)  # fmt: skip
    assert static == responses and len({r for rs in responses for r in rs}) > 9
    assert len(responses) == 9 and all(len(r) == 2 for r in responses)
    out = pairs.pairs_from_policy(groups, responses)
    assert len(out) == 2 * 2 * (1 + 2 + 3)
    flat = iter(responses)
    for levels, rec in zip(groups, recs):
        samples = [next(flat) for _ in levels]
        mine = [p for p in out if p["source"] == rec.source]
        for k, c in enumerate(rec.constraints, start=1):
            for j in range(2):
                pos, neg = [p for p in mine if (p["level"], p["sample"]) == (k, j)]
                assert (pos["label"], neg["label"], pos["constraint_id"]) == (1, 0, c.id)
                assert (pos["response"], neg["response"]) == (samples[k][j], samples[k - 1][j])
                assert pos["constraint"] == c.text and pos["kwargs"] == c.kwargs
    q = pairs.quality_summary(out, timeout_s=None)
    assert q["pairs"] == 24 and q["hard_positives"] == q["hard_negatives"] == 12
    # The policy loads from an orbax checkpoint whose `state` item holds `params`.
    mngr = ocp.CheckpointManager(str(tmp_path / "ckpt"), item_names=("state",))
    state = {"params": params, "step": np.int32(3)}
    mngr.save(3, args=ocp.args.Composite(state=ocp.args.StandardSave(state)))
    mngr.wait_until_finished()
    cfg2, params2 = checkpoint.load_policy(checkpoint=str(tmp_path / "ckpt"), vocab_size=2048)
    assert cfg2 == cfg
    jax.tree.map(np.testing.assert_array_equal, params, params2)
    assert dataclasses.asdict(cfg2)["vocab_size"] == 2048
