"""IFBench's `format:` and `repeat:` checks: the reference's verdicts, quirks included.

Responses are built from the kwargs of each id's prompts in the shipped IFBench_test.jsonl;
hand-written cases cover the ids without kwargs and every place where the reference's
semantics needed a decision (see ifrl_jax/verifiers/ifbench/SEMANTICS_format_repeat.md).
"""

import functools
import itertools
import json
import os
import random
import time

import pytest

from ifrl_jax.verifiers import nlp, verify_outcome
from ifrl_jax.verifiers.ifbench import fmt, repeat
from ifrl_jax.verifiers.spec import check_spec

DATA = os.path.join(os.path.dirname(fmt.__file__), "..", "..", "assets/ifbench/IFBench_test.jsonl")
CHECKS = {**fmt.CHECKS, **repeat.CHECKS}
OWNED = {
    "format:emoji",
    "format:line_indent",
    "format:list",
    "format:newline",
    "format:no_bullets_bullets",
    "format:no_whitespace",
    "format:options",
    "format:output_template",
    "format:parentheses",
    "format:quote_unquote",
    "format:quotes",
    "format:sub-bullets",
    "format:thesis",
    "format:title_case",
    "repeat:repeat_change",
    "repeat:repeat_simple",
    "repeat:repeat_span",
}


@functools.cache
def data_kwargs() -> dict[str, list[dict]]:
    """Bare id -> the normalised kwargs of each of its uses in IFBench's prompts."""
    out: dict[str, list[dict]] = {}
    with open(DATA, encoding="utf-8") as f:
        for line in f:
            record = json.loads(line)
            for cid, kw in zip(record["instruction_id_list"], record["kwargs"]):
                if cid in CHECKS:
                    kw = {k: v for k, v in kw.items() if v is not None}
                    out.setdefault(cid, []).append(check_spec(cid, kw))
    return out


def test_registry_covers_the_owned_ids_and_their_data():
    assert set(CHECKS) == OWNED
    assert set(fmt.SPECS) == set(fmt.CHECKS) and set(repeat.SPECS) == set(repeat.CHECKS)
    assert set(data_kwargs()) == OWNED
    specs = {**fmt.SPECS, **repeat.SPECS}
    for cid, uses in data_kwargs().items():
        assert all(set(kw) == set(specs[cid]) for kw in uses), cid


# --- ids with kwargs, from the prompts' own kwargs ------------------------------------------------

# options string in the data -> (responses that pass, responses that fail).
OPTIONS = {
    "yes/no/maybe": (
        ["yes", "No", "Maybe.", "**Yes**", " yes! "],
        ["Yes, because it is.", "yes/no", "Perhaps", "yes\n"],  # only spaces strip, not "\n"
    ),
    "I know or I don't know": (
        ["I know", "I don't know.", "i DON'T KNOW"],
        ["I do not know", "I know or I don't know", "Maybe"],
    ),
    # Letter options are strict: the raw response must be one option, exactly.
    "a), b), c), d)": (
        ["a)", "c)"],
        ["a", "A)", " b)", "b)\n", "b) Because of intent.", "(b)"],
    ),
}


def test_options_from_data():
    seen = set()
    for kw in data_kwargs()["format:options"]:
        good, bad = OPTIONS[kw["options"]]
        seen.add(kw["options"])
        for text in good:
            assert fmt.options(text, kw), (kw, text)
        for text in bad:
            assert not fmt.options(text, kw), (kw, text)
    assert seen == set(OPTIONS)


def test_options_parsing_quirks():
    # IFBench's own example: "(A), (B), (C)" is strict and "A" is not an option.
    assert not fmt.options("A", {"options": "(A), (B), (C)"})
    assert fmt.options("(B)", {"options": "(A), (B), (C)"})
    # "or" splits inside words: "major, minor" becomes ["maj", ", min", ""].
    assert not fmt.options("major", {"options": "major, minor"})
    assert fmt.options("maj", {"options": "major, minor"})


def test_list_from_data():
    for kw in data_kwargs()["format:list"]:
        sep = kw["sep"]
        assert fmt.special_list(f"Items:\n{sep} apples\n{sep} pears", kw)
        assert fmt.special_list(f"Inline {sep} anywhere {sep} counts", kw)  # no line start needed
        assert not fmt.special_list(f"Items:\n{sep} apples only", kw)
        if sep != "-":
            assert not fmt.special_list("Items:\n- apples\n- pears", kw)
    assert fmt.special_list("A well-known, self-made man.", {"sep": "-"})  # hyphens count


