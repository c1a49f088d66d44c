"""The reward model: HF parity and pooling, input template and truncation, batched scoring,
the train step on the 8-device mesh, checkpoints, and the training run end to end."""

from __future__ import annotations

import json

import jax
import ml_collections
import numpy as np
import pytest
import torch
import transformers

from ifrl_jax import models, pairs, rewards, sharding
from ifrl_jax import reward_model as rm
from ifrl_jax import tokenizer as tokenizer_lib
from ifrl_jax import train_step as ts
from ifrl_jax.errors import UserError
from ifrl_jax.jobs import reward_model as rm_job
from ifrl_jax.records import Constraint, Record
from tests.hf_fixtures import left_padded_batch, random_hf_model, tiny_hf_config

FP32_TOL = 1e-4  # max-abs class-logit difference vs transformers, fp32
LONG = " ".join(f"word{i}" for i in range(300))  # ~600 tokens with the tiny tokenizer

_classify = jax.jit(rm.classify, static_argnums=0)


@pytest.fixture(scope="module")
def tok():
    return tokenizer_lib.load_tokenizer(tokenizer_lib.TINY_TOKENIZER_DIR)


@pytest.fixture(scope="module")
def tiny_rm(tok):
    """A random tiny classifier over the tiny tokenizer's 2,048 ids (numpy draws: no compile)."""
    cfg = models.get_preset("tiny", vocab_size=2048, num_labels=2, pad_token_id=tok.pad_id)
    rng = np.random.default_rng(1)

    def draw(path, x):  # norm scales near 1, everything else (biases too) near 0
        base = 1.0 if jax.tree_util.keystr(path).endswith("['scale']") else 0.0
        return jax.numpy.asarray(base + rng.normal(0.0, 0.05, x.shape), x.dtype)

    params = jax.tree_util.tree_map_with_path(draw, models.abstract_params(cfg))
    return cfg, params


def _hf_pooled(model, ids, mask):
    with torch.no_grad():
        out = model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask))
    return out.logits.numpy()


# --- HF parity ------------------------------------------------------------------------------


def test_import_export_logits_and_pooling_match_transformers(tmp_path):
    """Left-padded rows; rows 0 and 1 end in real tokens equal to pad_token_id, which HF's
    pooling (the rightmost id != pad_token_id) skips."""
    hf = random_hf_model(tiny_hf_config(tied=False, num_labels=2), seed=3, classifier=True)
    assert float(hf.model.layers[0].self_attn.q_proj.bias.detach().abs().sum()) > 0
    hf.save_pretrained(tmp_path / "in")
    cfg, params = models.load_hf(str(tmp_path / "in"))
    assert (cfg.num_labels, cfg.pad_token_id) == (2, 0)
    ids, mask, _ = left_padded_batch(cfg.vocab_size, [7, 7, 9, 5, 2, 1], seed=1)
    ids[0, -1] = 0
    ids[1, -2:] = 0
    np.testing.assert_array_equal(rm.pool_index(ids, pad_token_id=0), [7, 6, 8, 8, 8, 8])
    np.testing.assert_array_equal(rm.pool_index(ids, pad_token_id=None), [8] * 6)
    ref = _hf_pooled(hf, ids, mask)
    ours = np.asarray(_classify(cfg, params, ids, mask))
    assert ours.shape == (6, 2) and np.abs(ours - ref).max() < FP32_TOL

    models.save_hf(cfg, params, str(tmp_path / "out"))
    with open(tmp_path / "out" / "config.json") as f:
        assert json.load(f)["architectures"] == ["Qwen2ForSequenceClassification"]
    back = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "out")
    assert type(back) is transformers.Qwen2ForSequenceClassification
    for (name, a), (name2, b) in zip(hf.state_dict().items(), back.eval().state_dict().items()):
        assert name == name2 and torch.equal(a, b), name
    np.testing.assert_allclose(_hf_pooled(back, ids, mask), ref, atol=1e-6)  # sdpa vs eager


def test_classifier_from_a_policy_checkpoint_exports_to_transformers(tok, tmp_path):
    """A causal LM's backbone plus a new head; transformers loads the export as a classifier."""
    lm = random_hf_model(tiny_hf_config(tied=True), seed=5)
    lm.save_pretrained(tmp_path / "lm")
    cfg, params = rm.init_model(str(tmp_path / "lm"), tokenizer=tok, seed=0)
    lm_cfg, lm_params = models.load_hf(str(tmp_path / "lm"))
    assert (cfg.num_labels, cfg.pad_token_id) == (2, tok.pad_id) and "lm_head" not in params
    jax.tree.map(
        np.testing.assert_array_equal,
        {k: lm_params[k] for k in lm_params},
        {k: params[k] for k in lm_params},
    )
    models.save_hf(cfg, params, str(tmp_path / "rm"))
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "rm").eval()
    ids, mask, _ = left_padded_batch(cfg.vocab_size, [6, 3])
    assert (
        np.abs(np.asarray(_classify(cfg, params, ids, mask)) - _hf_pooled(hf, ids, mask)).max()
        < FP32_TOL
    )


