"""Load-time validation of constraint specs (`check_spec`) and the id registry."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ifrl_jax.verifiers import HARD_IDS, SpecError, check_spec, is_hard, is_soft

SHARED = Path(__file__).resolve().parents[2] / "shared" / "upstream-verl-if-data"
WHERE = "data.jsonl:17: instruction_id_list[2]"


def test_registry():
    assert len(HARD_IDS) == 25
    assert is_hard("punctuation:no_comma") and not is_hard("style:open_ended")
    for cid in ["style:open_ended", "situation:role_play", "soft_content:language", "soft"]:
        assert is_soft(cid) and not is_hard(cid)
    for cid in ["punctuation:no_comma", "keywords:key_sentences", "software:x", "", 3]:
        assert not is_soft(cid)


def test_normalises_kwargs():
    kw = {"num_words": 300.0, "relation": "at least", "num_highlights": None}
    assert check_spec("length_constraints:number_words", kw) == {
        "num_words": 300,
        "relation": "at least",
    }
    assert check_spec("punctuation:no_comma", None) == {}
    assert check_spec("style:open_ended", {"a": None, "b": 1}) == {"b": 1}
    # IFEval's own data has letters "#" and "!", accepted.
    kw = {"letter": "#", "let_frequency": 4, "let_relation": "at least"}
    assert check_spec("keywords:letter_frequency", kw) == kw


@pytest.mark.parametrize(
    "cid,kwargs,field",
    [
        ("keywords:nonexistent", {}, "unknown instruction id"),
        ("detectable_format:title", [], "kwargs must be a dict"),
        ("length_constraints:number_words", {"relation": "at least"}, "'num_words'"),
        (
            "length_constraints:number_words",
            {"num_words": "300", "relation": "at least"},
            "'num_words' must be an integer",
        ),
        (
            "length_constraints:number_words",
            {"num_words": True, "relation": "at least"},
            "'num_words' must be an integer",
        ),
        (
            "length_constraints:number_words",
            {"num_words": 0, "relation": "at least"},
            "'num_words' must be >= 1",
        ),
        ("length_constraints:number_words", {"num_words": 3, "relation": "at most"}, "'relation'"),
        ("keywords:existence", {"keywords": []}, "'keywords' is empty"),
        ("keywords:existence", {"keywords": "cat"}, "'keywords' must be a list"),
        ("keywords:existence", {"keywords": ["(oops"]}, "not a valid regular expression"),
        ("keywords:forbidden_words", {"forbidden_words": ["a)b"]}, "'forbidden_words'"),
        (
            "keywords:letter_frequency",
            {"letter": "ab", "let_frequency": 1, "let_relation": "at least"},
            "'letter' must be a single character",
        ),
        ("combination:repeat_prompt", {"prompt_to_repeat": ""}, "'prompt_to_repeat' is empty"),
        ("detectable_format:title", {"num_highlights": 3}, "unexpected kwarg 'num_highlights'"),
        (
            "length_constraints:nth_paragraph_first_word",
            {"num_paragraphs": 2, "nth_paragraph": 3, "first_word": "a"},
            "'nth_paragraph'",
        ),
        (
            "detectable_format:multiple_sections",
            {"section_spliter": "(", "num_sections": 2},
            "'section_spliter'",
        ),
    ],
)
def test_errors_name_where_and_field(cid, kwargs, field):
    with pytest.raises(SpecError) as e:
        check_spec(cid, kwargs, where=WHERE)
    assert str(e.value).startswith(WHERE + ": ")
    assert field in str(e.value)
    assert isinstance(e.value, ValueError)


@pytest.mark.skipif(not SHARED.exists(), reason=f"reference data not present at {SHARED}")
@pytest.mark.parametrize("name", ["val_set.jsonl", "train_from_parquet.jsonl"])
def test_reference_data_validates(name):
    seen = set()
    with open(SHARED / name, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            rec = json.loads(line)
            for i, (cid, kw) in enumerate(zip(rec["instruction_id_list"], rec["kwargs"])):
                check_spec(cid, kw, where=f"{name}:{n}: instruction_id_list[{i}]")
                seen.add(cid)
    hard = seen & HARD_IDS
    if name == "val_set.jsonl":
        assert hard == HARD_IDS  # IFEval uses all 25
    else:
        assert len(hard) == 22 and all(is_soft(c) for c in seen - hard)
        assert len(seen - hard) == 6


def test_importable_without_jax_or_nltk():
    code = (
        "import sys, ifrl_jax.verifiers as v; v.check_spec('punctuation:no_comma', {}); "
        "assert not {'jax', 'nltk', 'langdetect'} & set(sys.modules), sorted(sys.modules)"
    )
    root = str(Path(__file__).resolve().parents[1])
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root, env={"PYTHONPATH": root})
