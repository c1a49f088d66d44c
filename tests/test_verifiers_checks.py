"""Each of the 25 IFEval checks on hand-written responses, IFEval's quirks included."""

import logging

import pytest

from ifrl_jax.verifiers import CHECKS, HARD_IDS, nlp, strip_think, verify, verify_outcome

NC = "punctuation:no_comma"

# (id, kwargs, response, strict verdict). Every id has at least one True and one False row.
CASES = [
    # keywords:existence: unanchored, case-insensitive regex search.
    ("keywords:existence", {"keywords": ["cat"]}, "We concatenate strings.", True),
    ("keywords:existence", {"keywords": ["CAT", "dog"]}, "a Cat and a DOG", True),
    ("keywords:existence", {"keywords": ["cat", "dog"]}, "only a cat here", False),
    ("keywords:existence", {"keywords": ["a.c"]}, "abc", True),  # the kwarg is a regex
    # keywords:frequency: substring matches count ("the" inside "there", "weather").
    (
        "keywords:frequency",
        {"keyword": "the", "frequency": 3, "relation": "at least"},
        "There is weather.",
        False,
    ),
    (
        "keywords:frequency",
        {"keyword": "the", "frequency": 3, "relation": "at least"},
        "There, the weather.",
        True,
    ),
    (
        "keywords:frequency",
        {"keyword": " the ", "frequency": 2, "relation": "less than"},
        "THE end",
        True,
    ),
    (
        "keywords:frequency",
        {"keyword": "the", "frequency": 2, "relation": "less than"},
        "the other",
        False,
    ),
    # keywords:forbidden_words: \b...\b, case-insensitive.
    ("keywords:forbidden_words", {"forbidden_words": ["cat"]}, "We concatenate.", True),
    ("keywords:forbidden_words", {"forbidden_words": ["dog", "cat"]}, "A Cat.", False),
    # "\b#EmbraceChange\b" needs a word character before "#": after a space it is not found.
    (
        "keywords:forbidden_words",
        {"forbidden_words": ["#EmbraceChange"]},
        "Go #EmbraceChange!",
        True,
    ),
    (
        "keywords:forbidden_words",
        {"forbidden_words": ["#EmbraceChange"]},
        "go#EmbraceChange!",
        False,
    ),
    # keywords:letter_frequency: case-insensitive count of one letter.
    (
        "keywords:letter_frequency",
        {"letter": "a", "let_frequency": 3, "let_relation": "at least"},
        "AaA",
        True,
    ),
    (
        "keywords:letter_frequency",
        {"letter": "A", "let_frequency": 3, "let_relation": "at least"},
        "banana split",
        True,
    ),
    (
        "keywords:letter_frequency",
        {"letter": "z", "let_frequency": 1, "let_relation": "less than"},
        "pizza",
        False,
    ),
    # A letter outside a-z (IFEval has "#" and "!"): we count that character (deterministic).
    (
        "keywords:letter_frequency",
        {"letter": "#", "let_frequency": 4, "let_relation": "at least"},
        "#a #b #c #d",
        True,
    ),
    (
        "keywords:letter_frequency",
        {"letter": "#", "let_frequency": 4, "let_relation": "at least"},
        "#a #b #c and plenty of letters aaaa",
        False,
    ),
    (
        "keywords:letter_frequency",
        {"letter": "!", "let_frequency": 2, "let_relation": "less than"},
        "Wow!",
        True,
    ),
    # language:response_language: seeded langdetect; no features at all passes.
    (
        "language:response_language",
        {"language": "ru"},
        "Привет, как дела? Сегодня хорошая погода.",
        True,
    ),
    (
        "language:response_language",
        {"language": "ru"},
        "Hello, how are you? The weather is nice.",
        False,
    ),
    ("language:response_language", {"language": "ru"}, "12345 !!! 678", True),
    # length_constraints:number_sentences: English Punkt ("e.g." ends a sentence here).
    (
        "length_constraints:number_sentences",
        {"num_sentences": 3, "relation": "at least"},
        "We waited, e.g. for an hour. Then we left.",
        True,
    ),
    (
        "length_constraints:number_sentences",
        {"num_sentences": 3, "relation": "less than"},
        "We waited, e.g. for an hour. Then we left.",
        False,
    ),
    (
        "length_constraints:number_sentences",
        {"num_sentences": 3, "relation": "less than"},
        "Dr. Smith arrived. He sat.",
        True,
    ),  # "Dr." is a known abbreviation
    # length_constraints:number_paragraphs: split on \s?***\s?.
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2}, "One.\n***\nTwo.", True),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2}, "***One.***Two.***", True),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2}, "One.\n***\n***\nTwo.", False),
    (
        "length_constraints:number_paragraphs",
        {"num_paragraphs": 1},
        "It is ***Both*** ways.",
        False,
    ),  # bold-italic splits too: 3 paragraphs
    ("length_constraints:number_paragraphs", {"num_paragraphs": 3}, "It is ***Both*** ways.", True),
    # length_constraints:number_words: \w+ runs ("don't" = 2, "3.14" = 2).
    (
        "length_constraints:number_words",
        {"num_words": 3, "relation": "at least"},
        "don't stop",
        True,
    ),
    (
        "length_constraints:number_words",
        {"num_words": 3, "relation": "less than"},
        "pi is 3.14",
        False,
    ),
    (
        "length_constraints:number_words",
        {"num_words": 3, "relation": "less than"},
        "naïve café",
        True,
    ),
    # \w is the stdlib re class (nltk <= 3.9): Devanagari vowel signs split words, 8 here.
    (
        "length_constraints:number_words",
        {"num_words": 4, "relation": "at least"},
        "हिन्दी भाषा बोलिए",
        True,
    ),
    # length_constraints:nth_paragraph_first_word.
    (
        "length_constraints:nth_paragraph_first_word",
        {"num_paragraphs": 2, "nth_paragraph": 1, "first_word": "Hello"},
        "Hello, world.\n\nSecond one.",
        True,
    ),
    (
        "length_constraints:nth_paragraph_first_word",
        {"num_paragraphs": 2, "nth_paragraph": 1, "first_word": "hello"},
        "\n\nHello, world.\n\nSecond one.",
        False,
    ),  # a leading blank piece takes position 1
    (
        "length_constraints:nth_paragraph_first_word",
        {"num_paragraphs": 2, "nth_paragraph": 1, "first_word": "word"},
        "**Word** first.\n\nSecond one.",
        False,
    ),  # "**word**" != "word"
    (
        "length_constraints:nth_paragraph_first_word",
        {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "quoted"},
        "First.\n\n'Quoted,' he said.",
        True,
    ),
    (
        "length_constraints:nth_paragraph_first_word",
        {"num_paragraphs": 3, "nth_paragraph": 2, "first_word": "second"},
        "First.\n\nSecond one.",
        False,
    ),  # paragraph count must match
    # Per-character lowercasing, as the reference does: no final sigma.
    (
        "length_constraints:nth_paragraph_first_word",
        {"num_paragraphs": 1, "nth_paragraph": 1, "first_word": "οδοσ"},
        "ΟΔΟΣ είναι.",
        True,
    ),
    (
        "length_constraints:nth_paragraph_first_word",
        {"num_paragraphs": 1, "nth_paragraph": 1, "first_word": "ΟΔΟΣ"},
        "ΟΔΟΣ είναι.",
        False,
    ),
    # detectable_content:number_placeholders: \[.*?\], single line; links and [] count.
    (
        "detectable_content:number_placeholders",
        {"num_placeholders": 3},
        "[name], [link](http://x) and []",
        True,
    ),
    (
        "detectable_content:number_placeholders",
        {"num_placeholders": 2},
        "[name] and [multi\nline]",
        False,
    ),
    # detectable_content:postscript: no ^ anchor, lowercased.
    ("detectable_content:postscript", {"postscript_marker": "P.S."}, "Body.\nP.S. see you", True),
    ("detectable_content:postscript", {"postscript_marker": "P.S."}, "I said p.s. mid-line", True),
    ("detectable_content:postscript", {"postscript_marker": "P.P.S"}, "Body.\nP.S. see you", False),
    ("detectable_content:postscript", {"postscript_marker": "P.P.S"}, "Body.\nP. P. S hi", True),
    ("detectable_content:postscript", {"postscript_marker": "Note:"}, "x\nNOTE: y", True),
    # detectable_format:number_bullet_lists: exact count of * / - lines.
    ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "* one\n* two", True),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "* one\n* two\n* three", False),
    (
        "detectable_format:number_bullet_lists",
        {"num_bullets": 2},
        "- one\n---\n1. no\n• no",
        True,
    ),  # a --- rule counts; "1." and "•" do not
    ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "*italic* a\n-5 degrees", True),
    ("detectable_format:number_bullet_lists", {"num_bullets": 1}, "**bold** start", False),
    # detectable_format:constrained_response: case-sensitive substring.
    ("detectable_format:constrained_response", {}, "Well... My answer is maybe. Bye", True),
    ("detectable_format:constrained_response", {}, "my answer is yes.", False),
    ("detectable_format:constrained_response", {}, "My answer is yes", False),
    # detectable_format:number_highlighted_sections: **x** once, ***x*** twice.
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2}, "*a* and *b*", True),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2}, "**x**", False),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2}, "***x***", True),
    (
        "detectable_format:number_highlighted_sections",
        {"num_highlights": 1},
        "* * and *a\nb*",
        False,
    ),
    # detectable_format:multiple_sections: case-sensitive regex split.
    (
        "detectable_format:multiple_sections",
        {"section_spliter": "SECTION", "num_sections": 2},
        "SECTION 1\nA\nSECTION 2\nB",
        True,
    ),
    (
        "detectable_format:multiple_sections",
        {"section_spliter": "SECTION", "num_sections": 2},
        "Section 1\nA\nSection 2\nB",
        False,
    ),
    (
        "detectable_format:multiple_sections",
        {"section_spliter": " Day ", "num_sections": 1},
        "Plan: see Day 3 for details",
        True,
    ),  # spliter stripped; in-text mentions count
    # detectable_format:json_format.
    ("detectable_format:json_format", {}, '```json\n{"a": 1}\n```', True),
    ("detectable_format:json_format", {}, ' "just a string" ', True),
    ("detectable_format:json_format", {}, "```JSON\n[1, NaN]\n```", True),
    ("detectable_format:json_format", {}, '{"a": 1} and more', False),
    # detectable_format:title.
    ("detectable_format:title", {}, "<<My Title>>\nText", True),
    ("detectable_format:title", {}, "<< >>", False),
    ("detectable_format:title", {}, "<<<>>>", False),
    ("detectable_format:title", {}, "<< >> and <<>>", True),  # greedy: one match spans both
    ("detectable_format:title", {}, "<<split\ntitle>>", False),
    # combination:two_responses.
    ("combination:two_responses", {}, "A\n******\nB", True),
    ("combination:two_responses", {}, "******A******B", True),
    ("combination:two_responses", {}, "A ****** A ", False),
    ("combination:two_responses", {}, "A ****** ****** B", False),
    ("combination:two_responses", {}, "A ****** B ****** C", False),
    # combination:repeat_prompt.
    (
        "combination:repeat_prompt",
        {"prompt_to_repeat": "Write a poem."},
        "  WRITE a POEM. Roses are red.",
        True,
    ),
    (
        "combination:repeat_prompt",
        {"prompt_to_repeat": "Write a poem."},
        "Sure. Write a poem.",
        False,
    ),
    # startend:end_checker.
    (
        "startend:end_checker",
        {"end_phrase": "Any other questions?"},
        'Done. any other QUESTIONS?"',
        True,
    ),
    (
        "startend:end_checker",
        {"end_phrase": "Any other questions?"},
        "Any other questions? Thanks.",
        False,
    ),
    # change_case:capital_word_frequency: nltk.word_tokenize tokens with isupper().
    (
        "change_case:capital_word_frequency",
        {"capital_frequency": 3, "capital_relation": "at least"},
        "I went to the U.S. with COVID-19.",
        True,
    ),
    (
        "change_case:capital_word_frequency",
        {"capital_frequency": 2, "capital_relation": "less than"},
        "DON'T do it.",
        False,
    ),  # DO + N'T
    (
        "change_case:capital_word_frequency",
        {"capital_frequency": 1, "capital_relation": "less than"},
        "Nothing Is Shouted Here.",
        True,
    ),
    # change_case:english_capital / english_lowercase.
    (
        "change_case:english_capital",
        {},
        "THIS IS A SIMPLE ENGLISH SENTENCE ABOUT THE WEATHER.",
        True,
    ),
    ("change_case:english_capital", {}, "THIS IS MOSTLY CAPS but not all.", False),
    ("change_case:english_capital", {}, "MY TOP 3 TIPS: 1) SLEEP 8 HOURS; 2) DRINK WATER!", False),
    ("change_case:english_capital", {}, "123 !!!", False),  # isupper() is False: no exception
    (
        "change_case:english_lowercase",
        {},
        "this is a simple english sentence about the weather.",
        True,
    ),
    ("change_case:english_lowercase", {}, "This is a simple english sentence.", False),
    ("change_case:english_lowercase", {}, "привет, как дела? сегодня хорошая погода.", False),
    # punctuation:no_comma: ASCII only.
    (NC, {}, "full-width，comma and Arabic، comma", True),
    (NC, {}, "a, b", False),
    # startend:quotation.
    ("startend:quotation", {}, ' "hi there" \n', True),
    ("startend:quotation", {}, '"', False),
    ("startend:quotation", {}, '"unclosed', False),
]


