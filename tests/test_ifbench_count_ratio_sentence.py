"""IFBench's `count:`, `ratio:` and `sentence:` checks: verdicts on responses built for the
kwargs of the shipped prompts, and the edge cases where the reference's semantics needed a
decision (ifbench/SEMANTICS_count_ratio_sentence.md)."""

import json
import random
import re
import string
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ifrl_jax.verifiers import check_spec, nlp, verify
from ifrl_jax.verifiers.ifbench import count, ratio, sentence

REPO = Path(__file__).resolve().parents[1]
PROMPTS = REPO / "ifrl_jax" / "assets" / "ifbench" / "IFBench_test.jsonl"
CHECKS = {**count.CHECKS, **ratio.CHECKS, **sentence.CHECKS}
IDS = sorted(CHECKS)
CONJ = ["and", "but", "for", "nor", "or", "so", "yet"]
NAMES = "Emma Liam Sophia Jackson Olivia Noah Ava Lucas Isabella Mason Mia Ethan".split()
NAMES += "Charlotte Alexander Amelia Benjamin Harper Leo Zoe Daniel Chloe Samuel Lily".split()
NAMES += "Matthew Grace Owen Abigail Gabriel Ella Jacob Scarlett Nathan Victoria Elijah".split()
NAMES += "Layla Nicholas Audrey David Hannah Christopher Penelope Thomas Nora Andrew".split()
NAMES += "Aria Joseph Claire Ryan Stella Jonathan".split()
PRONOUNS = ["I", "you", "she", "they", "it", "we", "them", "this"]


