r"""Instruction synthesis: seed tasks + a constraint taxonomy -> multi-constraint training records.

`synthesize` draws, per seed task, `per_seed` different lists of min..max constraint ids (no two
conflicting, no id twice), their kwargs and texts, as training records (records.py's schema,
``prompt = seed.prompt + "".join(text + ". " for text in constraint)``); deterministic for a
seed. `load_seeds` reads upstream's seed_data.jsonl (``{"instruction", "input", "output"}`` per
line; seed prompt ``instruction + " " + input``), `load_taxonomy` a JSON taxonomy (shipped ones
and a walk-through: assets/instructions/)::

    {"hard": {"<hard id>": {"kwargs": {"<name>": <draw>, ...} | "fit", "text": <texts>}, ...},
     "soft": {"<soft id>": {"text": <texts>}, ...},
     "conflicts": [["<id>", "<id>"], ...], "description": "..."}

* <draw>: ``{"choice": [v, ...], "display": {"v": "shown in the text"}}`` (display optional);
  ``{"range": [lo, hi]}`` (an integer); ``{"sample": [v, ...], "size": [lo, hi]}`` (n distinct
  values, n in lo..hi); ``{"from_seed": "prompt"}`` (the seed prompt stripped, for
  ``prompt_to_repeat``); each uniform. Every kwarg the verifier takes is given, and every value
  a draw can give passes the verifier's kwargs spec (checked at load).
* ``"kwargs": "fit"`` (`FITS`: number_words): fitted to a reference response (the seed's output
  or the caller's `respond`): relation at even odds, "at least" max(5, 5*(n//5)) or "less than"
  5*(n//5 + 2) words for a reference of n words, so the reference satisfies it.
* <texts>: a string or a list (one drawn per record). Hard texts are ``str.format`` templates
  over the id's kwargs (lists show joined by ", "; ``{{``/``}}`` for braces); soft texts are
  literal, soft ids (verifiers.is_soft) take no kwargs.

Conflicts: ids that must never share a record: the pairs listed, and `CONTRADICTIONS`. A taxonomy
whose definitions contradict each other or the verifiers is a one-line `SynthesisError`
``path:line: ...`` naming the entry: an id defined twice, or conflicting with itself, a conflict
naming an id not defined, an unknown hard id or a soft id that is not one, a draw that can give
a kwarg outside the verifier's spec (or a missing/unexpected kwarg), a text naming a kwarg the
id lacks, a soft id without text.

Draws, from one `np.random.default_rng(seed)` stream, per record: K (``choice(counts, p=)``), K
entries (``choice(n, K, replace=False)``; hard then soft, file order), redrawn with a new K when
two conflict or the seed has that list already; per entry its kwargs in file order (choice:
``integers(len)``; range: ``integers(lo, hi + 1)``; sample: that, then ``choice(len, n,
replace=False)``) and, with several texts, one (``integers(len)``); then "fit" (``random()``).
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import json
import json.decoder
import json.scanner
import math
import re
import string
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ifrl_jax import records, verifiers
from ifrl_jax.errors import UserError, json_object_line

_LOW, _CAP, _FREQ = (f"change_case:{x}" for x in ("english_lowercase", "english_capital",
                                                   "capital_word_frequency"))  # fmt: skip
_LANG = "language:response_language"
CONTRADICTIONS: frozenset[frozenset[str]] = frozenset(
    frozenset(p) for p in [(_LOW, _CAP), (_LOW, _FREQ), (_CAP, _FREQ), (_LOW, _LANG), (_CAP, _LANG)]
)
"""Hard id pairs that no response satisfies for some kwargs (IFEval's INSTRUCTION_CONFLICTS
has them too); they never share a record, whatever the taxonomy lists."""
_MAX_MISSES = 1_000_000  # draws that conflict or repeat, per seed: the arguments ask too much
_line = lambda node, parent: getattr(node, "line", getattr(parent, "line", 1))
_DRAW_KEYS = {"choice": ("display",), "range": (), "sample": ("size",), "from_seed": ()}


class SynthesisError(UserError):
    """Bad seed file, taxonomy or argument; the message names file:line or the argument."""


@dataclasses.dataclass(frozen=True)
class Seed:
    """One seed task: `source` is "file:line", `meta` the row's other fields (e.g. a title)."""

    instruction: str
    input: str = ""
    output: str = ""
    source: str = ""
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def prompt(self) -> str:
        """The seed prompt, upstream's ``instruction + " " + input``."""
        return self.instruction + " " + self.input