@pytest.mark.parametrize("cid,kwargs,text,expected", CASES, ids=lambda x: str(x)[:40])
def test_strict_verdict(cid, kwargs, text, expected):
    assert verify(cid, kwargs, text) is expected


def test_every_id_has_a_passing_and_a_failing_case():
    assert set(CHECKS) == HARD_IDS and len(HARD_IDS) == 25
    for cid in HARD_IDS:
        verdicts = {expected for c, _, _, expected in CASES if c == cid}
        assert verdicts == {True, False}, cid


@pytest.mark.parametrize(
    "cid,kwargs",
    [
        (NC, {}),
        ("keywords:forbidden_words", {"forbidden_words": ["x"]}),
        ("keywords:frequency", {"keyword": "x", "frequency": 1, "relation": "less than"}),
        ("language:response_language", {"language": "en"}),
    ],
)
@pytest.mark.parametrize("text", ["", "   \n\t "])
@pytest.mark.parametrize("loose", [False, True])
def test_blank_response_fails_even_negative_checks(cid, kwargs, text, loose):
    assert CHECKS[cid](text or " ", kwargs)  # the bare check would pass ...
    assert verify(cid, kwargs, text, loose=loose) is False  # ... the wrapper does not


@pytest.mark.parametrize(
    "cid,kwargs,text",
    [
        # First line removed.
        ("change_case:english_lowercase", {}, "Sure! Here it is:\nthis is a simple english text."),
        # Last line removed.
        ("startend:end_checker", {"end_phrase": "anything else?"}, "Done. Anything else?\nBye!"),
        # Both removed.
        ("startend:quotation", {}, 'Intro:\n"the answer"\nOutro'),
        ("detectable_format:number_bullet_lists", {"num_bullets": 1}, "* a\n* b\n- c"),
        # Asterisks removed.
        ("startend:quotation", {}, '**"bold quote"**'),
        (
            "length_constraints:nth_paragraph_first_word",
            {"num_paragraphs": 1, "nth_paragraph": 1, "first_word": "word"},
            "**Word** first.",
        ),
    ],
)
def test_loose_variants(cid, kwargs, text):
    assert verify(cid, kwargs, text) is False
    assert verify(cid, kwargs, text, loose=True) is True