def _kwargs_in_data() -> dict[str, list[dict]]:
    """id -> the kwargs of its prompts in the shipped IFBench file, nulls dropped."""
    out: dict[str, list[dict]] = {}
    with open(PROMPTS, encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            for cid, kw in zip(rec["instruction_id_list"], rec["kwargs"]):
                if cid in CHECKS:
                    out.setdefault(cid, []).append({k: v for k, v in kw.items() if v is not None})
    return out


DATA = _kwargs_in_data()
CASES = [(cid, i, kw) for cid in IDS for i, kw in enumerate(DATA[cid])]


def _check(cid: str, text: str, kw: dict) -> bool:
    return CHECKS[cid](text, check_spec(cid, kw))


def _trigrams(text: str) -> set[str]:
    return {text[i : i + 3] for i in range(len(text) - 2)}


def _novel(m: int) -> str:
    """m distinct supplementary private-use characters (in no reference text)."""
    return "".join(chr(0xF0000 + i) for i in range(m))


def _with_overlap(ref: str, pct: float) -> str:
    """The reference followed by novel characters: distinct trigrams shared ~= pct percent."""
    if pct <= 0:
        return _novel(10)
    a = len(_trigrams(ref))
    m = max(0, round(a * (100 - pct) / pct))
    return ref + _novel(m)


def _stop_text(stop: int, total: int) -> str:
    return " ".join(["the"] * stop + ["cat"] * (total - stop)) + "."


def _sentences_with(counts: list[int]) -> str:
    return " ".join(" ".join(["Word"] + ["word"] * (c - 1)) + "." for c in counts)


def _keyword_text(word: str, where: int, total: int) -> str:
    """`total` sentences; sentence `where` (1-based, 0 = none) holds `word`."""
    out = [f"Line {i} is here." if i != where else f"Here {word} is." for i in range(1, total + 1)]
    return " ".join(out)


def _japanese(n: int, last_ok: bool) -> str:
    words = ["日本" if (i + 1) % n == 0 else "word" for i in range(3 * n)]
    if not last_ok:
        words[3 * n - 1] = "English"
    return " ".join(words)


def _good_bad(cid: str, kw: dict) -> tuple[str, str]:
    """A response that follows the instruction and one that does not."""
    n = kw.get("N", kw.get("small_n"))
    if cid == "count:conjunctions":
        good = "Cats " + " ".join(f"{c} dogs" for c in CONJ[:n]) + "."
        return good, "Cats " + " ".join(f"{c} dogs" for c in CONJ[: n - 1] * 3) + "."
    if cid == "count:keywords_multiple":
        words = [kw[f"keyword{i}"] for i in range(1, 6)]
        reps = [1, 2, 3, 5, 7]
        good = " ".join(w for w, r in zip(words, reps) for _ in range(r)) + "."
        return good, good + " " + words[4] + "."
    if cid == "count:numbers":
        nums = [str(7 * i + 1) for i in range(n + 1)]
        return "Values: " + ", ".join(nums[:n]) + ".", "Values: " + ", ".join(nums) + "."
    if cid == "count:person_names":
        return " and ".join(NAMES[:n]) + " met.", " and ".join(NAMES[: n - 1] * 2) + " met."
    if cid == "count:pronouns":
        says = [PRONOUNS[i % len(PRONOUNS)] for i in range(n)]
        return " ".join(says) + " left.", " ".join(says[:-1]) + " dogs left."
    if cid == "count:punctuation":
        return "Wait?! Yes, this: a test; really. Wow! Why?", "Wait?! Yes, this: a test. Wow! Why?"
    if cid == "count:unique_word_count":
        return " ".join(f"w{i}" for i in range(n)) + ".", " ".join(
            f"w{i % (n - 1)}" for i in range(2 * n)
        )
    if cid == "count:word_count_range":
        hi = kw["max_words"]
        return " ".join(["word"] * hi), " ".join(["word"] * (hi + 1))
    if cid == "count:words_japanese":
        return _japanese(n, True), _japanese(n, False)
    if cid == "ratio:overlap":
        ref, pct = kw["reference_text"], kw["percentage"]
        bad_pct = pct - 10 if pct > 15 else pct + 10
        return _with_overlap(ref, pct), _with_overlap(ref, bad_pct)
    if cid == "ratio:sentence_balance":
        return "It rains. Does it? Wow! Fine.\nWhy? Great!", "It rains. It pours. Does it? Wow!"
    if cid == "ratio:sentence_type":
        return "It rains. It pours. Does it?", "It rains. Does it? Why?"
    if cid == "ratio:sentence_words":
        return "Cats run fast. Dogs eat well. Owls fly high.", "Cats run fast. Dogs eat. Owls fly."
    if cid == "ratio:stop_words":
        pct = kw["percentage"]
        return _stop_text(int(pct) - 1, 100), _stop_text(int(pct) + 1, 100)
    if cid == "sentence:alliteration_increment":
        good = "Big cats run. Silly snakes slither slowly. Tiny turtles take ten tiny trips."
        return good, "Silly snakes slither slowly. Big cats run."
    if cid == "sentence:increment":
        return _sentences_with([2, 2 + n, 2 + 2 * n]), _sentences_with([2, 2 + n, 3 + 2 * n])
    if cid == "sentence:keyword":
        word = kw["word"]
        return _keyword_text(word, n, n + 1), _keyword_text(word, n + 1, n + 1)
    raise AssertionError(cid)


def test_ids_and_specs():
    assert set(DATA) == set(IDS)  # every id here occurs in the prompts, and vice versa
    for family in (count, ratio, sentence):
        assert set(family.CHECKS) == set(family.SPECS)
        family.warmup()
    assert len(ratio.stopwords()) == 198 and {"the", "t", "don", "ourselves"} <= ratio.stopwords()


@pytest.mark.parametrize(("cid", "i", "kw"), CASES, ids=[f"{c}-{i}" for c, i, _ in CASES])
def test_prompt_kwargs(cid, i, kw):
    good, bad = _good_bad(cid, check_spec(cid, kw))
    assert _check(cid, good, kw) is True
    assert _check(cid, bad, kw) is False
    assert verify(f"ifbench/{cid}", kw, good) and not verify(cid, kw, bad)


@pytest.mark.parametrize("cid", IDS)
def test_blank_never_follows(cid):
    kw = check_spec(cid, DATA[cid][0])
    for text in ["", " ", "\n\t ", "\u3000"]:
        assert CHECKS[cid](text, kw) is False


def test_overlap_helper_hits_target():
    for kw in DATA["ratio:overlap"]:
        ref, pct = kw["reference_text"], kw["percentage"]
        text = _with_overlap(ref, pct)
        grams = _trigrams(text)
        assert abs(len(grams & _trigrams(ref)) / len(grams) * 100 - pct) < 1.5


# --- edge cases (SEMANTICS_count_ratio_sentence.md) ------------------------------------------


def test_conjunctions_distinct_raw_pieces():
    kw = {"small_n": 4}
    assert _check("count:conjunctions", "and And and, AND", kw)  # four raw pieces
    assert not _check("count:conjunctions", "and and and and", kw)
    assert not _check("count:conjunctions", "“and” (but) for", {"small_n": 3})  # not ASCII


def test_keywords_multiple_substrings():
    kw = {f"keyword{i}": w for i, w in enumerate(["door", "b", "c", "d", "e"], start=1)}
    kw = {**kw, "keyword2": "xq", "keyword3": "zq", "keyword4": "jj", "keyword5": "vv"}
    base = "xq xq zq zq zq jj jj jj jj jj " + "vv " * 7
    assert _check("count:keywords_multiple", base + "Indoors.", kw)  # "door" inside "Indoors"
    assert not _check("count:keywords_multiple", base + "Indoors door.", kw)
    # str.count is non-overlapping: "jjjj" holds "jj" twice, "jjj" once.
    assert _check(
        "count:keywords_multiple", base.replace("jj jj jj jj jj", "jjjj jjj jj jj") + "Indoors.", kw
    )


def test_numbers_after_deleting_punctuation():
    kw = {"N": 4}
    assert _check("count:numbers", "Pi is 3.14, a grand is 1,000, -5 and 2024-25.", kw)
    assert _check("count:numbers", "COVID19 at 10:30 on 1/2/2024 (٣)", {"N": 4})
    assert not _check("count:numbers", "Two, three and 2.", kw)


def test_person_names_case_and_boundaries():
    assert _check("count:person_names", "Emma's friend Leo.", {"N": 2})
    assert not _check("count:person_names", "emma, Leonardo, Emmanuel, DAVID", {"N": 1})
    assert not _check("count:person_names", "Emma Emma Emma", {"N": 2})
    assert _check("count:person_names", "_Emma Liam_ Noah2 (Ava)", {"N": 1})  # only "Ava"
    assert not _check("count:person_names", "_Emma Liam_ Noah2 (Ava)", {"N": 2})


def test_pronouns_tokenization():
    assert _check("count:pronouns", "she/her/hers", {"N": 3})  # "/" is a space
    assert _check("count:pronouns", "It's mine, gimme that.", {"N": 4})  # it, mine, me, that
    assert not _check("count:pronouns", "It's mine, gimme that.", {"N": 5})
    assert not _check("count:pronouns", "Them. Items, hiss; shell.", {"N": 2})
    assert _check("count:pronouns", "Anything", {"N": 0})


def _all_pronoun_tokens(text: str) -> int:
    """Pronouns among ALL nltk word tokens (no pre-filter), as the reference counts them."""
    tokenize = nlp._word_tokenizer()
    low = text.replace("/", " ").lower()
    return sum(1 for s in nlp.sentences(low) for tok in tokenize(s) if tok in count._PRONOUNS)


PIECES = sorted(count._PRONOUNS)[::3] + ["gimme", "LEMME", "itn't", "It's", "'it'", "“it”"]
PIECES += ["(me)", "x-it", "it.", "I.e.", "d'ye", "'tis", "cannot", "wanna", "n't", "'s", "'ll"]
PIECES += list("“”«»‘’„`\"'-.?!,:;@#$%&*[](){}<>+|~=_…\u2013\u2014\u2016\t\n\x1c\u3000 1éİ")
PIECES += ["--", "..", "...", "''", " ", "a", "s", "n"]


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.lists(st.sampled_from(PIECES), max_size=25), st.integers(0, 6))
def test_pronoun_prefilter_is_exact(pieces, n):
    text = "".join(pieces)
    if text.strip():
        assert count.pronouns(text, {"N": n}) == (_all_pronoun_tokens(text) >= n)


