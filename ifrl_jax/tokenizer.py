"""Tokenizers and chat templates: prompt text in, left-padded id arrays out, and back to text.

Host-side, plain Python + numpy; nothing here touches JAX. Data flow::

    prompts --apply_chat_template--> chat strings --encode_batch--> ids, mask [B, T] (left-padded)
    sampled ids [B, L] + lengths [B] --decode_batch--> response strings

A checkpoint's tokenizer is loaded from its local directory (``tokenizer.json`` and
``tokenizer_config.json``, as every Qwen2 / Qwen2.5 / DeepSeek-R1-Distill-Qwen checkpoint ships
them); its own chat template renders the prompts. Chat strings already contain the template's
control tokens (``<|im_start|>``, DeepSeek's BOS), so ``encode_batch`` adds no special tokens by
default: a tokenizer whose post-processor prepends BOS (DeepSeek's) would otherwise double it.

Prompt lengths are padded up to a multiple or to one of a few buckets so that the sampler compiles
a handful of programs, not one per batch (``bucket_length``).

``TINY_TOKENIZER_DIR`` is a small byte-level BPE with ChatML shipped for the CPU default job; it is
rebuilt deterministically by ``launch/build_tiny_tokenizer.py`` with ``train_byte_level_bpe``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

TINY_TOKENIZER_DIR = Path(__file__).resolve().parent / "assets" / "tokenizer_tiny"

Truncation = Literal["error", "left", "right"]

# Qwen2's pre-tokenizer split (contractions, letters, single digits, punctuation, newlines).
QWEN_SPLIT_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
    r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Qwen-family end-of-turn and end-of-document tokens: either ends a generation when present.
CHATML_END_TOKENS = ("<|im_end|>", "<|endoftext|>")

# ChatML without a default system prompt: a system turn is rendered only when one is given.
CHATML_TEMPLATE = (
    "{%- for message in messages %}\n"
    "    {{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|im_start|>assistant\\n' }}\n"
    "{%- endif %}\n"
)


@dataclasses.dataclass(frozen=True, eq=False)
class Tokenizer:
    """A loaded Hugging Face tokenizer plus the ids the sampler needs.

    Attributes:
      hf: the ``transformers`` fast tokenizer (chat template, special tokens).
      path: the directory it was loaded from.
      pad_id: id written into padding positions (masked out; any valid id would do).
      eos_ids: ids that end a generation, see ``_eos_ids`` for the rule.
      bos_id: the tokenizer's BOS id, or None (Qwen has none).
      vocab_size: number of token ids, added tokens included (max id + 1). A model's embedding
        may have more rows (151936 for Qwen2.5); ids past ``vocab_size`` decode to nothing.
    """

    hf: Any = dataclasses.field(repr=False)
    path: str
    pad_id: int
    eos_ids: tuple[int, ...]
    bos_id: int | None
    vocab_size: int

    def apply_chat_template(
        self, prompts: Sequence[str], *, system: str | None = None
    ) -> list[str]:
        """Render one user turn per prompt with the checkpoint's template and generation prompt.

        Args:
          prompts: user messages.
          system: an optional system message; None lets the template decide (Qwen2.5-Instruct
            then writes its default system prompt, DeepSeek-R1-Distill writes none).

        Returns:
          One chat string per prompt, ending with the assistant generation prompt.
        """
        if self.hf.chat_template is None:
            raise ValueError(
                f"tokenizer at {self.path} has no chat template (no 'chat_template' in "
                "tokenizer_config.json and no chat_template.jinja); use a chat checkpoint's "
                "tokenizer directory or add the template there."
            )
        _check_batch(prompts)
        head = [] if system is None else [{"role": "system", "content": system}]
        return [
            self.hf.apply_chat_template(
                [*head, {"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
            )
            for p in prompts
        ]

    def encode(self, texts: Sequence[str], *, add_special_tokens: bool = False) -> list[list[int]]:
        """Tokenize texts without padding or truncation (control tokens in the text are kept).

        Args:
          texts: strings, typically chat strings from ``apply_chat_template``.
          add_special_tokens: run the tokenizer's post-processor (e.g. DeepSeek's BOS prefix).

        Returns:
          One list of ids per text.
        """
        _check_batch(texts)
        backend = self.hf.backend_tokenizer
        backend.no_padding()
        backend.no_truncation()
        encodings = backend.encode_batch(list(texts), add_special_tokens=add_special_tokens)
        return [e.ids for e in encodings]

    def encode_batch(
        self,
        texts: Sequence[str],
        *,
        max_len: int | None = None,
        pad_to_multiple: int | None = None,
        buckets: Sequence[int] | None = None,
        truncation: Truncation = "error",
        add_special_tokens: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Tokenize and left-pad a batch; see ``pad_left`` for the length rules.

        Args:
          texts: B strings.
          max_len: longest allowed sequence; longer ones follow ``truncation``.
          pad_to_multiple: round the padded length up to a multiple of this.
          buckets: or pad to the smallest of these lengths that fits.
          truncation: "error" raises on a text longer than ``max_len``; "left" keeps its last
            ``max_len`` tokens (the generation prompt survives); "right" keeps the first.
          add_special_tokens: see ``encode``.

        Returns:
          (input_ids, attention_mask), both int32 [B, T], padding on the left (mask 0).
        """
        seqs = self.encode(texts, add_special_tokens=add_special_tokens)
        return pad_left(
            seqs,
            pad_id=self.pad_id,
            max_len=max_len,
            pad_to_multiple=pad_to_multiple,
            buckets=buckets,
            truncation=truncation,
        )

    def decode_batch(
        self,
        token_ids: np.ndarray | Sequence[Sequence[int]],
        lengths: np.ndarray | Sequence[int] | None = None,
        *,
        skip_special_tokens: bool = True,
    ) -> list[str]:
        """Decode each row up to its length, dropping special tokens.

        Args:
          token_ids: [B, L] ids, valid ids first (the sampler's ``tokens``), or B lists of ids.
          lengths: [B] number of valid ids per row; None decodes whole rows.
          skip_special_tokens: drop tokens marked special (``<|im_end|>``, ``<|endoftext|>``,
            DeepSeek's BOS/EOS); ``<think>``/``</think>`` are not special and stay.

        Returns:
          B strings.
        """
        if isinstance(token_ids, np.ndarray) and token_ids.ndim != 2:
            raise ValueError(f"token_ids must be [B, L], got shape {token_ids.shape}")
        rows = [[int(i) for i in row] for row in token_ids]
        if lengths is not None:
            lengths = np.asarray(lengths)
            if lengths.shape != (len(rows),):
                raise ValueError(f"lengths has shape {lengths.shape}, expected ({len(rows)},)")
            rows = [row[: int(n)] for row, n in zip(rows, lengths)]
        return self.hf.backend_tokenizer.decode_batch(rows, skip_special_tokens=skip_special_tokens)