def test_loose_still_fails_when_no_variant_passes():
    assert verify(NC, {}, "a,\nb,\nc,", loose=True) is False
    assert verify("startend:quotation", {}, "no quotes\nanywhere", loose=True) is False


def test_invalid_regex_fails_with_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="ifrl_jax.verifiers"):
        assert verify("keywords:existence", {"keywords": ["*bold*"]}, "a *bold* move") is False
    assert "not a valid regular expression" in caplog.text


def test_crashing_check_fails_with_warning_and_status_error(caplog, monkeypatch):
    def crash(text, kw):
        raise ZeroDivisionError("boom")

    monkeypatch.setitem(CHECKS, NC, crash)
    with caplog.at_level(logging.WARNING, logger="ifrl_jax.verifiers"):
        assert verify(NC, {}, "no comma here") is False
        outcome = verify_outcome(NC, {}, "no comma here", loose=True)
    assert (outcome.passed, outcome.status) == (False, "error")
    assert "ZeroDivisionError: boom" in outcome.messages[0]
    assert "ZeroDivisionError: boom" in caplog.text
    monkeypatch.undo()
    assert verify_outcome(NC, {}, "no comma here").status == "ok"


def test_json_too_deep_for_the_parser_is_not_followed_and_not_an_error():
    deep = "[" * 100_000 + "]" * 100_000  # json.loads raises RecursionError
    outcome = verify_outcome("detectable_format:json_format", {}, deep)
    assert (outcome.passed, outcome.status) == (False, "ok")
    assert verify("detectable_format:json_format", {}, "[" * 50 + "]" * 50) is True