# --- input text and truncation ----------------------------------------------------------------


def test_template_is_upstreams_text_with_its_double_spaces(tok):
    text = rm.format_input("Hi there", "Use no commas")
    assert text == (
        "You need to determine whether the response adheres to this constraint. Only output  1 "
        "if it does, otherwise only output  0.  Response: Hi there. Constraint: Use no commas"
    )
    assert text == rm.TEMPLATE.format(response="Hi there", constraint="Use no commas")
    enc = rm.encode_inputs(tok, ["Hi there"], ["Use no commas"], max_len=512)
    assert enc.seqs[0] == tok.hf(text)["input_ids"]  # as upstream's tokenizer(text)
    assert not enc.truncated.any()
    chat = rm.encode_inputs(tok, ["Hi there"], ["Use no commas"], max_len=512, chat_template=True)
    assert (
        tok.decode_batch([chat.seqs[0]], skip_special_tokens=False)[0]
        == (tok.apply_chat_template([text])[0])
    )


@pytest.mark.parametrize("how", ["middle", "end"])
def test_truncation_cuts_the_response_and_keeps_the_constraint(tok, how):
    constraint = "End your response with the phrase Is there anything else"
    short = "a short answer"
    enc = rm.encode_inputs(
        tok, [LONG, short], [constraint, constraint], max_len=120, truncation=how
    )
    assert enc.truncated.tolist() == [True, False] and not enc.head_cut.any()
    assert 110 <= len(enc.seqs[0]) <= 120  # cut to fit, not much further
    text = tok.decode_batch([enc.seqs[0]])[0]
    assert text.startswith(rm.TEMPLATE.split("{response}")[0] + "word0 word1 word2")
    assert text.endswith(". Constraint: " + constraint)
    assert tok.encode([text], add_special_tokens=True)[0] == enc.seqs[0]  # a real string's ids
    if how == "middle":
        assert rm.MIDDLE_MARK in text and "word299. Constraint" in text
    else:
        assert rm.MIDDLE_MARK not in text and "word299" not in text
    # A constraint longer than max_len on its own: the end of the text is kept.
    huge = rm.encode_inputs(tok, [short], [LONG], max_len=64, truncation=how)
    assert huge.head_cut.tolist() == [True] and len(huge.seqs[0]) == 64
    assert tok.decode_batch([huge.seqs[0]])[0].endswith("word298 word299")


# --- batched scoring ----------------------------------------------------------------------------


def test_batched_scoring_equals_one_by_one_and_takes_few_calls(tok, tiny_rm):
    cfg, params = tiny_rm
    # 6 inputs pad to 64 tokens, 5 to 128 (one of them cut to fit).
    responses = ["yes " * (i % 3 + 1) for i in range(6)] + [
        "text " * (45 + 5 * i) for i in range(4)
    ]
    responses, constraints = responses + [LONG], [f"Constraint {i}" for i in range(11)]
    scorer = rm.RewardModelScorer(cfg, params, tok, max_len=128, batch_size=8)
    batched = scorer(responses, constraints)
    assert batched.shape == (11,) and batched.dtype == np.float32
    assert ((batched > 0) & (batched < 1)).all()
    assert (scorer.num_calls, scorer.num_truncated) == (2, 1)  # one call per length bucket
    single = np.concatenate([scorer([r], [c]) for r, c in zip(responses, constraints)])
    np.testing.assert_allclose(batched, single, atol=1e-5)
    assert scorer.num_calls == 2 + 11
    logits = scorer.logits(responses, constraints)
    np.testing.assert_allclose(batched, jax.nn.softmax(logits)[:, 1], atol=1e-6)
    assert len(scorer([], [])) == 0

    mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tp": 2})
    sharded = jax.device_put(params, models.param_shardings(cfg, mesh, "fsdp_tp"))
    on_mesh = rm.RewardModelScorer(
        cfg, sharded, tok, max_len=128, batch_size=8, mesh=mesh, rules="fsdp_tp"
    )
    np.testing.assert_allclose(on_mesh(responses[:6], constraints[:6]), batched[:6], atol=1e-5)
    with pytest.raises(ValueError, match="multiple of the 4 data-parallel"):
        rm.RewardModelScorer(cfg, sharded, tok, max_len=128, batch_size=6, mesh=mesh)


