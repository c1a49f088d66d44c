"""IFBench's `custom:` checks: verdicts on responses built for the shipped prompts, and the edge
cases where the reference's semantics needed a decision (ifbench/SEMANTICS_custom.md)."""

import json
import re
import time
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ifrl_jax.verifiers import check_spec, nlp, verify, verify_outcome
from ifrl_jax.verifiers.ifbench import custom

REPO = Path(__file__).resolve().parents[1]
PROMPTS = REPO / "ifrl_jax" / "assets" / "ifbench" / "IFBench_test.jsonl"
IDS = sorted(custom.CHECKS)


def _kwargs_in_data() -> dict[str, list[dict]]:
    """custom id -> the kwargs of its prompts in the shipped IFBench file, nulls dropped."""
    out: dict[str, list[dict]] = {}
    with open(PROMPTS, encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            for cid, kw in zip(rec["instruction_id_list"], rec["kwargs"]):
                if cid.startswith("custom:"):
                    out.setdefault(cid, []).append({k: v for k, v in kw.items() if v is not None})
    return out


DATA = _kwargs_in_data()
CAPITALS = (
    "Reykjavik, Helsinki, Oslo, Tallinn, Stockholm, Riga, Moscow, Copenhagen, Vilnius, Minsk, "
    "Dublin, Berlin, Amsterdam, Warsaw, London, Brussels, Prague, Luxembourg, Paris, Vienna, "
    "Bratislava, Budapest, Vaduz, Chisinau, Bern, Ljubljana, Zagreb"
)
AFRICA = sorted(
    "Algeria Angola Benin Botswana Burundi Cameroon Chad Comoros Djibouti Egypt Eritrea "
    "Eswatini Ethiopia Gabon Gambia Ghana Guinea Kenya Lesotho Liberia Libya Madagascar Malawi "
    "Mali Mauritania Mauritius Morocco Mozambique Namibia Niger Nigeria Rwanda Senegal "
    "Seychelles Somalia Sudan Tanzania Togo Tunisia Uganda Zambia Zimbabwe".split()
    + ["Burkina Faso", "Cabo Verde", "Central African Republic", "Côte d'Ivoire", "DR Congo"]
    + ["Equatorial Guinea", "Guinea-Bissau", "São Tomé and Príncipe", "Sierra Leone"]
    + ["South Africa", "South Sudan", "Republic of the Congo"],
    key=lambda c: unicodedata.normalize("NFKD", c).encode("ascii", "ignore"),
    reverse=True,
)
CITY = "ID,Country,City,Year,Count\n" + "\n".join(
    f"{i},France,Paris,{2000 + i},{i * 3}" for i in range(1, 8)
)
PRODUCTS = "ProductID, Category, Brand, Price, Stock\n" + "\n".join(
    f"{i},Tools,{'Acme' if i != 5 else chr(34) + 'Smith & Sons' + chr(34)},9.99,{i}"
    for i in range(1, 15)
)
STUDENTS = '"StudentID"\t"Subject"\t"Grade"\t"Semester"\t"Score"\n' + "\n".join(
    f'"{i}"\t"Math"\t"A"\t"Fall"\t"9{i}"' for i in range(1, 4)
)
ALPHABET_STORY = " ".join(
    f"{w} walked on."
    for w in "Ann Bob Cy Dee Eve Fay Gus Hal Ivy Jo Kai Lu Max Ned Oz Pat "
    "Quin Roy Sam Tom Uma Val Wes Xi Yul Zed".split()
)


def _mcq(lengths=(20, 30, 40, 50), options="ABCDE", sep="\n\n") -> str:
    return sep.join(
        f"Question {n}: " + "w" * length + "?\n" + "\n".join(f"{c}) option {c}" for c in options)
        for n, length in enumerate(lengths, 1)
    )


# id -> (responses that satisfy it, responses that violate it), for the task its prompt asks.
CASES = {
    "custom:multiples": (
        ["14, 21, 28, 35, 42, 49", "14\n21\n28\n35\n42\n49", "**14** 21 28 35 42 49."],
        ["Multiples of 7 from 10 to 50: 14, 21, 28, 35, 42, 49", "14, 21, 28, 35, 42", "7, 14"],
    ),
    "custom:mcq_count_length": (
        [_mcq(), _mcq(sep="\n"), _mcq().replace(":", ".")],
        [
            "Here are the questions.\n" + _mcq(),
            _mcq(lengths=(50, 40, 30, 20)),
            _mcq(lengths=(20, 20, 30, 40)),
            _mcq(options="ABCD"),
            _mcq(lengths=(10, 20, 30)),
        ],
    ),
    "custom:reverse_newline": (
        ["\n".join(AFRICA), "Here they are:\n" + "\n".join(AFRICA), "\n".join(AFRICA) + "\n"],
        [
            "\n".join(AFRICA[:51]),
            "\n".join(reversed(AFRICA)),
            "\n".join(f"{i}. {c}" for i, c in enumerate(AFRICA, 1)),
            ", ".join(AFRICA),
        ],
    ),
    "custom:word_reverse": (
        ["Eagle bald the is symbol national the.", "eagle, bald the is answer The"],
        ["The bald eagle is the national symbol.", "Bald eagle.", "elgae dlab"],
    ),
    "custom:character_reverse": (
        ["Elgae dlab eht si lobmys lanoitan ehT.", "ELGAE DLAB"],
        ["The bald eagle.", "eagle bald the"],
    ),
    "custom:sentence_alphabet": (
        [ALPHABET_STORY, ALPHABET_STORY.replace(". ", ".\n")],
        [
            ALPHABET_STORY.rsplit(" Zed", 1)[0],
            ALPHABET_STORY + " Again.",
            ALPHABET_STORY.replace("Cy", "Ky"),
        ],
    ),
    "custom:european_capitals_sort": (
        [CAPITALS, CAPITALS.replace("Reykjavik", "Reykjavík").replace(", ", ",\n")],
        [
            CAPITALS + ".",
            CAPITALS.replace("Prague", "Kyiv, Prague"),
            CAPITALS.replace("Oslo, Tallinn", "Tallinn, Oslo"),
            CAPITALS.replace(", Zagreb", " and Zagreb"),
            CAPITALS.replace(", ", "\n"),
        ],
    ),
    "custom:csv_city": (
        [CITY, CITY + "\n", CITY.replace("Paris", '"Paris, 2nd"')],
        [
            CITY.replace(",", ", "),
            CITY.replace("\n1,", "\n\n1,"),
            "```csv\n" + CITY + "\n```",
            CITY.rsplit("\n", 1)[0],
            CITY.replace("7,France,Paris,2007,21", "7,France,2007,21"),
        ],
    ),
    "custom:csv_special_character": (
        [PRODUCTS, PRODUCTS.replace(", ", ","), PRODUCTS.replace("Acme", '"Acme"')],
        [
            PRODUCTS.replace(chr(34), ""),
            PRODUCTS.replace('"Smith & Sons"', '"Smith and Sons"'),
            PRODUCTS.rsplit("\n", 1)[0],
            PRODUCTS.replace("ProductID", "Product ID"),
            PRODUCTS.replace("\n1,Tools,Acme,9.99,1", "\n1,Tools,9.99,1"),
        ],
    ),
    "custom:csv_quotes": (
        [STUDENTS, STUDENTS.replace("\t", "\t ")],
        [
            STUDENTS.replace('"Math"', "Math"),
            STUDENTS.replace('"StudentID"', "StudentID"),
            STUDENTS.replace("\t", ","),
            STUDENTS.rsplit("\n", 1)[0],
        ],
    ),
    "custom:date_format_list": (
        ["1796-04-12, 1805-12-02, 1815-06-18", "1805-12-02", "1769-01-31,1821-12-31"],
        [
            "1805-12-02, 1822-01-01",
            "The battles: 1805-12-02",
            "1805-13-02",
            "1805-02-30",
            "1805-12-02,",
            "1805/12/02",
            "1805-12-2",
        ],
    ),
}


def test_every_custom_id_has_cases_and_no_kwargs_in_the_data():
    assert set(CASES) == set(IDS)
    assert set(DATA) == set(IDS) - {"custom:character_reverse"}  # see the assets README
    for cid, kwargs_list in DATA.items():
        assert kwargs_list == [{}] * len(kwargs_list), cid
        assert custom.SPECS[cid] == {}


@pytest.mark.parametrize("cid", IDS)
def test_satisfying_and_violating_responses(cid):
    good, bad = CASES[cid]
    for kw in DATA.get(cid, [{}]):
        kw = check_spec(cid, kw)
        for text in good:
            assert verify(cid, kw, text), (cid, text[:300])
            assert verify(f"ifbench/{cid}", kw, text, loose=True)
        for text in bad:
            assert not verify(cid, kw, text), (cid, text[:300])
            assert not custom.CHECKS[cid](text, kw)


@pytest.mark.parametrize("cid", IDS)
def test_empty_text_fails_and_never_raises(cid):
    for text in ["", " ", "\n\n", "\r", '"', "\t\t\t\t", "Question", "Zimbabwe"]:
        assert custom.CHECKS[cid](text, {}) is False
        assert verify_outcome(cid, {}, text, loose=True).status == "ok"


def test_multiples_loose_mode_drops_an_intro_line():
    text = "Here are the multiples of 7 between 10 and 50:\n14, 21, 28, 35, 42, 49"
    assert not verify("custom:multiples", {}, text)
    assert verify("custom:multiples", {}, text, loose=True)


def test_mcq_labels_and_options():
    # "Question N" with . ) : ; or nothing after the number; the label must open the response.
    for mark in (".", ")", ";", ""):
        assert custom.mcq_count_length(_mcq().replace(":", mark), {})
    assert not custom.mcq_count_length(" " + _mcq(), {})
    assert verify(
        "custom:mcq_count_length", {}, _mcq().replace("Question", "**Question"), loose=True
    )
    # Lowercase options count; "(A)" does not; lines after the options are ignored.
    assert custom.mcq_count_length(_mcq(options="abcde"), {})
    assert not custom.mcq_count_length(_mcq().replace("A) ", "(A) "), {})
    assert custom.mcq_count_length(_mcq().replace("E) option E", "E) option E\nAnswer: B"), {})


def test_reverse_newline_only_checks_order_not_countries():
    """The reference checks 52+ descending lines from a "Zimbabwe" line, not the names."""
    lines = ["Zimbabwe"] + [f"Y{i:03d}" for i in range(999, 948, -1)]
    assert len(lines) == 52 and custom.reverse_newline("\n".join(lines), {})
    assert not custom.reverse_newline("\n".join(lines[:51]), {})
    # Case-sensitive "Zimbabwe"; code point order (an uppercase name sorts below lowercase).
    assert not custom.reverse_newline("\n".join(AFRICA).replace("Zimbabwe", "ZIMBABWE"), {})
    # Diacritics are folded before comparing: "São Tomé" sorts as "Sao Tome".
    assert "São Tomé and Príncipe" in AFRICA and custom.reverse_newline("\n".join(AFRICA), {})


def test_word_reverse_punkt_condition_always_holds():
    """The reference also needs Punkt to keep the reversed text whole: always true (no . ? !)."""

    @settings(max_examples=200, deadline=None, derandomize=True)
    @given(st.text(max_size=80))
    def check(text):
        words = text.lower().strip().translate(str.maketrans("", "", custom._PUNCT)).split()
        joined = " ".join(reversed(words))
        if joined:
            assert joined in nlp.sentences(joined)

    check()
    assert custom.word_reverse("Eagles piebald", {})  # a substring, as in the reference


def test_sentence_alphabet_uses_punkt_sentences():
    # "Dr." is an abbreviation to Punkt, not a sentence end: "Cy met Dr. Dee at home." is one
    # sentence (a split at ". " would see C and D), so the story has 25.
    merged = ALPHABET_STORY.replace("Cy walked on. Dee walked on.", "Cy met Dr. Dee at home.")
    assert len(nlp.sentences(merged)) == 25 and not custom.sentence_alphabet(merged, {})
    # The first character of the first word: a leading quote fails.
    assert not custom.sentence_alphabet('"' + ALPHABET_STORY, {})


def test_european_capitals_is_the_reference_list():
    """Kyiv (50.45 N) is missing from the reference's answer; we keep its list."""
    assert custom._CAPITALS[0] == "Reykjavik" and len(custom._CAPITALS) == 27
    assert "Kyiv" not in custom._CAPITALS and "Kiev" not in custom._CAPITALS


def test_csv_errors_are_not_followed():
    # A bare "\r" in an unquoted field and an over-long field make csv raise (the reference
    # crashes); both are "not followed" here.
    assert not custom.csv_city(CITY.replace("Paris", "Pa\rris"), {})
    big = CITY.replace("Paris", '"' + "x" * 200_000 + '"', 1)
    assert not custom.csv_city(big, {})
    assert not custom.csv_quotes(STUDENTS.replace('"Math"', ""), {})  # IndexError there


def test_csv_special_character_returns_at_the_first_special_field():
    """Rows after the first special quoted field are not checked (the reference returns)."""
    ragged = PRODUCTS.replace("\n14,Tools,Acme,9.99,14", "\n14,Tools")
    assert custom.csv_special_character(ragged, {})
    ragged_before = PRODUCTS.replace("\n2,Tools,Acme,9.99,2", "\n2,Tools")
    assert not custom.csv_special_character(ragged_before, {})


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.text(alphabet=st.sampled_from('"ab1 _!\n\t-é.,'), max_size=12))
def test_special_quoted_field_equals_the_reference_regex(field):
    assert custom._special_quoted(field) == bool(re.match(r'".*[^\d\w\s].*"', field))


def test_date_format_list_keeps_the_reference_calendar():
    """Month 00, day 00 and 29 February in any year pass; any Unicode digits count."""
    assert custom.date_format_list("1805-00-00, 1801-02-29", {})
    assert custom.date_format_list("１８０５-１２-０２", {})
    assert not custom.date_format_list("1805-04-31", {})


@pytest.mark.parametrize("cid", IDS)
def test_adversarial_100k_texts_are_fast(cid):
    texts = [
        '"' + "!" * 100_000,
        "ProductID,Category,Brand,Price,Stock\n" + ('1,"' + "a!" * 5000 + ",x,1,2\n") * 14,
        ("Question 1.\n" + "A) x\n" * 5) * 5000,
        "1" * 100_000,
        "Zimbabwe\n" * 10_000,
        "1805-12-02, " * 8_000,
        "A b. " * 20_000,
    ]
    for text in texts:
        start = time.perf_counter()
        custom.CHECKS[cid](text, {})
        assert time.perf_counter() - start < 1.0, (cid, text[:40])