def test_verify_never_raises_on_bad_arguments():
    assert verify("not:an_id", {}, "x") is False
    assert verify("style:open_ended", {}, "x") is False  # soft ids are not verified here
    assert verify(NC, {"unexpected": 1}, "x") is False
    assert verify(NC, {}, None) is False  # type: ignore[arg-type]
    assert verify_outcome(NC, {"unexpected": 1}, "x").status == "bad_spec"
    assert verify_outcome(NC, {}, None).status == "bad_spec"  # type: ignore[arg-type]
    assert verify_outcome(NC, {}, "x") == verify_outcome(NC, {}, "x", timeout_s=5)
    assert verify_outcome(NC, {}, "x").passed and verify_outcome(NC, {}, "x").status == "ok"


def test_catastrophic_keyword_times_out():
    kw = {"keywords": ["(a+)+$"]}
    assert verify("keywords:existence", kw, "a" * 40 + "b", timeout_s=0.2) is False
    outcome = verify_outcome("keywords:existence", kw, "a" * 40 + "b", timeout_s=0.2)
    assert (outcome.passed, outcome.status) == (False, "timeout")
    assert "exceeded the 0.2s time limit" in outcome.messages[0]


def test_language_detection_is_seeded():
    text = "JE SUIS TRÈS CONTENT DE VOUS VOIR AUJOURD'HUI, MES AMIS."
    answers = set()
    for _ in range(5):
        nlp.detect_language.cache_clear()
        answers.add(nlp.detect_language(text))
    assert len(answers) == 1