def test_punctuation_interrobang():
    ok = "Really?! Yes, it is: a test; fine. Wow! Why?"
    assert _check("count:punctuation", ok, {})
    assert not _check("count:punctuation", "Really?! Yes, it is: a test; fine.", {})  # "?!" used
    assert not _check("count:punctuation", "Really‽ Yes, it is: a test; fine.", {})
    assert _check("count:punctuation", "Really‽ Yes, it is: a test; fine. Wow! Why?", {})
    assert _check("count:punctuation", "?!?! , : ; .", {})  # the second "?!" gives "?" and "!"


def test_unique_words_empty_piece_counts():
    assert _check("count:unique_word_count", "Cat - dog", {"N": 3})  # "cat", "", "dog"
    assert not _check("count:unique_word_count", "Cat cat, CAT! dog", {"N": 3})


def test_word_count_range_word_chars():
    kw = {"min_words": 4, "max_words": 4}
    assert _check("count:word_count_range", "Don't pay 3.14", {"min_words": 5, "max_words": 9})
    assert not _check("count:word_count_range", "Don't pay 3.14", kw)  # don, t, pay, 3, 14
    assert _check("count:word_count_range", "½ x_y é ٣", kw)  # stdlib \w: ½ is a word


def test_words_japanese_edges():
    assert _check("count:words_japanese", "one two", {"N": 5})  # fewer words: vacuous
    assert _check("count:words_japanese", "a 日本。 b 2024 c ... d 東京", {"N": 2})
    assert not _check("count:words_japanese", "a 日本。 b 한국 c", {"N": 2})  # Korean is not
    assert not _check("count:words_japanese", "日本 日本", {"N": 0})  # the reference divides by 0


