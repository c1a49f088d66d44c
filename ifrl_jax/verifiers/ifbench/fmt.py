"""IFBench's `format:` constraints (see the package docstring for the interface).

Each check gives the verdict of the reference's `check_following` on the raw response, quirks
included (the blank-response rule of the strict wrapper is applied by the caller). Where the
reference is surprising, SEMANTICS_format_repeat.md says what it does and what we do; briefly:
  * parentheses / quotes: a bracket (quote) parser that resets on a mismatched closer; ASCII
    quotes only, so apostrophes are quotes and curly quotes are not.
  * options: "a), b), ..." options need the response to equal one option exactly (no
    stripping); other options compare after stripping ASCII punctuation and spaces only.
  * list: the separator may occur anywhere, twice; `sub-bullets`: text without `*` passes.
  * line_indent: the reference deletes blank lines while iterating over them, which skips the
    line after each deleted one; we reproduce the resulting list exactly, in linear time.
  * thesis: `<em>` is sliced as if it were `<i>`, so `<em></em>` alone passes.
  * no_bullets_bullets: after a blank line, or once bullets begin, any non-bullet line fails.
  * title_case: every alphabetic token must be capitalised, minor words and "n't" included.
  * emoji: `emoji.is_emoji` on single characters, so flags and keycaps are not emoji.
"""

from __future__ import annotations

import functools
import re
import string
from collections import Counter
from collections.abc import Callable

from ifrl_jax.verifiers import nlp

Check = Callable[[str, dict], bool]

_NO_PUNCT = str.maketrans("", "", string.punctuation)
_BRACKETS = re.compile(r"[()\[\]{}]")
_OPENER = {")": "(", "]": "[", "}": "{"}
_QUOTES = re.compile("[\"']")
_LETTER_OPTIONS = re.compile(r"\W*[aA]\W*[bB]\W*[cC]\W*")
_OPTION_STRIP = string.punctuation + " "
_QUOTE_TAIL = string.digits + string.punctuation.replace('"', "")
_WORD_START_LETTER = re.compile(r"(?<!\w)[^\W\d_]")
_SPLITS_INSIDE_WORD = re.compile(r"'|(?i:cannot|gimme|gonna|gotta|lemme|wanna)")
_TEMPLATE = ("My Answer:", "My Conclusion:", "Future Outlook:")


@functools.cache
def _is_emoji() -> Callable[[str], bool]:
    """`emoji.is_emoji`, imported on first use."""
    import emoji

    return emoji.is_emoji


def parentheses(text: str, kw: dict) -> bool:
    """Some matching closer pops a bracket stack at least 5 deep.

    `(`, `[`, `{` push; a closer that matches the top pops it, and passes if the stack held 5 or
    more; any other closer empties the stack. Brackets of mixed kinds nest together, and the
    outer levels need not be closed.
    """
    stack: list[str] = []
    for c in _BRACKETS.findall(text):
        if c in "([{":
            stack.append(c)
        elif stack and stack[-1] == _OPENER[c]:
            if len(stack) >= 5:
                return True
            stack.pop()
        else:
            stack.clear()
    return False


def quotes(text: str, kw: dict) -> bool:
    """ASCII `"` and `'` parsed as nested quotes: some close leaves 3 levels below the deepest.

    A quote character equal to the innermost open one closes it, otherwise it opens a level
    (so levels alternate by construction). Passes once the depth falls 3 below the deepest
    depth reached so far. Apostrophes count as single quotes; curly quotes are ignored.
    """
    stack: list[str] = []
    deepest = 0
    for c in _QUOTES.findall(text):
        if stack and stack[-1] == c:
            stack.pop()
            if deepest - len(stack) >= 3:
                return True
        else:
            stack.append(c)
            deepest = max(deepest, len(stack))
    return False


def options(text: str, kw: dict) -> bool:
    """The response is one of the options listed in the `options` string.

    The options are split on "/" if present, else on the substring "or", else on ",", and
    each is stripped. Letter options ("a), b), c), d)") must equal the raw response exactly;
    others compare lowercased, with ASCII punctuation and spaces (not newlines) stripped.
    """
    spec = kw["options"]
    sep = "/" if "/" in spec else "or" if "or" in spec else ","
    choices = [o.strip() for o in spec.split(sep)]
    if _LETTER_OPTIONS.match(spec) is not None:
        return text in choices
    value = text.strip(_OPTION_STRIP).lower()
    return any(o.strip(_OPTION_STRIP).lower() == value for o in choices)