def test_sentences_and_upper_tokens_match_nltk_word_tokenize():
    text = 'I said "DON\'T!" to the U.S. team. e.g. THIS works (OK)? yes -- NO.'
    assert nlp.sentences("We waited, e.g. for an hour. Then we left.") == (
        "We waited, e.g.",
        "for an hour.",
        "Then we left.",
    )
    from nltk.tokenize.destructive import NLTKWordTokenizer

    tokens = [t for s in nlp.sentences(text) for t in NLTKWordTokenizer().tokenize(s)]
    assert nlp.count_upper_tokens(text) == sum(t.isupper() for t in tokens) == 7


@pytest.mark.parametrize(
    "mode,response,expected",
    [
        ("none", "<think>a</think>\n\nB", "<think>a</think>\n\nB"),
        ("required", "<think>a</think>\n\nB\n\nC", "B\n\nC"),
        ("required", "<think>a</think>B", None),
        ("required", "no tag", None),
        ("optional", "<think>a</think>\n\nB", "B"),
        ("optional", "<think>a</think>B", "B"),
        ("optional", "no tag", "no tag"),
    ],
)
def test_strip_think(mode, response, expected):
    assert strip_think(response, mode=mode) == expected


def test_strip_think_rejects_unknown_mode():
    with pytest.raises(ValueError, match="think mode"):
        strip_think("x", mode="sometimes")
