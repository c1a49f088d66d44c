"""The sampler's recorded log-probs and the trainer's refer to the same distribution, at any
temperature and with top-p/top-k on: softmax(logits / temperature) before the cut (verl's,
TRL's and tunix's convention; the cut only restricts which tokens can be drawn)."""

import jax
import numpy as np
import pytest

from ifrl_jax import grpo, grpo_step, models, rollout, sampling

MODEL = models.get_preset("tiny")
P, M, N = 12, 10, 4


@pytest.fixture(scope="module")
def params():
    return models.init_params(MODEL, jax.random.key(0))


def sample_rows(params, *, temperature, top_p=1.0, top_k=0):
    """Sampled rows as the GRPO job builds them (rollout.train_rows), with rollout_logp."""
    rng = np.random.default_rng(0)
    ids = rng.integers(3, MODEL.vocab_size, (2, P)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, :3] = 0  # a left-padded prompt
    out = sampling.generate(
        MODEL, params, ids, mask, max_new_tokens=M, temperature=temperature, top_p=top_p,
        top_k=top_k, num_samples=N, eos_ids=(1,), pad_id=0, rng=jax.random.key(1), buckets=(P,),
    )  # fmt: skip
    tokens, lengths, logps = (np.asarray(x) for x in (out.tokens, out.lengths, out.logprobs))
    return rollout.train_rows(ids, mask, tokens, lengths, N, logps)


def trainer_logp(params, rows, temperature):
    cfg = grpo_step.StepConfig(model=MODEL, response_len=M, temperature=temperature)
    return np.asarray(jax.jit(lambda p, b: grpo_step.compute_logprobs(p, b, cfg=cfg))(params, rows))


@pytest.mark.parametrize("temperature,top_p,top_k", [(0.7, 1.0, 0), (0.7, 0.9, 0), (1.3, 0.8, 20)])
def test_sampler_and_trainer_log_probs_agree(params, temperature, top_p, top_k):
    rows = sample_rows(params, temperature=temperature, top_p=top_p, top_k=top_k)
    resp = rows["response_mask"] > 0
    assert resp.sum() > 20
    got = trainer_logp(params, rows, temperature)
    np.testing.assert_allclose(got[resp], rows["rollout_logp"][resp], atol=2e-5)
    # The metric the GRPO job logs (rollout/logprob_mismatch) is ~0; the untempered trainer's
    # log-probs (the bug this guards) are far off.
    _, aux = grpo.policy_loss(
        got, got, None, np.zeros(len(got), np.float32), resp, kl_coef=0.0,
        rollout_logp=rows["rollout_logp"],
    )  # fmt: skip
    assert float(aux["mismatch_abs"]) < 1e-4 and abs(float(aux["mismatch_kl"])) < 1e-6
    untempered = trainer_logp(params, rows, 1.0)
    assert np.mean(np.abs(untempered[resp] - rows["rollout_logp"][resp])) > 0.01  # 500x tol


def test_greedy_records_temperature_one_log_probs(params):
    rows = sample_rows(params, temperature=0.0)
    resp = rows["response_mask"] > 0
    np.testing.assert_allclose(trainer_logp(params, rows, 1.0)[resp], rows["rollout_logp"][resp],
                               atol=2e-5)  # fmt: skip


def test_tis_weights_need_the_sampler_log_probs():
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match="tis_cap needs rollout_logp"):
        grpo.policy_loss(x, x, None, np.zeros(2, np.float32), x + 1, kl_coef=0.0, tis_cap=2.0)
