"""The sampler's token distribution: temperature, then top-k, then top-p, as transformers does.

Draws go through the sampler's own `sampling._pick` on a fixed logit vector, jitted and vmapped
over keys; the distribution through `sampling.sampling_probs`, against transformers' warpers.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from ifrl_jax import sampling

# A fixed logit vector with distinct values (no ties at any cut).
LOGITS = np.array([1.5, 1.1, 0.8, 0.5, 0.2, 0.0, -0.3, -0.6, -0.9, -1.3], np.float32)
DRAWS = 20_000
# Upper 0.1% points of chi-square (scipy.stats.chi2.ppf(0.999, dof)) for dof = 1..9.
CHI2_999 = [10.83, 13.82, 16.27, 18.47, 20.52, 22.46, 24.32, 26.12, 27.88]


@functools.partial(jax.jit, static_argnames=("n", "top_k", "use_top_p"))
def _draws(logits, temperature, top_p, *, n, top_k, use_top_p):
    """n tokens drawn by the sampler's own step from one row of logits [V], one key each."""
    keys = jax.random.split(jax.random.key(0), n)
    pick = lambda k: sampling._pick(
        logits[None], k, temperature, top_k=top_k, use_top_p=use_top_p, top_p=top_p
    )[0]
    return jax.vmap(pick)(keys)


def _frequencies(temperature, *, top_k=0, top_p=1.0):
    toks = _draws(
        jnp.asarray(LOGITS), jnp.float32(temperature), jnp.float32(top_p), n=DRAWS,
        top_k=top_k, use_top_p=top_p < 1.0,
    )  # fmt: skip
    return np.bincount(np.asarray(toks), minlength=len(LOGITS))


def _assert_chi2(counts, probs):
    """Pearson's chi-square of the counts against probs, on the tokens of non-zero probability
    (each expects > 20 draws here), below the 0.1% point; none drawn outside them."""
    support = probs > 0
    assert counts[~support].sum() == 0, counts
    expected = DRAWS * probs[support]
    assert expected.min() > 20
    stat = float((((counts[support] - expected) ** 2) / expected).sum())
    assert stat < CHI2_999[support.sum() - 2], (stat, counts, expected.round())


def _softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()


@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_draws_follow_the_tempered_softmax(temperature):
    """20,000 draws at temperature T match softmax(logits / T) (chi-square, fixed seed); at
    either T the untempered softmax is far off (a sampler ignoring T fails)."""
    counts = _frequencies(temperature)
    _assert_chi2(counts, _softmax(LOGITS.astype(np.float64) / temperature))
    with pytest.raises(AssertionError):
        _assert_chi2(counts, _softmax(LOGITS.astype(np.float64)))


def _transformers_probs(temperature, top_k, top_p):
    """transformers' generate order: Temperature, TopK, TopP warpers, then softmax."""
    warpers = [transformers.TemperatureLogitsWarper(temperature)]
    if top_k:
        warpers.append(transformers.TopKLogitsWarper(top_k))
    if top_p < 1.0:
        warpers.append(transformers.TopPLogitsWarper(top_p))
    scores = torch.tensor(LOGITS[None], dtype=torch.float64)
    for w in warpers:
        scores = w(None, scores)
    return torch.softmax(scores, -1)[0].numpy()


# Kept sets: T = 0.5, top-p 0.8: 3 tokens (5 cut from the untempered softmax); T = 2: 7 (not
# 5); T = 2, top-k 6, top-p 0.7: 4 (not 3). Top-k alone keeps the same set at any T.
CASES = [
    dict(temperature=0.5, top_k=0, top_p=0.8),
    dict(temperature=2.0, top_k=0, top_p=0.8),
    dict(temperature=0.7, top_k=4, top_p=1.0),
    dict(temperature=2.0, top_k=6, top_p=0.7),
]


@pytest.mark.parametrize(
    "case", CASES, ids=lambda c: "T{temperature}-k{top_k}-p{top_p}".format(**c)
)
def test_top_k_top_p_after_temperature_match_transformers(case):
    """The kept set and the renormalized probabilities equal transformers' warpers applied to
    the same logits; and the sampler's draws follow them."""
    ref = _transformers_probs(**case)
    ours = np.asarray(sampling.sampling_probs(jnp.asarray(LOGITS[None]), **case))[0]
    np.testing.assert_array_equal(ours > 0, ref > 0)
    np.testing.assert_allclose(ours, ref, atol=1e-6)
    _assert_chi2(_frequencies(**case), ref)
