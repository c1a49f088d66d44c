"""Random tiny transformers Qwen2 checkpoints saved with save_pretrained, for parity tests."""

from __future__ import annotations

import numpy as np
import torch
import transformers


def tiny_hf_config(*, tied: bool, num_labels: int = 0, **kw) -> transformers.Qwen2Config:
    base = dict(
        vocab_size=256,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        rope_theta=10000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=tied,
        attn_implementation="eager",
    )
    if num_labels:
        base.update(num_labels=num_labels, pad_token_id=0)
    base.update(kw)
    return transformers.Qwen2Config(**base)


def random_hf_model(config, *, seed: int = 0, classifier: bool = False):
    """A Qwen2 model whose every weight (biases and norm scales too) is random and non-trivial."""
    torch.manual_seed(seed)
    cls = (
        transformers.Qwen2ForSequenceClassification if classifier else transformers.Qwen2ForCausalLM
    )
    model = cls(config).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.05 * torch.randn(p.shape, generator=gen))
    return model


def left_padded_batch(vocab: int, lengths: list[int], *, seed: int = 0):
    """(input_ids, attention_mask, position_ids) numpy int arrays, rows left-padded with id 0."""
    rng = np.random.default_rng(seed)
    t = max(lengths)
    ids = np.zeros((len(lengths), t), np.int64)
    mask = np.zeros((len(lengths), t), np.int64)
    for i, n in enumerate(lengths):
        ids[i, t - n :] = rng.integers(1, vocab, n)
        mask[i, t - n :] = 1
    pos = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
    return ids, mask, pos


def hf_logits(model, ids, mask, pos) -> np.ndarray:
    with torch.no_grad():
        out = model(
            input_ids=torch.tensor(ids),
            attention_mask=torch.tensor(mask),
            position_ids=torch.tensor(pos),
            output_hidden_states=True,
        )
    return out.logits.float().numpy(), [h.float().numpy() for h in out.hidden_states]
