"""Hand-written fast paths with custom VJPs: the CPU dense layer and the chunked log-prob head.

Einsum letters as in `qwen2.py`: B batch, T length, c positions per chunk, D model dim, V vocab.

Both are exact rewrites of what autodiff computes (tests compare them with autodiff); they exist
only to lay the backward pass out so that XLA:CPU does not copy a large operand first, and (for
the head) so that the [B, T, V] logits never exist at once.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

# --- dense ------------------------------------------------------------------------------------


def dense(x: jax.Array, kernel: jax.Array, in_ndim: int) -> jax.Array:
    """x [..., *in] @ kernel [*in, *out], contracting the last `in_ndim` dims of x."""
    contract = (tuple(range(x.ndim - in_ndim, x.ndim)), tuple(range(in_ndim)))
    return jax.lax.dot_general(x, kernel, (contract, ((), ())))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def dense_cpu(x: jax.Array, kernel: jax.Array, in_ndim: int) -> jax.Array:
    """`dense` with a weight gradient laid out for XLA:CPU.

    Autodiff's weight gradient x^T g contracts the token axes of both operands, and XLA:CPU
    copies the larger one, g ([tokens, 4864] for the MLP), to a transposed layout first. Here
    x (the smaller one) is transposed explicitly and kept so by an optimization barrier, making
    the gradient a plain [*in, tokens] x [tokens, *out] GEMM. Measured on 4 layers of the 0.5B
    shape (1024 tokens): layers fwd+bwd 1.57 -> 1.33 s. Only on CPU: GPU/TPU GEMMs take
    transposed operands natively, and remat policies there must see the forward dot.
    """
    return dense(x, kernel, in_ndim)


def _dense_cpu_fwd(x, kernel, in_ndim):
    return dense(x, kernel, in_ndim), (x, kernel)


def _dense_cpu_bwd(in_ndim, res, g):
    x, kernel = res
    lead = x.ndim - in_ndim  # the token axes
    dx = jax.lax.dot_general(
        g, kernel, ((tuple(range(lead, g.ndim)), tuple(range(in_ndim, kernel.ndim))), ((), ()))
    )
    xt = jnp.transpose(x, tuple(range(lead, x.ndim)) + tuple(range(lead)))  # [*in, *tokens]
    xt = jax.lax.optimization_barrier(xt)  # else XLA folds the transpose back into the dot
    dk = jax.lax.dot_general(xt, g, ((tuple(range(in_ndim, x.ndim)), tuple(range(lead))), ((), ())))
    return dx.astype(x.dtype), dk.astype(kernel.dtype)


dense_cpu.defvjp(_dense_cpu_fwd, _dense_cpu_bwd)


# --- chunked log-prob head --------------------------------------------------------------------


def _head_spec(tied: bool) -> tuple[str, str]:
    """Einsum specs (h x w -> logits, dz x w -> dh) for w as [V, D] (tied) or [D, V]."""
    return ("btd,vd->btv", "btv,vd->btd") if tied else ("btd,dv->btv", "btv,dv->btd")


def _head_chunk(h, w, y, tied, with_entropy):
    """One chunk's logits z [B, c, V], softmax p [B, c, V], logsumexp, log p(y) and entropy (0
    unless with_entropy), fp32."""
    z = jnp.einsum(_head_spec(tied)[0], h, w, preferred_element_type=jnp.float32)  # [B, c, V]
    m = jax.lax.stop_gradient(jnp.max(z, axis=-1))  # lse does not depend on the shift
    e = jnp.exp(z - m[..., None])
    s = jnp.sum(e, axis=-1)
    lse = m + jnp.log(s)
    logp = jnp.take_along_axis(z, y[..., None], axis=-1)[..., 0] - lse
    ent = lse - jnp.sum(e * z, axis=-1) / s if with_entropy else jnp.zeros_like(logp)
    return z, e / s[..., None], lse, logp, ent


def _head_chunk_grads(h, w, y, z, p, lse, ent, g_logp, g_ent, tied, with_entropy):
    """One chunk's (dh, dw) from its logits and softmax: d logp / dz = onehot(y) - p and
    d ent / dz = -p (log p + ent); dh = dz w^T and dw = h^T dz in the head's own layout."""
    onehot = jax.lax.broadcasted_iota(jnp.int32, p.shape, 2) == y[..., None]
    dz = g_logp[..., None] * (onehot - p)
    if with_entropy:
        dz = dz - g_ent[..., None] * p * (z - lse[..., None] + ent[..., None])
    dz = dz.astype(w.dtype)
    dh = jnp.einsum(_head_spec(tied)[1], dz, w, preferred_element_type=jnp.float32)
    # h^T dz is written [D, V] and, for a tied [V, D] head, transposed: XLA folds that transpose
    # into one dot with dz's token axis as the contracted one. Written "btd,btv->vd", XLA:CPU
    # first copied dz to [V, B*c] (218 ms per 0.6 GB) and ran the dot slower (forward.py).
    hw, dzw = h, dz
    if tied and h.dtype != jnp.float32 and jax.default_backend() == "cpu":
        # XLA:CPU folds the transpose below into a dot whose runtime has no bf16 x bf16 -> f32
        # kernel ("Unsupported element type for DotThunk"): run that one dot in float32.
        hw, dzw = h.astype(jnp.float32), dz.astype(jnp.float32)
    dw = jnp.einsum("btd,btv->dv", hw, dzw, preferred_element_type=jnp.float32)
    return dh.astype(h.dtype), dw.T if tied else dw