def test_overlap_character_trigrams():
    kw = {"reference_text": "the cat sat on the mat", "percentage": 100.0}
    assert _check("ratio:overlap", "on the mat", kw)  # characters, not words
    assert not _check("ratio:overlap", "mat the on", kw)  # "t t", "e o" are not in it
    assert not _check("ratio:overlap", "ab", {**kw, "percentage": 0.0})  # no trigrams
    assert _check("ratio:overlap", "xyz", {**kw, "percentage": 0.0})
    assert _check("ratio:overlap", "the cat" + _novel(5), {**kw, "percentage": 48.0})  # 5/10


def test_sentence_types_by_last_character():
    assert _check("ratio:sentence_balance", "No end punctuation here", {})  # 0 == 0 == 0
    assert _check("ratio:sentence_type", "Hello there", {})
    assert _check("ratio:sentence_type", 'He said "stop." Then "why?"', {})  # quotes: no type
    assert _check("ratio:sentence_type", "Why? We go. We stay...", {})  # "..." is "."
    assert not _check("ratio:sentence_type", "Wait... Sure. Why?", {})  # Punkt: 2 sentences


def test_sentence_words_same_length_only():
    assert _check("ratio:sentence_words", "Cats run fast. Cats run fast. Cats run fast.", {})
    assert not _check("ratio:sentence_words", "Cats run fast. Dogs eat well.", {})


def test_stop_words_reference_arithmetic():
    assert not _check("ratio:stop_words", "?! ...", {"percentage": 100.0})  # no \w tokens
    assert _check("ratio:stop_words", _stop_text(27, 100), {"percentage": 27.0})
    assert not _check("ratio:stop_words", _stop_text(7, 25), {"percentage": 28.0})  # 28.000...04
    assert _check("ratio:stop_words", "Don't.", {"percentage": 100.0})  # don, t


def test_alliteration_total_not_longest():
    assert _check("sentence:alliteration_increment", "Bad boys cry. Dark dogs eat eggs.", {})
    assert _check("sentence:alliteration_increment", "No alliteration here.", {})
    assert not _check("sentence:alliteration_increment", "Go on. Run fast.", {})  # 0, 0
    assert _check("sentence:alliteration_increment", 'A b. 1 11 "12 x.', {})  # 0, then 3


def test_increment_edges():
    assert _check("sentence:increment", "Just one sentence here.", {"small_n": 3})
    assert _check("sentence:increment", "Don't go. Don't go - now.", {"small_n": 1})  # 2, 3
    assert _check("sentence:increment", "One two. Three four.", {"small_n": 0})


def test_keyword_sentence_edges():
    text = "First line. The eater eats. We eat now."
    assert _check("sentence:keyword", text, {"word": "EAT", "N": 3})
    assert not _check("sentence:keyword", text, {"word": "eat", "N": 2})  # word boundaries
    assert not _check("sentence:keyword", text, {"word": "eat", "N": 0})  # no 0-th sentence
    assert not _check("sentence:keyword", text, {"word": "eat", "N": 4})
    assert _check("sentence:keyword", "Use a.b( here.", {"word": "a.b(", "N": 1}) is False
    assert _check("sentence:keyword", "Use a.b(c here.", {"word": "a.b(", "N": 1})  # escaped


# --- robustness ------------------------------------------------------------------------------


def _texts() -> list[str]:
    rng = random.Random(0)
    prompts = " ".join(json.loads(line)["prompt"] for line in open(PROMPTS, encoding="utf-8"))
    noise = "".join(chr(rng.randrange(32, 0x3100)) for _ in range(100_000))
    marks = "".join(rng.choice(string.printable + "日本‽") for _ in range(100_000))
    tiny = "i.e. " * 10_000 + "it. " * 10_000  # 20,000 sentences
    return [(prompts * 2)[:100_000], noise, marks, tiny]


@pytest.mark.parametrize("cid", IDS)
def test_fast_and_deterministic(cid):
    kw = check_spec(cid, DATA[cid][0])
    for text in _texts():
        start = time.perf_counter()
        first = CHECKS[cid](text, kw)
        assert time.perf_counter() - start < 1.0, cid
        assert CHECKS[cid](text, kw) is first and isinstance(first, bool)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.text(max_size=80), st.sampled_from(IDS))
def test_any_text_gives_a_bool(text, cid):
    assert isinstance(CHECKS[cid](text, check_spec(cid, DATA[cid][0])), bool)


def test_names_pattern_is_the_list():
    assert sorted(NAMES) == sorted(count._NAMES) and len(NAMES) == 50
    hit = re.compile(r"\b(?:" + "|".join(NAMES) + r")\b").findall(" ".join(NAMES))
    assert sorted(hit) == sorted(NAMES)
