"""IFBench's `custom` constraints: one fixed task each, no kwargs (see the package docstring).

Each check gives the verdict of the reference's `check_following` (allenai/IFBench
`instructions.py`), quirks included; where the reference would crash (a csv error, an empty
field) the verdict is False, and where its regex is quadratic we test the same condition in
linear time. Every decision is written in SEMANTICS_custom.md beside this file.
"""

from __future__ import annotations

import csv
import io
import itertools
import re
import string
import unicodedata
from collections.abc import Callable

from ifrl_jax.verifiers import nlp

Check = Callable[[str, dict], bool]

_PUNCT = string.punctuation  # the ASCII punctuation the reference strips
_NO_PUNCT = str.maketrans("", "", _PUNCT)
_DIGITS = re.compile(r"\d+")
_MULTIPLES = tuple(str(i) for i in range(14, 51, 7))  # 14, 21, ..., 49
_QUESTION_SPLIT = re.compile(r"\n*(?:Question \d+[\.|\):;]?\s*)")
_OPTION = re.compile(r"[A-Ea-e][\.|\)]\s*\w")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")  # fullmatch on a stripped piece (the reference's ^...$)
_SPECIAL = re.compile(r"[^\d\w\s]")
_PRODUCT_HEADER = re.compile(
    r'^(ProductID|"ProductID"),[ \t]*(Category|"Category"),[ \t]*(Brand|"Brand"),'
    r'[ \t]*(Price|"Price"),[ \t]*(Stock|"Stock")$'
)
_STUDENT_HEADER = re.compile(
    r'^(StudentID|"StudentID")\t *(Subject|"Subject")\t *(Grade|"Grade")\t *'
    r'(Semester|"Semester")\t *(Score|"Score")$'
)
_CITY_HEADER = ["ID", "Country", "City", "Year", "Count"]
# The reference's answer, latitude > 45 degrees, highest first (Kyiv, at 50.45, is missing).
_CAPITALS = (
    "Reykjavik Helsinki Oslo Tallinn Stockholm Riga Moscow Copenhagen Vilnius Minsk Dublin "
    "Berlin Amsterdam Warsaw London Brussels Prague Luxembourg Paris Vienna Bratislava Budapest "
    "Vaduz Chisinau Bern Ljubljana Zagreb"
).split()
_MONTH_DAYS = {m: 31 for m in (1, 3, 5, 7, 8, 10, 12)} | {m: 30 for m in (4, 6, 9, 11)} | {2: 29}


def _ascii_fold(text: str) -> str:
    """NFKD, then every non-ASCII code point dropped ("São Tomé" -> "Sao Tome")."""
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")


def _csv_rows(text: str, limit: int, **fmt) -> list[list[str]] | None:
    """The first `limit` rows `csv.reader` reads from `text`; None where it raises.

    The reference reads every row and crashes on a csv error (a bare "\\r" inside an unquoted
    field, a field over `csv.field_size_limit()`); that is "not followed" here. Rows past
    `limit` cannot change a verdict that needs fewer rows, so they are not read.
    """
    try:
        return list(itertools.islice(csv.reader(io.StringIO(text), **fmt), limit))
    except csv.Error:
        return None


# --- counting and lists ---------------------------------------------------------------------


def multiples(text: str, kw: dict) -> bool:
    """The numbers (runs of \\d) in the text are exactly 14, 21, 28, 35, 42, 49, in order.

    Any other number (a restated "10 to 50", a list index) fails, as in the reference.
    """
    found = [m.group() for m in itertools.islice(_DIGITS.finditer(text), len(_MULTIPLES) + 1)]
    return tuple(found) == _MULTIPLES


def date_format_list(text: str, kw: dict) -> bool:
    """Comma-separated YYYY-MM-DD dates, years 1769-1821, with the reference's loose calendar.

    Month 00 and day 00 pass, February allows 29 in any year, and any Unicode digits count
    (`\\d` and `int` accept them), as in the reference.
    """
    for piece in text.strip().split(","):
        date = piece.strip()
        if not _DATE.fullmatch(date):
            return False
        year, month, day = (int(p) for p in date.split("-"))
        if not 1769 <= year <= 1821 or month > 12 or day > _MONTH_DAYS.get(month, 99):
            return False
    return True


def european_capitals_sort(text: str, kw: dict) -> bool:
    """After ASCII folding, the comma-separated items are exactly the reference's 27 capitals."""
    items = [c.strip() for c in _ascii_fold(text).split(",") if c.strip()]
    return items == _CAPITALS


def reverse_newline(text: str, kw: dict) -> bool:
    """From the first line containing "Zimbabwe", at least 52 non-empty lines in descending order.

    Lines are stripped of ASCII punctuation and spaces (not tabs or "\\r"); blank ones are
    dropped; the order is that of the ASCII-folded lines by code point, ties allowed.
    """
    strip = _PUNCT + " "
    lines = [s for s in (line.strip(strip) for line in text.split("\n")) if s]
    start = next((i for i, line in enumerate(lines) if "Zimbabwe" in line), None)
    if start is None or len(lines) - start < 52:
        return False
    folded = [_ascii_fold(line) for line in lines[start:]]
    return all(a >= b for a, b in zip(folded, folded[1:]))


# --- sentences and words --------------------------------------------------------------------


