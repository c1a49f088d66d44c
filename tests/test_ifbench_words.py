"""IFBench's `words:` checks: verdicts on responses built from the kwargs of the shipped prompts,
and the edge cases where the reference's semantics needed a decision
(ifrl_jax/verifiers/ifbench/SEMANTICS_words.md)."""

import hashlib
import json
import random
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ifrl_jax.verifiers import check_spec, nlp, verify
from ifrl_jax.verifiers.ifbench import words, words2

REPO = Path(__file__).resolve().parents[1]
PROMPTS = REPO / "ifrl_jax" / "assets" / "ifbench" / "IFBench_test.jsonl"
IDS = sorted(words.CHECKS)


def _kwargs_in_data() -> dict[str, list[dict]]:
    """words id -> the kwargs of its prompts in the shipped IFBench file, nulls dropped."""
    out: dict[str, list[dict]] = {}
    with open(PROMPTS, encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            for cid, kw in zip(rec["instruction_id_list"], rec["kwargs"]):
                if cid.startswith("words:"):
                    out.setdefault(cid, []).append({k: v for k, v in kw.items() if v is not None})
    return out


DATA = _kwargs_in_data()


def check(cid: str, text: str, kw: dict | None = None) -> bool:
    """Runs `cid` as the verifier stage does: kwargs through `check_spec`, then the check."""
    return words.CHECKS[cid](text, check_spec(cid, kw or {}))


def _sentences_with_keyword(n: int, m: int, keyword: str) -> str:
    """n sentences; the n-th has `keyword` as its m-th word, the others never."""
    filler = ["alpha", "bravo", "charlie", "delta", "echo"]
    sents = []
    for i in range(1, n + 1):
        ws = [filler[j % 5] for j in range(m + 3)]
        if i == n:
            ws[m - 1] = keyword
        sents.append(" ".join(ws).capitalize() + ".")
    return " ".join(sents)


def _cases(cid: str, kw: dict) -> tuple[list[str], list[str]]:
    """(responses that follow `cid` with `kw`, responses that do not)."""
    if cid == "words:alphabet":
        return (
            ["Xylophones yield zesty, amazing beats!", "apple banana cherry"],
            ["Apples bring delight.", "Apples bring cheer 4 days", "3 big cats"],
        )
    if cid == "words:vowel":
        return (
            ["Bob sat at a table.", "Cats can nap on mats all day\n"],
            [
                "Quiet evenings are lovely.",
                "Bob sat at a tiny table.",
                "Bob sat.\nBob ran.",
            ],
        )
    if cid == "words:consonants":
        return (
            ["Strong friends bring blessings.", "Rhythm gym by my sly fry"],
            [
                "Strong friends, a bond.",
                "I am ok",
            ],
        )
    if cid == "words:keywords_specific_position":
        n, m, keyword = kw["n"], kw["m"], kw["keyword"]
        return (
            [
                _sentences_with_keyword(n, m, keyword),
                _sentences_with_keyword(n, m, keyword.upper()),
            ],
            [
                _sentences_with_keyword(n, m + 1, keyword),
                _sentences_with_keyword(n - 1, m, keyword),
                _sentences_with_keyword(n, m, keyword + "s"),
            ],
        )
    if cid == "words:last_first":
        return (
            ["The cat sat on the mat. Mat is soft and warm! Warm days are best.", "One."],
            [
                "The cat sat. Dogs ran.",
                "We reached the end. End, then we rested.",
            ],
        )
    if cid == "words:no_consecutive":
        return (["The cat sat on my lap.", "A big cat dozed."], ["The tall cat.", "A cat, can it?"])
    if cid == "words:odd_even_syllables":
        return (["Cat apple dog tiger sun river.", "the apple"], ["Cat dog.", "apple tiger"])
    if cid == "words:palindrome":
        ten = "level racecar madam refer stats kayak rotor civic radar level"
        return ([ten, f"We saw: {ten.replace(' ', ', ')}!"], [ten.rsplit(" ", 1)[0], "noon " * 12])
    if cid == "words:paragraph_last_first":
        return (
            ["Love is all you need, love.\nHope keeps us going, hope!", "Hello\n\n---\nhi"],
            [
                "Love is all.\nHope keeps.",
                "Hello, world hello",
            ],
        )
    if cid == "words:prime_lengths":
        return (["We are at the zoo.", "It is so hot!"], ["I am here.", "We are all here."])
    if cid == "words:repeats":
        n = kw["small_n"]
        ok = " ".join(["The cat"] * int(n)) + "."
        return ([ok, "All different words here."], [" ".join(["the", "THE"] * int(n)) + " the."])
    if cid == "words:start_verb":
        return (
            ["Write a poem about the sea.", "Imagine a world without war."],
            [
                "The sea is calm.",
                "Here is my answer.",
            ],
        )
    if cid == "words:words_position":
        k = kw["keyword"]
        return (
            [f"A {k} day, truly {k} indeed.", f"A {k} day is {k} now", f"a {k.upper()} {k} b!"],
            [f"The {k} sky is blue.", f"The sky is {k} now.", f"{k}"],
        )
    raise AssertionError(f"no cases for {cid}")


def test_registry_matches_the_data():
    assert sorted(DATA) == IDS == sorted(words.SPECS)
    assert len(IDS) == 13
    for cid, kws in DATA.items():
        for kw in kws:
            assert set(kw) == set(words.SPECS[cid]), (cid, kw)


@pytest.mark.parametrize("cid", IDS)
def test_satisfying_and_violating_responses(cid):
    for kw in DATA[cid]:
        good, bad = _cases(cid, check_spec(cid, kw))
        for text in good:
            assert check(cid, text, kw), (cid, kw, text)
            assert verify(f"ifbench/{cid}", kw, text), (cid, kw, text)
        for text in bad:
            assert not check(cid, text, kw), (cid, kw, text)
            assert not verify(f"ifbench/{cid}", kw, text), (cid, kw, text)


@pytest.mark.parametrize("cid", IDS)
def test_blank_response_fails(cid):
    kw = DATA[cid][0]
    for text in ("", " ", "\n\t \n"):
        assert not check(cid, text, kw)


# --- decisions (SEMANTICS_words.md) ----------------------------------------------------------


def test_ascii_punctuation_is_deleted_inside_words():
    # "X-ray" is one word "Xray"; "don't" is "dont" (4 letters, not prime); "—" is a word.
    assert check("words:alphabet", "Wild X-ray yields")
    assert not check("words:prime_lengths", "We don't")
    assert check("words:prime_lengths", "It's so")  # "Its" has 3
    assert not check("words:alphabet", "Apples — bring")
    assert not check("words:repeats", "don't dont", {"small_n": 1})


def test_alphabet_edges():
    assert check("words:alphabet", "Zebras are brave.")  # z loops to a
    assert not check("words:alphabet", "Éclairs fill gaps")  # first letter not a-z
    assert not check("words:alphabet", "...")  # no words left


def test_vowel_counts_only_aeiou():
    assert check("words:vowel", "Myrrh, crypt, and gym: syzygy rhythms at noon.")  # y is not one
    assert check("words:vowel", "Café épée à la mode")  # é, à are not a/e
    assert not check("words:vowel", "Bob sat.\r\nBob ran.")


def test_consonant_cluster_quirks():
    assert check("words:consonants", "my gym")  # "y" is a consonant
    assert not check("words:consonants", "strong 2024")  # no letters, no cluster
    assert check("words:consonants", "Strength, rhythms!")  # punctuation stays in the word


def test_palindromes_repeat_and_may_be_numbers():
    assert check("words:palindrome", "level " * 10)
    assert check("words:palindrome", "12321 " * 10)
    assert not check("words:palindrome", "Was it a car or a cat I saw " * 5)  # phrases don't count


def test_prime_lengths_stop_at_97():
    assert check("words:prime_lengths", "ab " + "x" * 97)
    assert not check("words:prime_lengths", "ab " + "x" * 101)  # 101 is prime, but not listed


def test_no_consecutive_compares_any_first_character():
    assert not check("words:no_consecutive", "Item 1 10 cats")
    assert not check("words:no_consecutive", '"Apples" are tasty')  # quotes are deleted
    assert check("words:no_consecutive", "It's  a cat")  # "its", "a", "cat"


def test_odd_even_syllables_numbers_are_even():
    assert check("words:odd_even_syllables", "cat 42 dog")  # 1, 0, 1
    assert not check("words:odd_even_syllables", "apple 42")  # 2, 0


def test_paragraph_last_first_edges():
    assert check("words:paragraph_last_first", "# Title\nGo now, go")  # one-word line passes
    assert not check("words:paragraph_last_first", "Go now, go.\nStop, now stop,")
    assert not check("words:paragraph_last_first", '"Wait," I said, "wait."')  # 'wait,"'


def test_last_first_sentence_edges():
    assert not check("words:last_first", "It ended. Ended, it was.")  # "Ended," != "ended"
    assert check("words:last_first", '"Run to the end." "End it."')  # quotes stripped at ends
    assert not check("words:last_first", "Go home. ...")  # a sentence with no words fails


def test_keywords_specific_position_edges():
    # nltk tokens: "don't" is "do" + "n't", both words; standalone punctuation is not.
    assert check("words:keywords_specific_position", "I don't giggle.", kw("giggle", 1, 4))
    assert check("words:keywords_specific_position", "Well , then giggle.", kw("giggle", 1, 3))
    assert check("words:keywords_specific_position", "A cat sat. The giggle.", kw("giggle", 2, 2))
    assert not check(
        "words:keywords_specific_position", "A cat sat. The giggle.", kw("giggle", 3, 2)
    )
    # 0 is a kwarg the reference replaces by a random position; we never pass it.
    assert not check("words:keywords_specific_position", "giggle giggle.", kw("giggle", 0, 1))
    assert not check("words:keywords_specific_position", "giggle giggle.", kw("giggle", 1, 0))


def kw(keyword: str, n: int, m: int) -> dict:
    return {"keyword": keyword, "n": n, "m": m}


def test_words_position_punctuation_is_a_substring_test():
    k = {"keyword": "vibrant"}
    # "." is punctuation: the 3rd-to-last token is checked.
    assert check("words:words_position", "A vibrant day, vibrant sun.", k)
    # "..." is not a substring of string.punctuation: the 2nd-to-last token ("vibrant") is.
    assert check("words:words_position", "A vibrant day, so vibrant ...", k)
    assert not check("words:words_position", "A vibrant day, vibrant sun ...", k)
    # A closing quote is the token "''", also not punctuation: the "." before it is checked.
    assert not check("words:words_position", 'A vibrant day, "vibrant sun."', k)
    # Long texts: only the first and last sentences are tokenized, with the same verdicts.
    middle = " ".join(["Filler sentence here."] * 20)
    assert check("words:words_position", f"A vibrant start. {middle} End vibrant sun.", k)
    assert not check("words:words_position", f"A vibrant start. {middle} End vibrant.", k)


def test_start_verb_pinned_tags():
    # The shipped perceptron, like nltk's, reads many capitalised imperatives as proper nouns.
    expected = {
        "Write a poem.": "VB",
        "Imagine a world where cats rule.": "VB",
        "Let's go.": "VB",
        "Run fast!": "NNP",
        "The cat sat.": "DT",
        '"Go now," she said.': "``",
        "1999 was great.": "CD",
        "Is it true?": "VBZ",
        "Going home now.": "VBG",
    }
    for text, tag in expected.items():
        assert words2.first_token_tag(words2.word_tokenize(text)) == tag, text
        assert check("words:start_verb", text) == ("VB" in tag), text
    assert words2.word_tokenize("Go. Now") == ["Go", ".", "Now"]


def test_tagger_asset_is_the_documented_one():
    digest = hashlib.sha256(words2.TAGGER_PATH.read_bytes()).hexdigest()
    assert digest == "85a3cf5f638c74294d029fedd5aaf2e192787e330c1aa7a7575b7eb1a3517afc"
    classes, tagdict, weights = words2._tagger()
    assert len(classes) == 45 and "VB" in classes and len(tagdict) == 2604
    assert len(weights) == 36777 and tagdict["ensure"] == "VB"


# --- robustness ------------------------------------------------------------------------------


_KW = {cid: DATA[cid][0] for cid in IDS}


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=300))
def test_never_raises_on_any_text(text):
    for cid in IDS:
        assert check(cid, text, _KW[cid]) in (True, False)


def test_fast_on_100kb():
    nlp.sentence_tokenizer()
    words2._tagger()
    rng = random.Random(0)
    texts = [
        " ".join(
            rng.choice(["level", "Cat", "don't", "X-ray", "giggle", "."]) for _ in range(20_000)
        ),
        "".join(chr(rng.randrange(0x20, 0x3000)) for _ in range(100_000)),
        "word " * 20_000,
        "!?.,;" * 20_000,
    ]
    for text in texts:
        for cid in IDS:
            start = time.perf_counter()
            check(cid, text, _KW[cid])
            assert time.perf_counter() - start < 1.0, cid