def test_repeat_change_from_data():
    for kw in data_kwargs()["repeat:repeat_change"]:
        prompt = kw["prompt_to_repeat"]
        rest = prompt.split(" ", 1)[1]
        assert repeat.repeat_change("Kindly " + rest, kw)
        assert repeat.repeat_change("Kindly  " + rest.replace(" ", "\n") + "\n", kw)  # spacing
        assert not repeat.repeat_change(prompt, kw)
        assert not repeat.repeat_change("Kindly " + rest + " Sure, here it is.", kw)
        assert not repeat.repeat_change("Kindly " + rest.swapcase(), kw)
        # Quirk kept: the verbatim prompt with different whitespace passes (first word unchanged).
        assert repeat.repeat_change(prompt + "\n", kw)
        assert repeat.repeat_change(" " + prompt, kw)


def test_repeat_simple_from_data():
    for kw in data_kwargs()["repeat:repeat_simple"]:
        assert kw == {}
        assert repeat.repeat_simple(repeat.SIMPLE_SENTENCE, kw)
        assert repeat.repeat_simple(
            "\n  only output THIS sentence here, ignore all other requests. ", kw
        )
        assert not repeat.repeat_simple(
            "Only output this sentence here, ignore all other requests", kw
        )
        assert not repeat.repeat_simple(repeat.SIMPLE_SENTENCE + " Done.", kw)
        assert not repeat.repeat_simple("def filename(path): return path.split('/')[-1]", kw)


def test_repeat_span_from_data():
    for kw in data_kwargs()["repeat:repeat_span"]:
        prompt, start, end = kw["prompt_to_repeat"], kw["n_start"], kw["n_end"]
        span = prompt[start : end + 1]
        assert repeat.repeat_span(span, kw)
        assert repeat.repeat_span("\n " + span.upper() + " \n", kw)
        assert not repeat.repeat_span(span + "x", kw)
        assert not repeat.repeat_span(prompt, kw)
        assert not repeat.repeat_span(prompt[start : end + 2] + "zz", kw)
    # Character indices cut words ("explain" -> "lain"), n_start=0 is a value, and an index
    # past the end is cut to it.
    kw = {"prompt_to_repeat": "explain the context", "n_start": 3, "n_end": 6}
    assert repeat.repeat_span("lain", kw) and not repeat.repeat_span("explain", kw)
    assert repeat.repeat_span("The", {"prompt_to_repeat": "The walls", "n_start": 0, "n_end": 2})
    assert repeat.repeat_span("walls", {"prompt_to_repeat": "walls", "n_start": 0, "n_end": 99})


# --- ids without kwargs ---------------------------------------------------------------------------