def newline(text: str, kw: dict) -> bool:
    """Without ASCII punctuation, the count of non-empty lines equals the count of words.

    Lines are split on "\\n" only and a line of spaces is not empty, so "a b\\n \\nc" passes.
    """
    value = text.translate(_NO_PUNCT).strip()
    lines = sum(1 for line in value.split("\n") if line)
    return lines == len(value.split())


def emoji_sentences(text: str, kw: dict) -> bool:
    """Every Punkt sentence ends with an emoji, or the next sentence starts with one.

    A sentence is taken without ASCII punctuation and stripped; it fails if that is empty.
    Its last or second-to-last character must be an emoji (`emoji.is_emoji` on one
    character); otherwise the next sentence, prepared the same way, must be non-empty and
    start with one. The last sentence has no such fallback.
    """
    is_emoji = _is_emoji()
    sentences = nlp.sentences(text)
    for i, sentence in enumerate(sentences):
        bare = sentence.translate(_NO_PUNCT).strip()
        if not bare:
            return False
        if is_emoji(bare[-1]) or is_emoji(bare[-2] if len(bare) > 1 else bare[-1]):
            continue
        if i == len(sentences) - 1:
            return False
        following = sentences[i + 1].translate(_NO_PUNCT).strip()
        if not following or not is_emoji(following[0]):
            return False
    return True


def _kept_lines(text: str) -> list[str]:
    """The lines left by the reference's "remove blank lines while iterating over them" loop.

    Deleting from the list being iterated makes the iterator skip the line after each blank
    one it deletes, so some blank lines stay. `list.remove` deletes the first equal line, which
    is never after the current one, so the lines visited do not depend on which copy goes:
    walking the original lines, a blank line is visited and the next one skipped. The result
    is the lines minus, for each blank string, its first k copies, k = how often it was
    visited. Equal, in linear time, to the reference's quadratic loop.
    """
    lines = text.split("\n")
    visited: Counter[str] = Counter()
    k = 0
    while k < len(lines):
        if lines[k].strip():
            k += 1
        else:
            visited[lines[k]] += 1
            k += 2
    kept = []
    for line in lines:
        if visited[line] > 0:
            visited[line] -= 1
        else:
            kept.append(line)
    return kept


def line_indent(text: str, kw: dict) -> bool:
    """Each kept line is indented by more leading spaces than the one before (tabs are 0).

    The kept lines are those of `_kept_lines`: two blank lines in a row leave one blank line,
    with no indent, so they break the stairs.
    """
    indents = [len(line) - len(line.lstrip(" ")) for line in _kept_lines(text)]
    return all(a < b for a, b in zip(indents, indents[1:]))


def quote_unquote(text: str, kw: dict) -> bool:
    """No two ASCII double quotes are adjacent once whitespace is removed, nor is one last.

    The literal `'"'` is deleted first. "Last" ignores trailing digits and ASCII punctuation
    other than `"`. Text without quotes passes; curly quotes are ignored.
    """
    value = "".join(text.replace("'\"'", "").split())
    if '""' in value:
        return False
    return not value.rstrip(_QUOTE_TAIL).endswith('"')


def special_list(text: str, kw: dict) -> bool:
    """The separator `sep` occurs at least twice, anywhere (not necessarily at line starts)."""
    return text.count(kw["sep"]) >= 2


def thesis(text: str, kw: dict) -> bool:
    """A non-blank italic thesis in HTML, followed by non-blank text.

    From the first `<i>` (or, if none, the first `<em>`), up to the first `</i>` after it (or,
    if none, the first `</em>`). Both tags are cut as if 3 and 4 characters long, so with
    `<em>`/`</em>` the thesis keeps a ">" and so does the text after: `<em></em>` passes.
    """
    start = text.find("<i>")
    if start < 0:
        start = text.find("<em>")
        if start < 0:
            return False
    rest = text[start:]
    end = rest.find("</i>")
    if end < 0:
        end = rest.find("</em>")
        if end < 0:
            return False
    return bool(rest[3:end].strip()) and bool(rest[end + 4 :].strip())