def _split(a, n):  # [B, n*c, ...] -> [n, B, c, ...]
    return a.reshape(a.shape[0], n, a.shape[1] // n, *a.shape[2:]).swapaxes(0, 1)


def _merge(a):  # [n, B, c, ...] -> [B, n*c, ...]
    return a.swapaxes(0, 1).reshape(a.shape[1], -1, *a.shape[3:])


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def chunked_head_logprobs(
    h: jax.Array, w: jax.Array, y: jax.Array, n: int, tied: bool, with_entropy: bool
) -> tuple[jax.Array, jax.Array]:
    """(log p(y) [B, T], entropy [B, T]) of softmax(h @ head), fp32, T in n equal chunks.

    Args:
      h: [B, T, D] hidden states, T a multiple of n; w: the head, [V, D] when tied else [D, V];
      y: [B, T] target ids; with_entropy: else the entropy is zeros.
    The backward pass (`_chunked_head_bwd`) is written out: per chunk dz = g (onehot - softmax)
    (+ the entropy term), then dh and the head's gradient. One chunk keeps its softmax (and,
    with entropy, its logits) for the backward pass; more chunks keep only logsumexp per
    position and recompute each chunk's logits.
    """
    return _chunked_head_fwd(h, w, y, n, tied, with_entropy)[0]


def _chunked_head_fwd(h, w, y, n, tied, with_entropy):
    if n == 1:  # one chunk: logits and softmax are kept for the backward (no second head matmul)
        z, p, lse, logp, ent = _head_chunk(h, w, y, tied, with_entropy)
        return (logp, ent), (h, w, y, lse, ent, (z if with_entropy else None, p))

    def body(_, hy):
        return None, _head_chunk(hy[0], w, hy[1], tied, with_entropy)[2:]

    _, (lse, logp, ent) = jax.lax.scan(body, None, (_split(h, n), _split(y, n)))
    logp, ent, lse = _merge(logp), _merge(ent), _merge(lse)
    return (logp, ent), (h, w, y, lse, ent, None)


def _chunked_head_bwd(n, tied, with_entropy, res, g):
    """Per chunk (logits recomputed when n > 1): `_head_chunk_grads`, dw summed over chunks."""
    h, w, y, lse, ent, kept = res
    if kept is not None:
        dh, dw = _head_chunk_grads(h, w, y, *kept, lse, ent, *g, tied, with_entropy)
        return dh, dw.astype(w.dtype), None

    def body(dw, xs):
        hc, yc, lc, ec, glc, gec = xs
        zc = jnp.einsum(_head_spec(tied)[0], hc, w, preferred_element_type=jnp.float32)
        pc = jnp.exp(zc - lc[..., None])
        dh, dwc = _head_chunk_grads(hc, w, yc, zc, pc, lc, ec, glc, gec, tied, with_entropy)
        return dw + dwc, dh

    xs = tuple(_split(a, n) for a in (h, y, lse, ent, *g))
    dw, dh = jax.lax.scan(body, jnp.zeros(w.shape, jnp.float32), xs)
    return _merge(dh), dw.astype(w.dtype), None


chunked_head_logprobs.defvjp(_chunked_head_fwd, _chunked_head_bwd)