def test_scorer_is_the_soft_scorer_of_rewards(tok, tiny_rm):
    cfg, params = tiny_rm
    scorer = rm.RewardModelScorer(cfg, params, tok, max_len=128, batch_size=8)
    role = Constraint("situation:role_play", {}, "Answer as a pirate")
    no_comma = Constraint("punctuation:no_comma", {}, "Do not use commas")
    recs = [Record("task", (no_comma, role), seed="task ", source="t:1"),
            Record("task", (role,), seed="task ", source="t:2")]  # fmt: skip
    responses = ["Arr matey", "Ahoy, there"]
    result = rewards.score(recs, responses, soft_scorer=scorer, timeout_s=None)
    direct = scorer(responses, [role.text, role.text])
    np.testing.assert_allclose(
        result.scores[:, :2], [[1.0, direct[0]], [direct[1], 0.0]], atol=1e-6
    )
    np.testing.assert_allclose(result.rewards, [5 * (1 + direct[0]) / 2, 5 * direct[1]], atol=1e-5)


# --- training ---------------------------------------------------------------------------------


def test_train_steps_lower_the_loss_on_a_separable_task_on_8_devices(tok, tiny_rm):
    """Lowercase vs uppercase answers to "answer in lowercase": sharded fsdp_tp, donated state."""
    cfg, params = tiny_rm
    mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tp": 2})
    words = ["the cat sat on the mat", "we like green tea", "rain falls in june", "a dog runs"]
    responses = words + [w.upper() for w in words]
    labels = np.array([1] * 4 + [0] * 4, np.int32)
    enc = rm.encode_inputs(tok, responses, ["Answer in lowercase"] * 8, max_len=64)
    batch = rm_job.make_batch(enc, labels, np.arange(8), buckets=(64,), pad_id=tok.pad_id)
    opt = ts.OptimConfig(learning_rate=5e-3)
    step_fn = ts.make_update(
        lambda p, b, d: rm.loss(p, b, d, cfg=cfg), model=cfg, optim=opt, mesh=mesh,
        rules="fsdp_tp", denominators_fn=rm.denominators,
    )  # fmt: skip
    state = ts.init_state(params, optim=opt, shardings=step_fn.state_shardings)
    embed = state.params["embed_tokens"]["embedding"]
    assert embed.sharding.spec == jax.sharding.PartitionSpec("tp", "fsdp")
    losses = []
    for _ in range(25):
        state, metrics = step_fn(state, batch)
        losses.append(float(metrics["loss"]))
    assert embed.is_deleted()  # the input state was donated
    assert step_fn.jitted._cache_size() == 1 and int(state.step) == 25
    assert losses[-1] < 0.3 * losses[0] and float(metrics["accuracy"]) == 1.0, losses
    # A weighted mean: rows of weight 0 (filler) change nothing, whatever they hold.
    loss_fn = jax.jit(lambda p, b: rm.loss(p, b, None, cfg=cfg))
    half = {**batch, "weight": np.array([1.0] * 4 + [0.0] * 4, np.float32)}
    other = {k: v.copy() for k, v in half.items()}
    other["labels"][4:] = 1 - other["labels"][4:]
    other["input_ids"][4:] = batch["input_ids"][:4]
    loss_half, aux = loss_fn(state.params, half)
    assert float(rm.denominators(half)) == 4 and float(loss_half) > 0
    assert float(aux["accuracy"]) == 1.0  # over the 4 weighted rows only
    assert abs(float(loss_fn(state.params, other)[0]) - float(loss_half)) < 1e-6