def _check_batch(texts: Sequence[str]) -> None:
    if isinstance(texts, str):
        raise TypeError("expected a sequence of strings (a batch), got a single str")


def round_up(n: int, multiple: int) -> int:
    """Smallest positive multiple of ``multiple`` that is >= n."""
    if multiple < 1:
        raise ValueError(f"multiple must be >= 1, got {multiple}")
    return max(1, -(-n // multiple)) * multiple


def bucket_length(n: int, buckets: Sequence[int]) -> int:
    """Smallest bucket >= n; raises if n exceeds the largest bucket."""
    fitting = [b for b in buckets if b >= n]
    if not fitting:
        raise ValueError(f"length {n} exceeds the largest bucket {max(buckets, default=None)}")
    return min(fitting)


def pad_left(
    seqs: Sequence[Sequence[int]],
    *,
    pad_id: int,
    max_len: int | None = None,
    pad_to_multiple: int | None = None,
    buckets: Sequence[int] | None = None,
    truncation: Truncation = "error",
) -> tuple[np.ndarray, np.ndarray]:
    """Left-pad id sequences into one array.

    The padded length T is the longest (truncated) sequence, rounded up to ``pad_to_multiple``
    or to the smallest fitting bucket, and capped at ``max_len`` (choose ``max_len`` a multiple,
    or the largest bucket, to keep the set of lengths small).

    Args:
      seqs: B lists of ids.
      pad_id: filler id for padding positions.
      max_len: longest allowed sequence.
      pad_to_multiple: round T up to a multiple of this.
      buckets: or round T up to the smallest bucket that fits (exclusive with pad_to_multiple).
      truncation: "error", "left" (keep the last max_len ids) or "right" (keep the first).

    Returns:
      (input_ids, attention_mask), int32 [B, T]; row b is [pad]*(T - n_b) + ids_b.
    """
    if not seqs:
        raise ValueError("cannot pad an empty batch")
    if pad_to_multiple is not None and buckets is not None:
        raise ValueError("pass pad_to_multiple or buckets, not both")
    if truncation not in ("error", "left", "right"):
        raise ValueError(f"truncation must be 'error', 'left' or 'right', got {truncation!r}")
    seqs = [list(s) for s in seqs]
    if max_len is not None:
        for i, s in enumerate(seqs):
            if len(s) <= max_len:
                continue
            if truncation == "error":
                raise ValueError(
                    f"sequence {i} has {len(s)} tokens, more than max_len={max_len}; raise "
                    "max_len or pass truncation='left'"
                )
            seqs[i] = s[len(s) - max_len :] if truncation == "left" else s[:max_len]
    longest = max(len(s) for s in seqs)
    if pad_to_multiple is not None:
        t = round_up(longest, pad_to_multiple)
    elif buckets is not None:
        t = bucket_length(longest, buckets)
    else:
        t = longest
    if max_len is not None:
        t = min(t, max_len)
    ids = np.full((len(seqs), t), pad_id, dtype=np.int32)
    mask = np.zeros((len(seqs), t), dtype=np.int32)
    for i, s in enumerate(seqs):
        if s:
            ids[i, t - len(s) :] = s
            mask[i, t - len(s) :] = 1
    return ids, mask


def _token_id(hf: Any, token: str) -> int | None:
    return hf.backend_tokenizer.token_to_id(token)


def _generation_config(path: Path) -> dict[str, Any]:
    file = path / "generation_config.json"
    if not file.is_file():
        return {}
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{file} is not valid JSON: {e}") from e


def _as_ids(value: int | list[int] | None) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, list) else [int(value)]


def _eos_ids(hf: Any, gen: dict[str, Any]) -> tuple[int, ...]:
    """End-of-generation ids, in order, without repeats.

    The rule: (1) the tokenizer's ``eos_token`` (tokenizer_config.json); (2) every
    ``eos_token_id`` of generation_config.json when the directory has one (Qwen2.5-Instruct lists
    ``<|im_end|>`` and ``<|endoftext|>`` there); (3) ``<|im_end|>`` and ``<|endoftext|>`` when the
    vocabulary has them, since in the Qwen family either one ends a turn or a document (a base
    checkpoint's eos is ``<|endoftext|>`` yet its ChatML turns end with ``<|im_end|>``). DeepSeek
    R1-Distill has neither string, so its set is its EOS ``<｜end▁of▁sentence｜>`` alone.
    """
    ids = _as_ids(hf.eos_token_id) + _as_ids(gen.get("eos_token_id"))
    ids += [i for t in CHATML_END_TOKENS if (i := _token_id(hf, t)) is not None]
    return tuple(dict.fromkeys(ids))


def load_tokenizer(path: str | os.PathLike[str]) -> Tokenizer:
    """Load a Hugging Face fast tokenizer from a local checkpoint or tokenizer directory.

    Args:
      path: a directory with ``tokenizer.json`` (and normally ``tokenizer_config.json``, which
        carries the chat template and special tokens; ``generation_config.json`` is read for
        EOS ids when present). Never a hub name: nothing is downloaded.

    Returns:
      The ``Tokenizer``.
    """
    directory = Path(path)
    if not directory.is_dir():
        raise FileNotFoundError(
            f"tokenizer directory {str(path)!r} does not exist; pass a local checkpoint directory "
            "(hub names are not downloaded)."
        )
    if not (directory / "tokenizer.json").is_file():
        found = sorted(p.name for p in directory.iterdir())
        raise FileNotFoundError(
            f"{directory} has no tokenizer.json (found: {found}); a fast tokenizer file is "
            "required, e.g. re-save the tokenizer with transformers' save_pretrained."
        )
    from transformers import AutoTokenizer  # Deferred: importing transformers takes seconds.

    hf = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    if getattr(hf, "backend_tokenizer", None) is None:
        raise ValueError(f"{directory} did not load as a fast (tokenizers-backed) tokenizer")
    gen = _generation_config(directory)
    eos_ids = _eos_ids(hf, gen)
    if not eos_ids:
        raise ValueError(f"{directory} defines no eos token (tokenizer_config.json eos_token)")
    pad_id = hf.pad_token_id
    if pad_id is None:
        pad_id = gen.get("pad_token_id", _token_id(hf, "<|endoftext|>"))
    return Tokenizer(
        hf=hf,
        path=str(directory),
        pad_id=int(eos_ids[0] if pad_id is None else pad_id),
        eos_ids=eos_ids,
        bos_id=hf.bos_token_id,
        vocab_size=len(hf),
    )


def train_byte_level_bpe(
    texts: Iterable[str],
    out_dir: str | os.PathLike[str],
    *,
    vocab_size: int,
    chat_template: str = CHATML_TEMPLATE,
) -> Path:
    """Train a Qwen-style byte-level BPE with ChatML special tokens and save it as a tokenizer dir.

    Same pipeline as Qwen's tokenizer.json (NFC, Qwen's split regex, byte-level, no BOS);
    special tokens ``<|endoftext|>`` (pad), ``<|im_start|>``, ``<|im_end|>`` (eos) take ids 0-2.
    Training is deterministic for the same texts in the same order.

    Args:
      texts: training corpus.
      out_dir: directory to write ``tokenizer.json`` and ``tokenizer_config.json`` into.
      vocab_size: total ids, special tokens and the 256 byte symbols included.
      chat_template: Jinja template stored in tokenizer_config.json.

    Returns:
      The directory.
    """
    from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers, trainers
    from tokenizers import Tokenizer as RustTokenizer

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = RustTokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    split = pre_tokenizers.Split(Regex(QWEN_SPLIT_REGEX), behavior="isolated")
    byte_level = dict(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tok.pre_tokenizer = pre_tokenizers.Sequence([split, pre_tokenizers.ByteLevel(**byte_level)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"), pretty=True)
    config = {
        "added_tokens_decoder": {
            str(tok.token_to_id(t)): {
                "content": t,
                "lstrip": False,
                "normalized": False,
                "rstrip": False,
                "single_word": False,
                "special": True,
            }
            for t in specials
        },
        "bos_token": None,
        "chat_template": chat_template,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "model_max_length": 4096,
        "pad_token": "<|endoftext|>",
        "tokenizer_class": "PreTrainedTokenizerFast",
        "unk_token": None,
    }
    text = json.dumps(config, indent=2, ensure_ascii=False) + "\n"
    (out / "tokenizer_config.json").write_text(text, encoding="utf-8")
    return out