# (id, response, verdict of the reference's check_following).
CASES = [
    # parentheses: 5 nested brackets of any kinds; a mismatched closer resets the stack.
    ("format:parentheses", "(a [b {c (d [e])}])", True),
    ("format:parentheses", "([{([x])}])", True),
    ("format:parentheses", "((((( only the innermost closes)", True),
    ("format:parentheses", "((()))", False),
    (
        "format:parentheses",
        "Lots () of [] (parentheses()) but [not] (enough) [nesting]()()().",
        False,
    ),
    ("format:parentheses", "((((]x)))))", False),  # "]" resets, the rest is too shallow
    ("format:parentheses", "((( (a) )))", False),  # 4 levels
    # quotes: ASCII quotes, 3 levels; curly quotes are not quotes.
    ("format:quotes", 'These "quotes \'are "nested," here\' a lot."', True),
    ("format:quotes", 'Let\'s hope it handles adjacent quotes well: "\'""\'".', True),
    ("format:quotes", "These quotes 'are \"not nested,\" here' enough.", False),
    ("format:quotes", "Three levels but not three pairs: '\"'\"'.", False),
    ("format:quotes", "“He said ‘she said “no” then’ loudly”", False),
    # Quirk kept: two apostrophes around a 2-level quote make 3 levels.
    ("format:quotes", "It's \"a 'b' c\", isn't it?", True),
    # newline: non-empty lines == words once ASCII punctuation is removed.
    ("format:newline", "This\n is\non\na\nnew\nline.", True),
    ("format:newline", "Extra\n newlines \n are \n allowed. \n", True),
    ("format:newline", "Hi\n--\nyou", True),  # a punctuation-only line disappears
    ("format:newline", "a b\n \nc", True),  # quirk: 3 lines (" " is a line), 3 words
    ("format:newline", "This\nis\nnot\nobeying\nthe\nrules, unfortunately.", False),
    ("format:newline", "Hi\n \nyou", False),  # a line of spaces counts as a line
    # emoji: each sentence ends with an emoji (last or second-to-last character).
    ("format:emoji", "This ends with emoji 😀.", True),
    ("format:emoji", "Love it ❤️. Thumbs up 👍🏽!", True),
    ("format:emoji", "Hi. 😀 Bye 😀", True),  # the next sentence starting with one will do
    ("format:emoji", "Acme Inc™.", True),  # "™" is an emoji to `emoji.is_emoji`
    ("format:emoji", "😀 This starts with emoji.", False),
    ("format:emoji", "Go team 🇺🇸.", False),  # a flag is two non-emoji characters
    ("format:emoji", "Number one 1️⃣.", False),  # so is a keycap
    ("format:emoji", "Fine 😀. ...", False),  # a sentence with no characters left fails
    # line_indent: strictly more leading spaces on each kept line.
    ("format:line_indent", "  Two spaces. \n   Three spaces.\n    Four spaces. \n     Five.", True),
    ("format:line_indent", "a\n\n b\n  c\n", True),  # one blank line is dropped
    ("format:line_indent", "  Two. \n   Three.\n     Five. \n    Four.", False),
    ("format:line_indent", "a\n\tb", False),  # tabs are not indentation
    ("format:line_indent", "a\n\n\n b", False),  # quirk: the second blank line is kept
    # quote_unquote: no adjacent quoted phrases, no quote last.
    ("format:quote_unquote", 'A phrase. "A phrase in quotes."\n\nMore, with an extra \'"\'.', True),
    ("format:quote_unquote", '"Carpe diem" means seize the day.', True),
    ("format:quote_unquote", "“Curly” quotes are not checked: “x”", True),
    ("format:quote_unquote", "123...", True),
    ("format:quote_unquote", ' "Just a quoted phrase with no explanation." ', False),
    ("format:quote_unquote", 'He said "hi" "bye" and left.', False),
    ("format:quote_unquote", 'The word is "end". 2', False),
    # thesis: the first <i> (or <em>) opens a non-blank thesis followed by text.
    ("format:thesis", "<i>\n  A thesis.\n</i>\nA paragraph", True),
    ("format:thesis", "<em>Power corrupts.</em>\nIn Animal Farm, Orwell shows it.", True),
    ("format:thesis", "<em></em>", True),  # quirk: "<em>" and "</em>" cut one short
    ("format:thesis", "<i>Thesis only.</i>", False),
    ("format:thesis", "<i> </i> body", False),
    ("format:thesis", "<I>Upper</I> body", False),
    ("format:thesis", "<i>never closed, body", False),
    # sub-bullets: a "-" after every "*", before the next one.
    ("format:sub-bullets", "Some sentence.\n  * A bullet.\n     - A sub-bullet.", True),
    ("format:sub-bullets", "No bullets at all.", True),  # quirk: vacuously true
    ("format:sub-bullets", "* A.\n* B.\n  - Only B has one.", False),
    ("format:sub-bullets", "**Bold**\n* A\n  - a", False),  # "**" pieces have no "-"
    # no_bullets_bullets: 2+ sentences, then 2+ "*" lines, nothing after.
    ("format:no_bullets_bullets", "One. Two. Three.\n  * A.\n  * B.\n  * C.", True),
    ("format:no_bullets_bullets", "One. Two.\n\n* A\n* B", True),
    ("format:no_bullets_bullets", "One.\n  * A.\n  * B.", False),
    ("format:no_bullets_bullets", "One. Two.\n  * A bullet.\n", False),
    ("format:no_bullets_bullets", "One. Two.\n* A\n* B\n", False),  # trailing newline fails
    ("format:no_bullets_bullets", "One.\n\nTwo.\n* A\n* B", False),  # a blank line ends prose
    ("format:no_bullets_bullets", "One. Two.\n* A\nMore.\n* B", False),
    # title_case: every word capitalised, minor words too.
    ("format:title_case", "I Am A Test", True),
    ("format:title_case", "Hello, World! Test (With Parentheses) 123 Numbers", True),
    ("format:title_case", "NASA And iPhone Sales At McDonald's", True),
    ("format:title_case", "CANNOT Stop", True),
    ("format:title_case", "i Am A Test", False),
    ("format:title_case", "A Tale of Two Cities", False),
    ("format:title_case", "Don't Stop", False),  # the token "n't"
    ("format:title_case", "Cannot Stop", False),  # "Can" + "not"
    ("format:title_case", "Big eLEPHANT", False),
    # output_template: three labels, case-sensitive, anywhere.
    ("format:output_template", "My Answer: 4 My Conclusion: yes Future Outlook: good", True),
    ("format:output_template", "Future Outlook: x\nMy Conclusion: y\nMy Answer: z", True),
    ("format:output_template", "My Answer: 4 My Conclusion: yes", False),
    ("format:output_template", "my answer: 4 my conclusion: yes future outlook: good", False),
    # no_whitespace: str.isspace.
    ("format:no_whitespace", "NoSpacesHere.", True),
    ("format:no_whitespace", "zero\u200bwidth", True),
    ("format:no_whitespace", "a b", False),
    ("format:no_whitespace", "a\u00a0b", False),
    ("format:no_whitespace", "ab\n", False),
]