def test_pairwise_term_is_bradley_terry_over_each_pairs_margins(tok, tiny_rm):
    """rm.loss with pairwise=c adds c x mean over weighted pairs of -log sigmoid(m_pos - m_neg)
    (m = logit_1 - logit_0; rows 2k, 2k + 1 = pair k), checked against numpy; filler pairs
    count for nothing."""
    cfg, params = tiny_rm
    # A sharper head than the fixture's, so the pairs' margins differ visibly.
    params = {**params, "score": {"kernel": 30.0 * params["score"]["kernel"]}}
    texts = ["all in lowercase", "NOT LOWER AT ALL", "a b c", "A, B, C", "x", "Y"]
    enc = rm.encode_inputs(tok, texts, ["Answer in lowercase"] * 6, max_len=96)
    labels = np.array([1, 0, 1, 0, 1, 0], np.int32)
    batch = rm_job.make_batch(enc, labels, np.arange(6), buckets=(96,), pad_id=tok.pad_id)
    batch["weight"] = np.array([1, 1, 1, 1, 0, 0], np.float32)  # the third pair is filler
    logits = np.asarray(_classify(cfg, params, batch["input_ids"], batch["attention_mask"]),
                        np.float64)  # fmt: skip
    m = (logits[:, 1] - logits[:, 0]).reshape(3, 2)
    assert np.ptp(m[:2, 0] - m[:2, 1]) > 0.05, m  # the two weighted pairs' terms differ
    bt = np.log1p(np.exp(-(m[:, 0] - m[:, 1])))[:2].mean()  # the two weighted pairs
    loss_fn = jax.jit(lambda p, b, c: rm.loss(p, b, None, cfg=cfg, pairwise=c)[0],
                      static_argnums=2)  # fmt: skip
    pointwise = float(loss_fn(params, batch, 0.0))
    assert float(loss_fn(params, batch, 0.5)) == pytest.approx(pointwise + 0.5 * bt, rel=1e-5)
    # Swapping a pair's rows (negative first) changes the term: the order carries the pairing.
    swapped = {k: v[[1, 0, 2, 3, 4, 5]] for k, v in batch.items()}
    swapped["labels"] = batch["labels"]
    assert float(loss_fn(params, swapped, 0.5)) != pytest.approx(float(loss_fn(params, batch, 0.5)))


def test_pair_rows_needs_each_positive_followed_by_its_negative():
    lower = Constraint("change_case:english_lowercase", {}, "Answer in lowercase")
    rec = Record("task", (lower,), seed="task ", source="f:1")
    make = lambda text, label, **kw: pairs.make_pair(lower, text, label, level=1, record=rec,
                                                     origin="t", **kw)  # fmt: skip
    rows = [make("a", 1), make("B", 0), make("c", 1, sample=1), make("D", 0, sample=1)]
    np.testing.assert_array_equal(rm_job.pair_rows(rows), [[0, 1], [2, 3]])
    with pytest.raises(UserError, match=r"config.pairwise: rows 3 and 4 \(f:1\)"):
        rm_job.pair_rows(rows[:2] + rows[2:][::-1], flag="config.pairwise")
    with pytest.raises(UserError, match="rows 1 and 2"):  # two samples' rows mixed up
        rm_job.pair_rows([rows[0], rows[3]])
    with pytest.raises(UserError, match="3 pair rows, an odd count"):
        rm_job.pair_rows(rows[:3])


def test_training_run_checkpoints_resume_and_export(tiny_rm, tmp_path):
    """jobs.reward_model.run from a HF classifier dir on toy pairs: summary, orbax checkpoints,
    resume, HF export."""
    models.save_hf(*tiny_rm, str(tmp_path / "init"))
    lower = Constraint("change_case:english_lowercase", {}, "Answer in lowercase")
    rows = []
    for i in range(12):
        rec = Record("task", (lower,), seed=f"task {i} ", source=f"f:{i}")
        text = f"a joke about number {i}"
        rows.append(pairs.make_pair(lower, text, 1, level=1, record=rec, origin="t"))
        rows.append(pairs.make_pair(lower, text.upper(), 0, level=1, record=rec, origin="t"))
    pairs.write_pairs(rows, str(tmp_path / "pairs.jsonl"))
    c = ml_collections.ConfigDict(dict(
        pairs=str(tmp_path / "pairs.jsonl"), reference_data="", heldout_pairs="",
        heldout_fraction=0.25, model="", init_from=str(tmp_path / "init"), tokenizer="", max_len=64,
        truncation="middle", chat_template=False, batch_size=8, eval_batch_size=8, num_steps=2,
        learning_rate=1e-3, schedule="constant", warmup_steps=1, weight_decay=0.01,
        grad_clip=1.0, pairwise=1.0, seed=0, mesh={"data": -1}, num_devices=1,
        sharding="fsdp", workdir=str(tmp_path / "work"), checkpoint_every=1, keep_checkpoints=2,
        export_hf=str(tmp_path / "hf"), log_every=1,
    ))  # fmt: skip
    summary = rm_job.run(c)
    assert (summary["heldout_pairs"], summary["train_pairs"], summary["steps"]) == (6, 18, 2)
    assert summary["heldout_hard_pairs"] == 6 and 0 <= summary["verifier_agreement"] <= 1
    assert summary["label_verifier_agreement"] == 1.0 and summary["first_loss"] > 0
    assert set(summary["heldout_accuracy_per_id"]) == {"change_case:english_lowercase"}
    assert sorted(int(p.name) for p in (tmp_path / "work").iterdir() if p.name.isdigit()) == [1, 2]
    # The checkpoint holds the trained params: the same as the HF export.
    cfg, params, meta = rm.load_reward_model(str(tmp_path / "work"))
    hf_cfg, hf_params = models.load_hf(str(tmp_path / "hf"))
    assert hf_cfg == cfg and meta["step"] == 2 and meta["input"]["template"] == rm.TEMPLATE
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(params), jax.device_get(hf_params))
    # A second run resumes at step 2 (nothing left to do) and scores like the first.
    again = rm_job.run(c)
    assert again["first_loss"] is None
    assert again["heldout_accuracy"] == summary["heldout_accuracy"]
    # Other training settings in that workdir: one error naming the keys, nothing written.
    files = sorted(str(p) for p in (tmp_path / "work").rglob("*"))
    other = ml_collections.ConfigDict({**c.to_dict(), "pairwise": 0.0, "learning_rate": 2e-3})
    with pytest.raises(UserError, match=r"config.workdir=\S+ holds a reward model trained with "
                       r"learning_rate=0.001, pairwise=1.0; this run has learning_rate=0.002, "
                       r"pairwise=0.0"):  # fmt: skip
        rm_job.run(other)
    assert sorted(str(p) for p in (tmp_path / "work").rglob("*")) == files