@dataclasses.dataclass(frozen=True)
class Draw:
    """How one kwarg is drawn (the module docstring); `line`: its line in the file."""

    kind: str
    values: tuple = ()
    lo: int = 0
    hi: int = 0
    display: tuple[tuple[str, str], ...] = ()
    line: int = 0

    def __call__(self, rng: np.random.Generator, seed: Seed) -> Any:
        if self.kind == "choice":
            return _plain(self.values[int(rng.integers(len(self.values)))])
        if self.kind == "from_seed":
            return seed.prompt.strip()
        n = int(rng.integers(self.lo, self.hi + 1))
        if self.kind == "range":
            return n
        return [_plain(self.values[i]) for i in rng.choice(len(self.values), n, replace=False)]

    def candidates(self) -> list:
        """Values that cover what the draw can give (checked against the verifier's spec)."""
        if self.kind == "sample":
            return [[v] for v in self.values] + [list(self.values[: self.hi])]
        return {"choice": list(self.values), "range": [self.lo, self.hi]}.get(self.kind, ["a"])


@dataclasses.dataclass(frozen=True)
class Entry:
    """One id of a taxonomy: its kwargs draws ((name, Draw) in file order; none for soft and
    fitted ids), whether they are fitted (`FITS`), its texts, and its line in the file."""

    id: str
    hard: bool
    kwargs: tuple[tuple[str, Draw], ...]
    fit: bool
    texts: tuple[str, ...]
    line: int

    def render(self, template: str, kwargs: dict[str, Any]) -> str:
        """The text: `template` with `kwargs` filled in (soft texts are literal)."""
        if not self.hard:
            return template
        display = {name: dict(d.display) for name, d in self.kwargs}
        return template.format_map({k: _shown(v, display.get(k, {})) for k, v in kwargs.items()})


@dataclasses.dataclass(frozen=True)
class Taxonomy:
    """A loaded taxonomy: its entries (hard then soft, file order) and its conflict pairs."""

    path: str
    entries: tuple[Entry, ...]
    conflicts: frozenset[frozenset[str]]