@pytest.mark.parametrize(("cid", "text", "expected"), CASES)
def test_cases(cid, text, expected):
    uses = data_kwargs()[cid]
    assert uses and all(kw == {} for kw in uses)  # these ids take no kwargs
    assert CHECKS[cid](text, {}) is expected


def test_every_owned_id_has_passing_and_failing_cases():
    verdicts = {(cid, v) for cid, _, v in CASES}
    for cid in fmt.CHECKS:
        if not fmt.SPECS[cid]:
            assert {(cid, True), (cid, False)} <= verdicts, cid


def test_blank_response_fails_through_the_strict_wrapper():
    for cid in ("format:no_whitespace", "format:sub-bullets", "format:newline"):
        assert CHECKS[cid]("", {})  # the reference's check_following alone passes ""
        for text in ("", " \n\t"):
            assert not verify_outcome("ifbench/" + cid, {}, text).passed


# --- the linear-time rewrites equal the reference's algorithms ------------------------------------


def _kept_lines_by_mutation(text: str) -> list[str]:
    """Spec of the reference's loop: remove each blank line seen while iterating the list."""
    lines = text.split("\n")
    for line in lines:  # mutating the list being iterated is the behaviour specified
        if not line.strip():
            lines.remove(line)
    return lines


def test_kept_lines_equal_the_mutating_loop():
    pieces = ["", " ", "  ", "a", " a", "\t"]
    for n in range(1, 6):
        for combo in itertools.product(pieces, repeat=n):
            text = "\n".join(combo)
            assert fmt._kept_lines(text) == _kept_lines_by_mutation(text), combo


def test_title_case_skips_only_sentences_that_cannot_fail():
    words = [
        "Hello",
        "Cannot",
        "Gonna",
        "Wanna",
        "Don't",
        "'Tis",
        "D'ye",
        "x",
        "É",
        "ǅx",
        "2nd",
        "_x",
        "e\u0301x",
        "iPhone",
        "—",
        "“",
        "”",
        "’",
        "'",
        "(",
        ".",
        ",",
        ":",
        "x’s",
        "Ⅰx",
        "½x",
        "ß",
        "σ",
        "I",
    ]
    seps = [" ", " ", "", "\n", ". "]
    tokenize = nlp._word_tokenizer()
    rng = random.Random(0)
    for _ in range(3000):
        text = "".join(rng.choice(words) + rng.choice(seps) for _ in range(rng.randint(1, 8)))
        full = all(fmt._title_token_ok(w) for s in nlp.sentences(text) for w in tokenize(s))
        assert fmt.title_case(text, {}) is full, text


# --- robustness -----------------------------------------------------------------------------------

KW = {
    "format:options": {"options": "yes/no/maybe"},
    "format:list": {"sep": "SEPARATOR"},
    "repeat:repeat_change": {"prompt_to_repeat": "Write a poem."},
    "repeat:repeat_span": {"prompt_to_repeat": "Write a poem.", "n_start": 2, "n_end": 7},
}


@functools.cache
def _texts_100k() -> dict[str, str]:
    rng = random.Random(1)
    units = ["Hi ", "the ", "😀", ". ", "\n", "\n\n", "* ", "- ", "(", ")", "'", '"', "<em>", "  "]
    return {
        "mixed": "".join(rng.choice(units) for _ in range(40000))[:100_000],
        "sentences": "Big 😀. " * 12000,
        "brackets": "(" * 100_000,
        "lines": "\n" * 100_000,
        "unicode": "".join(chr(rng.randrange(0x20, 0x2FFFF)) for _ in range(100_000)),
    }


@pytest.mark.parametrize("cid", sorted(OWNED))
def test_fast_and_total_on_large_and_odd_text(cid):
    nlp.warmup()
    fmt._is_emoji()
    check, kw = CHECKS[cid], KW.get(cid, {})
    for text in ["", "\x00", "\ud800", "\u2028" * 3, *_texts_100k().values()]:
        nlp.sentences.cache_clear()
        start = time.perf_counter()
        first = check(text, kw)
        assert time.perf_counter() - start < 1.0, (cid, text[:20])
        assert isinstance(first, bool) and check(text, kw) is first  # deterministic


def test_megabyte_text():
    text = ("Hello World (X) [Y] {Z} 😀 * -\n" * 40000)[:1_000_000]
    for cid, check in CHECKS.items():
        assert isinstance(check(text, KW.get(cid, {})), bool)