def sub_bullets(text: str, kw: dict) -> bool:
    """After each `*`, a `-` occurs before the next `*` (or the end). No `*` at all passes."""
    return all("-" in piece for piece in text.split("*")[1:])


def no_bullets_bullets(text: str, kw: dict) -> bool:
    """At least 2 Punkt sentences, then at least 2 lines starting with `*`, nothing else.

    Lines are taken in order. A line starting with `*` (after strip) needs 2 sentences counted
    before it, and ends the prose part. A prose line adds its Punkt sentences; a blank one
    has none, which (as in the reference) also ends the prose part. A non-`*` line after the
    prose part ends fails, so a trailing newline after the bullets fails.
    """
    split = nlp.sentence_tokenizer().tokenize  # not `nlp.sentences`: keep its cache for texts
    prose = True
    sentences = 0
    bullets = 0
    for line in text.split("\n"):
        line = line.strip()
        if line.startswith("*"):
            if sentences < 2:
                return False
            prose = False
            bullets += 1
        elif prose:
            n = len(split(line)) if line else 0
            sentences += n
            prose = n > 0
        else:
            return False
    return bullets >= 2


def _title_token_ok(word: str) -> bool:
    """Whether one token passes the reference's title-case test (see `title_case`)."""
    head = word[0]
    if not head.isalpha() or not head.islower():
        return True
    tail = word[1:]
    return bool(tail) and not tail.islower() and not tail.isupper()


def _may_fail_title(sentence: str) -> bool:
    """False only if no token of `sentence` can fail `_title_token_ok` (then skip tokenizing).

    A failing token starts with a lowercase letter. The tokenizer keeps case, and it starts a
    token only after whitespace or a punctuation mark it splits off (all non-word characters),
    or inside a word at a contraction ("can|not", "gon|na", "do|n't", "'t|is", ...). So
    without an apostrophe or one of those contractions, a token can start with a lowercase
    letter only where the sentence has a lowercase letter that no word character precedes.
    """
    if _SPLITS_INSIDE_WORD.search(sentence):
        return True
    return any(m.group().islower() for m in _WORD_START_LETTER.finditer(sentence))


def title_case(text: str, kw: dict) -> bool:
    """Every `nltk.word_tokenize` token that starts with a letter is capitalised.

    Tokens not starting with a letter are skipped. A one-letter token must not be lowercase.
    A longer token fails if its first letter is lowercase and the rest is all lower or all
    upper case ("the", "n't", "iPHONE"); "iPhone", "McDonald" and "NASA" pass. Sentences
    that cannot hold a failing token (`_may_fail_title`) are not tokenized.
    """
    tokenize = nlp._word_tokenizer()
    for sentence in nlp.sentences(text):
        if _may_fail_title(sentence) and not all(map(_title_token_ok, tokenize(sentence))):
            return False
    return True


def output_template(text: str, kw: dict) -> bool:
    """The three labels of the template all occur, anywhere and in any order (case-sensitive)."""
    return all(label in text for label in _TEMPLATE)


def no_whitespace(text: str, kw: dict) -> bool:
    """No character of the text is whitespace (`str.isspace`)."""
    return not any(c.isspace() for c in text)


CHECKS: dict[str, Check] = {
    "format:parentheses": parentheses,
    "format:quotes": quotes,
    "format:options": options,
    "format:newline": newline,
    "format:emoji": emoji_sentences,
    "format:line_indent": line_indent,
    "format:quote_unquote": quote_unquote,
    "format:list": special_list,
    "format:thesis": thesis,
    "format:sub-bullets": sub_bullets,
    "format:no_bullets_bullets": no_bullets_bullets,
    "format:title_case": title_case,
    "format:output_template": output_template,
    "format:no_whitespace": no_whitespace,
}
"""Bare IFBench id -> check(text, kwargs) -> bool (kwargs validated against SPECS)."""

SPECS: dict[str, dict[str, str]] = {
    **{name: {} for name in CHECKS},
    "format:options": {"options": "str"},
    "format:list": {"sep": "str"},
}
"""Bare IFBench id -> {required kwarg name: kind}; kinds are those of the package's KINDS."""