def _fit_number_words(reference: str, rng: np.random.Generator) -> dict[str, Any]:
    n = len(re.findall(r"\w+", reference))  # IFEval's count_words: RegexpTokenizer(r"\w+")
    if rng.random() < 0.5:
        return {"relation": "at least", "num_words": max(5, (n // 5) * 5)}
    return {"relation": "less than", "num_words": (n // 5 + 2) * 5}


FITS: dict[str, Callable[..., dict]] = {"length_constraints:number_words": _fit_number_words}
"""Hard id -> fit(reference response, rng) -> kwargs, for ``"kwargs": "fit"``."""


def _plain(value: Any) -> Any:
    """A parsed JSON value as plain lists and dicts (no line-carrying subclasses), copied."""
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return {str(k): _plain(v) for k, v in value.items()} if isinstance(value, dict) else value


def _shown(value: Any, display: dict[str, str]) -> str:
    if isinstance(value, list):
        return ", ".join(_shown(v, display) for v in value)
    return display.get(str(value), str(value))


_Obj = type("_Obj", (dict,), {"line": 0})  # JSON objects and arrays that know their line
_Arr = type("_Arr", (list,), {"line": 0})


def _parse_json(text: str, path: str) -> Any:
    """json.loads, but objects and arrays carry `.line`, and a key repeated is an error."""
    newlines = [i for i, c in enumerate(text) if c == "\n"]

    def parse_object(s_and_end, strict, scan_once, _hook, _pairs_hook, memo):
        pairs, end = json.decoder.JSONObject(s_and_end, strict, scan_once, None, list, memo)
        obj = _Obj()
        obj.line = bisect.bisect_left(newlines, s_and_end[1] - 1) + 1
        for key, value in pairs:
            if key in obj:
                line = getattr(value, "line", obj.line)
                raise SynthesisError(f"{path}:{line}: key {key!r} appears twice in one object")
            obj[key] = value
        return obj, end

    def parse_array(s_and_end, scan_once):
        values, end = json.decoder.JSONArray(s_and_end, scan_once)
        arr = _Arr(values)
        arr.line = bisect.bisect_left(newlines, s_and_end[1] - 1) + 1
        return arr, end

    decoder = json.JSONDecoder()
    decoder.parse_object, decoder.parse_array = parse_object, parse_array
    decoder.scan_once = json.scanner.py_make_scanner(decoder)  # the C scanner takes no hooks
    try:
        return decoder.decode(text)
    except json.JSONDecodeError as e:
        raise SynthesisError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None


def load_seeds(path: str) -> list[Seed]:
    """Reads seed tasks, in file order, from JSONL: ``{"instruction", "input", "output", ...}``.

    Args:
      path: the file (blank lines are skipped; input and output may be absent).

    Raises:
      SynthesisError: ``path:line: ...``: not a JSON object, no non-blank instruction, a
        non-string input or output, a task (instruction + input) seen before; no seeds at all.
    """
    seeds, first = [], {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            row = json_object_line(line, path, n, SynthesisError)
            if not isinstance(row.get("instruction"), str) or not row["instruction"].strip():
                raise SynthesisError(f"{path}:{n}: 'instruction' is missing or blank")
            if not all(isinstance(row.get(k) or "", str) for k in ("input", "output")):
                raise SynthesisError(f"{path}:{n}: 'input' and 'output' must be strings")
            meta = {k: v for k, v in row.items() if k not in ("instruction", "input", "output")}
            seed = Seed(row["instruction"], row.get("input") or "", row.get("output") or "",
                        f"{path}:{n}", meta)  # fmt: skip
            if seed.prompt in first:
                raise SynthesisError(f"{path}:{n}: the same task as line {first[seed.prompt]}")
            first[seed.prompt] = n
            seeds.append(seed)
    if not seeds:
        raise SynthesisError(f"{path}: no seed tasks")
    return seeds


def load_taxonomy(path: str) -> Taxonomy:
    """Reads and validates a taxonomy file (format: the module docstring).

    Args:
      path: the JSON file.

    Raises:
      SynthesisError: one line, ``path:line: ...``: the first bad entry and what is wrong.
    """
    with open(path, encoding="utf-8") as f:
        root = _parse_json(f.read(), path)
    if not isinstance(root, dict):
        raise SynthesisError(f"{path}:1: expected a JSON object with 'hard', 'soft', 'conflicts'")
    _check_keys(path, root, ("description", "hard", "soft", "conflicts"), "the taxonomy")
    entries, defined = [], {}
    for section in ("hard", "soft"):
        body = root.get(section, _Obj())
        if not isinstance(body, dict):
            raise SynthesisError(f"{path}:{_line(body, root)}: {section!r} must be an object")
        for cid, spec in body.items():
            entry = _entry(path, cid, spec, hard=section == "hard", line=_line(spec, body))
            key = verifiers.ifbench_id(cid) or cid  # bare and "ifbench/" name the same check
            if key in defined:
                raise SynthesisError(f"{path}:{entry.line}: {cid!r} is defined twice (also line "
                                     f"{defined[key]})")  # fmt: skip
            defined[key] = entry.line
            entries.append(entry)
    if not entries:
        raise SynthesisError(f"{path}:{root.line}: no constraint ids ('hard', 'soft' are empty)")
    node, ids, conflicts = root.get("conflicts", []), {e.id for e in entries}, set()
    if not isinstance(node, list):
        raise SynthesisError(f"{path}:{_line(node, root)}: 'conflicts' must be a list of pairs")
    for pair in node:
        where = f"{path}:{_line(pair, node)}"
        if not (isinstance(pair, list) and len(pair) == 2 and all(type(x) is str for x in pair)):
            raise SynthesisError(f"{where}: a conflict is a pair of ids [id, id], got {pair!r}")
        if pair[0] == pair[1]:
            raise SynthesisError(f"{where}: {pair[0]!r} conflicts with itself (ids never repeat "
                                 "in a record; a conflict pairs two different ids)")  # fmt: skip
        unknown = [cid for cid in pair if cid not in ids]
        if unknown:
            raise SynthesisError(f"{where}: conflict names {unknown[0]!r}, not an id of this file")
        conflicts.add(frozenset(pair))
    return Taxonomy(path, tuple(entries), frozenset(conflicts))


def _check_keys(path: str, obj: dict, allowed: Sequence[str], what: str) -> None:
    for key in obj:
        if key not in allowed:
            raise SynthesisError(f"{path}:{_line(obj[key], obj)}: unknown key {key!r} in {what} "
                                 f"(expected one of {list(allowed)})")  # fmt: skip


def _entry(path: str, cid: str, spec: Any, *, hard: bool, line: int) -> Entry:
    """One taxonomy entry, validated against the verifiers."""

    def fail(message: str, node: Any = None) -> None:
        raise SynthesisError(f"{path}:{getattr(node, 'line', line)}: {cid!r}: {message}")

    if not isinstance(spec, dict):
        fail(f"expected an object with {'kwargs and text' if hard else 'text'}, got {spec!r}")
    if hard and not verifiers.is_hard(cid):
        fail("not a hard id" + ("; it is a soft id" if verifiers.is_soft(cid) else ""))
    if not hard and not verifiers.is_soft(cid):
        prefixes = list(verifiers.SOFT_PREFIXES)
        why = "it is a hard id" if verifiers.is_hard(cid) else f"not 'soft' nor in {prefixes}"
        fail(f"not a soft id ({why})")
    _check_keys(path, spec, ("kwargs", "text") if hard else ("text",), repr(cid))
    texts = [spec["text"]] if isinstance(spec.get("text"), str) else spec.get("text")
    if not texts or not isinstance(texts, list):
        fail("has no text (give 'text': a string or a non-empty list of strings)", texts)
    if not all(isinstance(t, str) and t.strip() for t in texts):
        fail("every text must be a non-blank string", texts)
    if not hard:
        return Entry(cid, False, (), False, tuple(texts), line)
    node, draws = spec.get("kwargs", {}), []
    if node == "fit" and cid not in FITS:
        fail(f"'kwargs': \"fit\" is available only for {sorted(FITS)}", spec)
    elif isinstance(node, dict):
        draws = [(name, _draw(d, lambda m, n=name, d=d: fail(f"kwarg {n!r}: {m}", d)))
                 for name, d in node.items()]  # fmt: skip
    elif node != "fit":
        fail("'kwargs' must be an object of kwarg name -> draw, or \"fit\"", spec)
    entry = Entry(cid, True, tuple(draws), node == "fit", tuple(texts), line)
    probe = FITS[cid]("", np.random.default_rng(0)) if entry.fit else _probe(path, entry)
    for t in texts:
        try:
            fields = {f for _, f, _, _ in string.Formatter().parse(t) if f is not None}
            unknown = sorted(fields - set(probe))
            problem = f"names {{{unknown[0]}}}, not a kwarg of {sorted(probe)}" if unknown else ""
            if not problem:
                entry.render(t, probe)
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as e:
            problem = f"is not a template ({type(e).__name__}: {e}; write {{{{ and }}}} for braces)"
        if problem:
            fail(f"text {t!r} {problem}", texts)
    return entry


def _draw(spec: Any, fail) -> Draw:
    """One kwarg draw, from its JSON object."""
    kinds = [k for k in _DRAW_KEYS if isinstance(spec, dict) and k in spec]
    if len(kinds) != 1:
        fail(f"expected an object with exactly one of {list(_DRAW_KEYS)}, got {spec!r}")
    kind, value, line = kinds[0], spec[kinds[0]], spec.line
    extra = sorted(set(spec) - {kind, *_DRAW_KEYS[kind]})
    if extra:
        fail(f"unknown key {extra[0]!r} in a {kind!r} draw")
    if kind == "from_seed":
        if value != "prompt":
            fail(f"'from_seed' must be \"prompt\" (the seed task), got {value!r}")
        return Draw(kind, line=line)
    bounds = value if kind == "range" else spec.get("size")
    if kind != "choice" and not (
        isinstance(bounds, list) and len(bounds) == 2 and all(type(x) is int for x in bounds)
    ):
        fail(f"{'range' if kind == 'range' else 'size'!r} must be [lo, hi] (integers)")
    lo, hi = bounds if kind != "choice" else (0, 0)
    if kind == "range":
        if lo > hi:
            fail(f"'range' [{lo}, {hi}]: lo > hi")
        return Draw(kind, lo=lo, hi=hi, line=line)
    if not isinstance(value, list) or not value:
        fail(f"{kind!r} must be a non-empty list of values")
    if len({json.dumps(v, sort_keys=True) for v in value}) != len(value):
        fail(f"{kind!r} lists a value twice")
    if kind == "sample" and not 1 <= lo <= hi <= len(value):
        fail(f"'size' [{lo}, {hi}] must satisfy 1 <= lo <= hi <= {len(value)} (the list's length)")
    display = spec.get("display", {})
    if not isinstance(display, dict) or not all(isinstance(v, str) for v in display.values()):
        fail("'display' must be an object of value -> shown text")
    return Draw(kind, tuple(_plain(value)), lo, hi, tuple(display.items()), line)


def _probe(path: str, entry: Entry) -> dict[str, Any]:
    """Checks what the draws can give with the verifier's spec; returns one valid kwargs."""
    names, options = [n for n, _ in entry.kwargs], [d.candidates() for _, d in entry.kwargs]
    if math.prod(len(o) for o in options) <= 20_000:  # joint limits too (nth_paragraph <= ...)
        combos = itertools.product(*options)
    else:  # one kwarg at a time, the others at their first value
        combos = [[*(o[0] for o in options[:i]), v, *(o[0] for o in options[i + 1 :])]
                  for i, o in enumerate(options) for v in o]  # fmt: skip
    for combo in combos:
        try:
            verifiers.check_spec(entry.id, _plain(dict(zip(names, combo))))
        except verifiers.SpecError as e:
            line = next((d.line for n, d in entry.kwargs if f"kwarg {n!r}" in str(e)), entry.line)
            raise SynthesisError(f"{path}:{line}: {e}") from None
    return {n: o[0] for n, o in zip(names, options)}


def synthesize(
    seeds: Sequence[Seed],
    taxonomy: Taxonomy,
    *,
    per_seed: int,
    min_constraints: int,
    max_constraints: int,
    seed: int | np.random.Generator,
    weights: Sequence[float] | None = None,
    respond: Callable[[Seed, list[str], list[dict]], str] | None = None,
) -> list[dict[str, Any]]:
    """Multi-constraint records for each seed task (the draws: the module docstring).

    Args:
      seeds: the seed tasks.
      taxonomy: the ids, their kwargs draws and texts, and the conflicts.
      per_seed: records per seed task, each with a different list of ids.
      min_constraints: fewest constraints in a record (>= 1); max_constraints: most.
      seed: random seed, or a Generator to draw from (it advances).
      weights: relative odds of min..max constraints (None: uniform).
      respond: the reference response "fit" kwargs are fitted to, ``respond(seed, ids,
        kwargs)`` with the fitted ids' kwargs still {} (None: the seed's output).

    Returns:
      Records in the training schema, seed by seed (`per_seed` each), in draw order.

    Raises:
      SynthesisError: bad arguments, or ones the taxonomy's conflicts leave no lists for.
    """
    counts = list(range(min_constraints, max_constraints + 1))
    p = _weights(weights, counts, per_seed)
    entries, forbidden = taxonomy.entries, taxonomy.conflicts | CONTRADICTIONS
    bad = [{j for j, f in enumerate(entries) if frozenset((e.id, f.id)) in forbidden}
           for e in entries]  # fmt: skip
    found = {k: _lists(bad, k, limit=per_seed) for k, weight in zip(counts, p) if weight > 0}
    if not all(found.values()) or sum(found.values()) < per_seed:
        raise SynthesisError(f"{taxonomy.path}: too few conflict-free lists of K ids, per K: "
                             f"{found} (counted up to per_seed={per_seed}); every K with weight "
                             "> 0 needs one, per_seed in all: lower max or per_seed")  # fmt: skip
    rng = np.random.default_rng(seed)
    out = []
    for task in seeds:
        seen: set[tuple[int, ...]] = set()
        misses = 0  # draws that conflict or repeat, for this seed
        while len(seen) < per_seed:
            k = int(rng.choice(counts, p=p))
            chosen = tuple(int(i) for i in rng.choice(len(entries), size=k, replace=False))
            if any(j in bad[i] for i in chosen for j in chosen) or chosen in seen:
                misses += 1
                if misses == _MAX_MISSES:
                    raise SynthesisError(f"{taxonomy.path}: {misses} draws conflict or repeat "
                                         "for one seed; lower max or per_seed")  # fmt: skip
                continue
            seen.add(chosen)
            out.append(_record(taxonomy.path, task, [entries[i] for i in chosen], rng, respond))
    return out


def _weights(weights: Sequence[float] | None, counts: list[int], per_seed: int) -> np.ndarray:
    if per_seed < 1 or not counts or counts[0] < 1:
        raise SynthesisError(f"per_seed={per_seed}, constraints {counts[:1]}..{counts[-1:]}: "
                             "need per_seed >= 1 and 1 <= min <= max")  # fmt: skip
    w = np.asarray([1.0] * len(counts) if weights is None else weights, dtype=np.float64)
    if w.shape != (len(counts),) or (w < 0).any() or not 0 < w.sum() < np.inf:
        raise SynthesisError(f"weights={w.tolist()}: need {len(counts)} numbers >= 0 (one per "
                             f"count {counts[0]}..{counts[-1]}), not all 0")  # fmt: skip
    return w / w.sum()


def _lists(bad: list[set[int]], k: int, *, limit: int) -> int:
    """Ordered lists of k pairwise non-conflicting entries, counted until `limit` is reached."""
    total = 0

    def visit(size: int, free: list[int]) -> bool:  # free: later entries that fit the list
        nonlocal total
        if size == k:
            total += math.factorial(k)  # the draw keeps the order: each set is k! lists
            return total >= limit
        for pos, i in enumerate(free):
            if size + len(free) - pos < k:
                return False
            if visit(size + 1, [j for j in free[pos + 1 :] if j not in bad[i]]):
                return True
        return False

    visit(0, list(range(len(bad))))
    return total


def _record(path: str, task: Seed, chosen: list[Entry], rng, respond) -> dict[str, Any]:
    ids = [e.id for e in chosen]
    kwargs, templates = [], []
    for e in chosen:
        kwargs.append({} if e.fit else {name: draw(rng, task) for name, draw in e.kwargs})
        templates.append(e.texts[int(rng.integers(len(e.texts)))] if e.texts[1:] else e.texts[0])
    for i, e in enumerate(chosen):
        if e.fit:
            reference = respond(task, ids, kwargs) if respond else task.output
            kwargs[i] = FITS[e.id](reference, rng)
    for e, kw in zip(chosen, kwargs):  # draws were checked at load; this holds the rest
        verifiers.check_spec(e.id, kw, where=f"{path}:{e.line} ({task.source})")
    texts = [e.render(t, kw) for e, t, kw in zip(chosen, templates, kwargs)]
    prompt = records.build_prompt(task.prompt, texts)
    return {"prompt": prompt, "instruction_id_list": ids, "kwargs": kwargs, "constraint": texts}