def test_calibration_error_and_agreement_per_id_on_hand_made_scores():
    probs = np.array([0.9, 0.9, 0.1, 0.1, 0.75, 0.25])
    # bins 0.9 (2 rows, both 1: |0.9-1|=0.1), 0.1 (2 rows, both 0: 0.1), 0.75 (1 row, 0: 0.75),
    # 0.25 (1 row, 1: 0.75) -> (2*0.1 + 2*0.1 + 0.75 + 0.75) / 6
    assert pairs.calibration_error(probs, [1, 1, 0, 0, 0, 1]) == pytest.approx(1.9 / 6)
    assert pairs.calibration_error([0.0, 1.0], [0, 1]) == 0.0
    lower = Constraint("change_case:english_lowercase", {}, "Answer in lowercase")
    nocomma = Constraint("punctuation:no_comma", {}, "Do not use commas")
    rec = Record("task", (lower, nocomma), seed="task ", source="f:1")
    rows = [pairs.make_pair(lower, "all lower", 1, level=1, record=rec, origin="t"),
            pairs.make_pair(lower, "NOT LOWER", 0, level=1, record=rec, origin="t"),
            pairs.make_pair(nocomma, "a, b", 0, level=1, record=rec, origin="t"),
            pairs.make_pair(nocomma, "a b", 1, level=1, record=rec, origin="t")]  # fmt: skip
    # the scorer is right on lowercase and wrong on both no_comma rows
    scorer = lambda texts, constraints: np.array([0.8, 0.3, 0.9, 0.2])
    out = pairs.evaluate_scorer(scorer, rows)
    assert out["verifier_agreement_per_id"] == {"change_case:english_lowercase": 1.0,
                                                "punctuation:no_comma": 0.0}  # fmt: skip
    assert out["verifier_agreement"] == 0.5
    assert out["verifier_ece"] == pytest.approx((0.2 + 0.3 + 0.9 + 0.8) / 4)


def test_agreement_with_the_soft_ids_hidden_oracle():
    """pairs.evaluate_scorer: the RM's decision against the oracle of soft ids that have one."""
    cheer = Constraint("style:enthusiastic", {}, "Write with enthusiasm")
    role = Constraint("situation:role_play", {}, "Answer as a pirate")
    rec = Record("task", (cheer, role), seed="task ", source="f:1")
    rows = [pairs.make_pair(cheer, "Great!", 1, level=1, record=rec, origin="t"),
            pairs.make_pair(cheer, "fine.", 0, level=1, record=rec, origin="t"),
            pairs.make_pair(cheer, "Wow!", 0, level=1, record=rec, origin="t"),
            pairs.make_pair(role, "ahoy", 1, level=2, record=rec, origin="t")]  # fmt: skip
    # Decisions: yes, no, no, yes; the oracle: yes, no, yes (role_play has none).
    out = pairs.evaluate_scorer(lambda texts, asks: np.array([0.9, 0.2, 0.4, 0.7]), rows)
    assert out["oracle_agreement"] == pytest.approx(2 / 3) and out["heldout_oracle_pairs"] == 3
    assert out["oracle_agreement_per_id"] == {"style:enthusiastic": pytest.approx(2 / 3)}
    assert out["verifier_agreement"] is None  # no hard pair
