r"""Rebuild the tiny byte-level BPE tokenizer shipped in ifrl_jax/assets/tokenizer_tiny.

Trains on the upstream verl-if data (Apache-2.0): every seed task of seed_data.jsonl
(instruction, input, output, in file order) followed by the distinct constraint texts of
train_from_parquet.jsonl (first-seen order). Same inputs give byte-identical files.

    python launch/build_tiny_tokenizer.py                 # rewrite the shipped asset
    python launch/build_tiny_tokenizer.py --check         # rebuild in a tmp dir and compare

The data lives in ../shared/upstream-verl-if-data beside the repository (pass --data_dir
elsewhere); only this script needs it, the shipped tokenizer does not.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))  # a checkout runs too

import filecmp
import json
import tempfile
from pathlib import Path

from absl import flags

from ifrl_jax import cli
from ifrl_jax import tokenizer as tokenizer_lib
from ifrl_jax.errors import UserError

_DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "upstream-verl-if-data"

_DATA_DIR = flags.DEFINE_string("data_dir", str(_DEFAULT_DATA), "verl-if data directory.")
_OUT_DIR = flags.DEFINE_string("out_dir", str(tokenizer_lib.TINY_TOKENIZER_DIR), "Output dir.")
_VOCAB_SIZE = flags.DEFINE_integer("vocab_size", 2048, "Total ids, specials and bytes included.")
_CHECK = flags.DEFINE_bool("check", False, "Rebuild in a tmp dir; fail if out_dir differs.")

_FILES = ("tokenizer.json", "tokenizer_config.json")


def _corpus(data_dir: Path) -> list[str]:
    if not (data_dir / "seed_data.jsonl").exists():
        raise UserError(f"--data_dir={data_dir}: no seed_data.jsonl (the verl-if data)")
    texts = []
    with open(data_dir / "seed_data.jsonl", encoding="utf-8") as f:
        for line in f:
            record = json.loads(line)
            texts += [record.get(k, "") for k in ("instruction", "input", "output")]
    constraints: dict[str, None] = {}
    with open(data_dir / "train_from_parquet.jsonl", encoding="utf-8") as f:
        for line in f:
            constraints.update(dict.fromkeys(json.loads(line)["constraint"]))
    return texts + list(constraints)


def main() -> None:
    texts = _corpus(Path(_DATA_DIR.value))
    if not _CHECK.value:
        out = tokenizer_lib.train_byte_level_bpe(
            texts, _OUT_DIR.value, vocab_size=_VOCAB_SIZE.value
        )
        print(f"wrote {out} from {len(texts)} texts")
        return
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer_lib.train_byte_level_bpe(texts, tmp, vocab_size=_VOCAB_SIZE.value)
        _, mismatch, errors = filecmp.cmpfiles(tmp, _OUT_DIR.value, _FILES, shallow=False)
    if mismatch or errors:
        raise UserError(f"--out_dir={_OUT_DIR.value} differs from a rebuild: {mismatch + errors}")
    print(f"{_OUT_DIR.value} matches a rebuild")


if __name__ == "__main__":
    cli.run(main, model=False)