def sentence_alphabet(text: str, kw: dict) -> bool:
    """Exactly 26 Punkt sentences whose first characters, lowercased, are a, b, ..., z.

    The sentences are `nltk.sent_tokenize`'s (`nlp.sentence_tokenizer`), read lazily: a text
    is judged once a 27th sentence shows up.
    """
    spans = list(itertools.islice(nlp.sentence_tokenizer().span_tokenize(text), 27))
    if len(spans) != 26:
        return False
    for letter, (start, end) in zip(string.ascii_lowercase, spans):
        words = text[start:end].split()
        if not words or words[0].lower()[0] != letter:
            return False
    return True


def word_reverse(text: str, kw: dict) -> bool:
    """With ASCII punctuation removed and the word order reversed, "bald eagle" is a substring.

    The reference also asks that Punkt keep the reversed text as one sentence; with every
    ASCII punctuation mark gone that always holds (Punkt ends sentences only at . ? !).
    """
    words = text.lower().strip().translate(_NO_PUNCT).split()
    return "bald eagle" in " ".join(reversed(words))


def character_reverse(text: str, kw: dict) -> bool:
    """ "elgae dlab" ("bald eagle" reversed) is a substring of the lowercased text."""
    return "elgae dlab" in text.lower()


def mcq_count_length(text: str, kw: dict) -> bool:
    """4 questions ("Question N" labels), 5 options each, question texts strictly longer each time.

    The text must start with "Question" (anything before it is an explanation). Option lines
    match `[A-Ea-e][.|)]\\s*\\w` after strip(); a question's text is its lines before the first
    option, each stripped and joined by spaces.
    """
    if not text.startswith("Question"):
        return False  # the reference: text[text.find("Question"):] must be the whole text
    pieces = _QUESTION_SPLIT.split(text)
    if pieces[0] == "":
        pieces = pieces[1:]
    questions = [q.strip() for q in pieces if q.strip()]
    if len(questions) != 4:
        return False
    lengths = []
    for question in questions:
        before_options, options = [], 0
        for line in question.split("\n"):
            if _OPTION.match(line.strip()):
                options += 1
            elif not options:
                before_options.append(line.strip())
        if options != 5:
            return False
        lengths.append(len(" ".join(before_options).strip()))
    return all(a < b for a, b in zip(lengths, lengths[1:]))


# --- CSV ------------------------------------------------------------------------------------


def _special_quoted(field: str) -> bool:
    """`re.match(r'".*[^\\d\\w\\s].*"', field)` in linear time.

    The pattern needs a '"' first, then, on the same line, a character outside \\d\\w\\s
    followed later on that line by a '"': i.e. such a character before the line's last '"'.
    """
    if not field.startswith('"'):
        return False
    line = field[1:].split("\n", 1)[0]
    return _SPECIAL.search(line, 0, max(line.rfind('"'), 0)) is not None


def csv_city(text: str, kw: dict) -> bool:
    """`csv.reader` reads exactly 8 rows: the header ID,Country,City,Year,Count and 7 of 5 fields.

    Blank lines are rows (empty ones), so they fail; so does a space after a comma.
    """
    rows = _csv_rows(text, 9)
    if rows is None or len(rows) != 8 or rows[0] != _CITY_HEADER:
        return False
    return all(len(row) == 5 for row in rows[1:])


def csv_special_character(text: str, kw: dict) -> bool:
    """Product header, 15 rows, and a field of the form "..special.." (the reference's order).

    Every '"' is tripled before parsing (so quoted fields keep their quotes). Rows are checked
    in order: one without 5 fields fails, and the first row with a quoted field holding a
    character outside \\d\\w\\s passes, whatever the rows after it hold (the reference returns
    early).
    """
    if not _PRODUCT_HEADER.match(text.split("\n", 1)[0].strip()):
        return False
    rows = _csv_rows(text.replace('"', '"""'), 16)
    if rows is None or len(rows) != 15:
        return False
    for row in rows[1:]:
        if len(row) != 5:
            return False
        if any(_special_quoted(field) for field in row):
            return True
    return False


def csv_quotes(text: str, kw: dict) -> bool:
    """Tab-separated student header and 3 rows, 4 rows of 5 fields, every field in double quotes.

    Every '"' is tripled before parsing; each field, stripped, must start and end with '"'. A
    blank field (the reference raises IndexError on it) is not quoted.
    """
    if not _STUDENT_HEADER.match(text.split("\n", 1)[0].strip()):
        return False
    rows = _csv_rows(text.replace('"', '"""'), 5, delimiter="\t")
    if rows is None or len(rows) != 4:
        return False
    for row in rows:
        if len(row) != 5:
            return False
        for field in row:
            s = field.strip()
            if not (s and s[0] == '"' and s[-1] == '"'):
                return False
    return True


CHECKS: dict[str, Check] = {
    "custom:csv_city": csv_city,
    "custom:csv_quotes": csv_quotes,
    "custom:csv_special_character": csv_special_character,
    "custom:date_format_list": date_format_list,
    "custom:european_capitals_sort": european_capitals_sort,
    "custom:mcq_count_length": mcq_count_length,
    "custom:multiples": multiples,
    "custom:reverse_newline": reverse_newline,
    "custom:sentence_alphabet": sentence_alphabet,
    "custom:word_reverse": word_reverse,
    "custom:character_reverse": character_reverse,
}
"""Bare IFBench id -> check(text, kwargs) -> bool (kwargs validated against SPECS)."""

SPECS: dict[str, dict[str, str]] = {cid: {} for cid in CHECKS}
"""Bare IFBench id -> {required kwarg name: kind}: the custom tasks take no kwargs."""
