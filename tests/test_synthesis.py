"""Instruction synthesis (ifrl_jax/synthesis.py, jobs/synthesize.py, launch/synthesize.py):
deterministic records, no conflicting pair, kwargs within the taxonomy's draws and valid for the
verifiers, soft texts, upstream's seed_data.jsonl end to end, bad input as one file:line error
that writes nothing, and the shipped tiny set regenerated through it (a few seconds in all)."""

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ifrl_jax import records, synthesis, verifiers
from ifrl_jax.errors import UserError
from ifrl_jax.jobs import synthesize as job

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "ifrl_jax" / "assets" / "instructions"
IFEVAL = str(ASSETS / "ifeval_taxonomy.json")
TINY = str(ASSETS / "tiny_taxonomy.json")
UPSTREAM_SEEDS = (
    Path(__file__).resolve().parents[2] / "shared" / "upstream-verl-if-data" / "seed_data.jsonl"
)


def _seeds(n: int) -> list[synthesis.Seed]:
    return [
        synthesis.Seed(f"Task number {i}.", "", f"An answer of a few words, {i}.") for i in range(n)
    ]


def _launch(name: str, *argv: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))
    cmd = [sys.executable, str(REPO / "launch" / f"{name}.py"), *argv]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=120)


@pytest.fixture(scope="module")
def ifeval() -> synthesis.Taxonomy:
    return synthesis.load_taxonomy(IFEVAL)


def test_same_seed_same_records_other_seed_other_records(ifeval):
    kw = dict(per_seed=3, min_constraints=1, max_constraints=5)
    first = synthesis.synthesize(_seeds(20), ifeval, seed=7, **kw)
    assert first == synthesis.synthesize(_seeds(20), ifeval, seed=7, **kw)
    assert first != synthesis.synthesize(_seeds(20), ifeval, seed=8, **kw)
    # A Generator continues its stream: the same draws as the seed that made it.
    assert first == synthesis.synthesize(_seeds(20), ifeval, seed=np.random.default_rng(7), **kw)
    assert len(first) == 60 and {len(r["instruction_id_list"]) for r in first} == {1, 2, 3, 4, 5}


def test_no_conflicting_pair_and_no_repeated_id_or_list(ifeval):
    recs = synthesis.synthesize(
        _seeds(150), ifeval, per_seed=8, min_constraints=2, max_constraints=8, seed=0
    )
    forbidden = ifeval.conflicts | synthesis.CONTRADICTIONS
    assert frozenset(("change_case:english_lowercase", "change_case:english_capital")) in forbidden
    assert len(ifeval.conflicts) == 94  # IFEval's table, symmetric, without self-pairs
    pairs = 0
    for r in recs:
        ids = r["instruction_id_list"]
        assert len(set(ids)) == len(ids)
        for a, b in itertools.combinations(ids, 2):
            assert frozenset((a, b)) not in forbidden, (a, b)
            pairs += 1
    assert pairs > 5_000
    for i in range(0, len(recs), 8):  # each seed's lists differ
        assert len({tuple(r["instruction_id_list"]) for r in recs[i : i + 8]}) == 8


def test_kwargs_are_drawn_within_the_taxonomy_and_valid_for_the_verifiers(ifeval):
    seeds = _seeds(100)
    recs = synthesis.synthesize(
        seeds, ifeval, per_seed=4, min_constraints=1, max_constraints=5, seed=1
    )
    entries = {e.id: e for e in ifeval.entries}
    seen = {}
    for i, r in enumerate(recs):
        task = seeds[i // 4]
        assert r["prompt"] == records.build_prompt(task.prompt, r["constraint"])
        for cid, kw, text in zip(r["instruction_id_list"], r["kwargs"], r["constraint"]):
            verifiers.check_spec(cid, kw)
            e = entries[cid]
            assert [n for n, _ in e.kwargs] == list(kw)  # the file's order, every kwarg
            for name, draw in e.kwargs:
                v = kw[name]
                seen.setdefault((cid, name), set()).add(json.dumps(v))
                if draw.kind == "choice":
                    assert v in draw.values
                elif draw.kind == "range":
                    assert draw.lo <= v <= draw.hi
                elif draw.kind == "sample":
                    assert draw.lo <= len(v) <= draw.hi and set(v) <= set(draw.values)
                    assert len(set(v)) == len(v)
                else:
                    assert v == task.prompt.strip()
            shown = {
                k: synthesis._shown(v, dict(d.display)) for (k, d), v in zip(e.kwargs, kw.values())
            }
            assert text in {t.format(**shown) for t in e.texts}
    # The draws cover their ranges: both ends of a range, several choices.
    assert seen[("detectable_format:number_bullet_lists", "num_bullets")] == {"2", "3", "4", "5"}
    language = [json.loads(v) for v in seen[("language:response_language", "language")]]
    assert len(language) > 5
    lang = "language:response_language"
    texts = [
        r["constraint"][r["instruction_id_list"].index(lang)]
        for r in recs
        if lang in r["instruction_id_list"]
    ]
    assert any("German" in t for t in texts) and not any(" de " in t for t in texts)


def test_soft_ids_come_with_their_texts(ifeval):
    recs = synthesis.synthesize(
        _seeds(40), ifeval, per_seed=5, min_constraints=3, max_constraints=5, seed=2
    )
    texts = {e.id: set(e.texts) for e in ifeval.entries if not e.hard}
    assert len(texts) == 6
    used = {}
    for r in recs:
        for cid, kw, text in zip(r["instruction_id_list"], r["kwargs"], r["constraint"]):
            if verifiers.is_soft(cid):
                assert kw == {} and text in texts[cid] and text + ". " in r["prompt"]
                used.setdefault(cid, set()).add(text)
    assert set(used) == set(texts) and max(len(t) for t in used.values()) > 1


def test_fitted_word_counts_are_met_by_the_reference(tmp_path):
    words = {"kwargs": "fit", "text": "Answer with {relation} {num_words} words"}
    hard = {"length_constraints:number_words": words, "punctuation:no_comma": {"text": "No commas"}}
    (tmp_path / "t.json").write_text(json.dumps({"hard": hard}))
    tax = synthesis.load_taxonomy(str(tmp_path / "t.json"))
    seeds = synthesis.load_seeds(str(ASSETS / "tiny_seeds_train.jsonl"))
    recs = synthesis.synthesize(
        seeds, tax, per_seed=2, min_constraints=1, max_constraints=2, seed=0
    )
    relations = set()
    for i, r in enumerate(recs):
        for cid, kw in zip(r["instruction_id_list"], r["kwargs"]):
            if cid == "length_constraints:number_words":
                assert verifiers.CHECKS[cid](seeds[i // 2].output, kw)
                relations.add(kw["relation"])
    assert relations == {"at least", "less than"}


def test_upstream_seed_data_end_to_end_through_the_launcher(tmp_path):
    if not UPSTREAM_SEEDS.exists():
        pytest.skip(f"the upstream seed file is not here ({UPSTREAM_SEEDS}): the shared folder")
    with open(UPSTREAM_SEEDS, encoding="utf-8") as f:
        (tmp_path / "seeds.jsonl").write_text("".join(next(f) for _ in range(20)))
    out = tmp_path / "out" / "train.jsonl"
    argv = ["--seeds=seeds.jsonl", f"--output={out}", "--per_seed=2", "--constraints=2,5",
            "--heldout_fraction=0.1", "--seed=3"]  # fmt: skip
    proc = _launch("synthesize", *argv, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    held = tmp_path / "out" / "train.heldout.jsonl"
    assert proc.stdout.splitlines() == [f"{out}: 36 rows", f"{held}: 4 rows"]
    train, heldout = records.load_records(str(out)), records.load_records(str(held))
    assert len(train.records) == 36 and train.seeds_derived == 36 and len(heldout.records) == 4
    assert not {r.seed for r in train.records} & {r.seed for r in heldout.records}
    assert {len(r.constraints) for r in train.records} <= {2, 3, 4, 5}
    first = out.read_bytes()
    assert _launch("synthesize", *argv, cwd=tmp_path).returncode == 0
    assert out.read_bytes() == first  # deterministic for --seed
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [held.name, out.name]


SEEDS = str(ASSETS / "tiny_seeds_heldout.jsonl")
WORDS = """{
  "hard": {
    "length_constraints:number_words": {"kwargs": {
      "relation": {"choice": %s},
      "num_words": {"range": %s}}, "text": "%s"}
  }
}
"""
NTH = """{
  "hard": {
    "length_constraints:nth_paragraph_first_word": {"kwargs": {
      "num_paragraphs": {"range": [2, 3]},
      "nth_paragraph": {"range": [1, 3]},
      "first_word": {"choice": ["so"]}}, "text": "x"}
  }
}
"""
ONE = '{\n  "%s": {\n    "%s": %s\n  }%s\n}\n'
NO_COMMA = ("hard", "punctuation:no_comma", '{"text": "No commas"}')
CONFLICT = ',\n  "conflicts": [\n    ["punctuation:no_comma", "%s"]]'
BAD = [  # (taxonomy JSON or None, seeds JSONL or None, the error's "file:line", what it says)
    (ONE % ("soft", "style:open_ended", "{}", ""), None, "t.json:3", "has no text"),
    (ONE % ("soft", "style:open_ended", '{"text": [\n"ok", ""]}', ""), None, "t.json:3",
     "non-blank"),
    (ONE % (*NO_COMMA, CONFLICT % "punctuation:no_comma"), None, "t.json:6",
     "conflicts with itself"),
    (ONE % (*NO_COMMA, CONFLICT % "startend:quotation"), None, "t.json:6",
     "'startend:quotation', not an id of this file"),
    (ONE % ("hard", "punctuation:no_commas", '{"text": "x"}', ""), None, "t.json:3",
     "not a hard id"),
    (ONE % ("hard", "style:x", '{"text": "x"}', ""), None, "t.json:3", "it is a soft id"),
    (ONE % ("soft", "punctuation:no_comma", '{"text": "x"}', ""), None, "t.json:3",
     "it is a hard id"),
    (ONE % ("hard", "punctuation:no_comma", '{"text": "x"},\n "punctuation:no_comma": {}', ""),
     None, "t.json:4", "appears twice"),
    (WORDS % ('["at least"]', "[0, 9]", "{num_words}"), None, "t.json:5",
     "'num_words' must be >= 1"),
    (WORDS % ('["at least", "about"]', "[1, 9]", "{num_words}"), None, "t.json:4",
     "'relation' must be one of"),
    (WORDS % ('["at least"]', "[1, 9]", "{words}"), None, "t.json:3", "names {words}"),
    (WORDS % ('["at least"]', "[1, 9]", "a {"), None, "t.json:3", "is not a template"),
    (WORDS.replace('"relation": {"choice": %s},\n', "") % ("[1, 9]", "x"), None, "t.json:3",
     "missing kwarg 'relation'"),
    (NTH, None, "t.json:5", "exceeds 'num_paragraphs'"),
    (ONE % ("hard", "length_constraints:number_sentences", '{"kwargs": "fit", "text": "x"}', ""),
     None, "t.json:3", '"fit" is available only for'),
    ('{\n  "hard": {\n    "punctuation:no_comma": {"text": "x"},\n  }\n}\n', None, "t.json:4",
     "not valid JSON"),
    ('{\n  "hard": {},\n  "sofft": {}\n}\n', None, "t.json:3", "unknown key 'sofft'"),
    (None, '{"instruction": "A task."}\n{"input": "none"}\n', "s.jsonl:2", "'instruction' is"),
    (None, '{"instruction": "A task."}\n\n{"instruction": "A task."}\n', "s.jsonl:3",
     "the same task as line 1"),
    (None, '{"instruction": "A task."}\nnot json\n', "s.jsonl:2", "not valid JSON"),
]  # fmt: skip


@pytest.mark.parametrize("taxonomy, seeds, where, says", BAD, ids=[b[3][:24] for b in BAD])
def test_bad_input_names_file_and_line_and_writes_nothing(tmp_path, taxonomy, seeds, where, says):
    if taxonomy is not None:
        (tmp_path / "t.json").write_text(taxonomy)
    if seeds is not None:
        (tmp_path / "s.jsonl").write_text(seeds)
    taxonomy_path = str(tmp_path / "t.json") if taxonomy is not None else TINY
    seeds_path = str(tmp_path / "s.jsonl") if seeds is not None else SEEDS
    out = tmp_path / "out" / "train.jsonl"
    with pytest.raises(UserError) as e:
        job.run(seeds_path, taxonomy_path, str(out), heldout_fraction=0.2)
    message = str(e.value)
    assert "\n" not in message and says in message, message
    assert message.startswith(f"{tmp_path / where}: "), message
    assert not (tmp_path / "out").exists()


def test_launcher_bad_input_is_one_line_status_2_and_keeps_the_old_file(tmp_path):
    out = tmp_path / "train.jsonl"
    out.write_text("old\n")
    (tmp_path / "s.jsonl").write_text('{"instruction": "A task."}\n{"instruction": 3}\n')
    cases = [
        (["--seeds=s.jsonl", "--output=train.jsonl"], "s.jsonl:2: 'instruction'"),
        ([f"--seeds={ASSETS / 'tiny_seeds_heldout.jsonl'}", f"--taxonomy={TINY}",
          "--output=train.jsonl", "--constraints=11,11"], "too few conflict-free lists"),
        (["--seeds=s.jsonl", "--output=train.jsonl", "--constraints=3"], "--constraints=3"),
    ]  # fmt: skip
    for argv, says in cases:
        proc = _launch("synthesize", *argv, cwd=tmp_path)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 2 and len(lines) == 1, proc.stderr
        assert lines[0].startswith("error: ") and says in lines[0], lines[0]
        assert proc.stdout == "" and out.read_text() == "old\n"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["s.jsonl", "train.jsonl"]


def test_arguments_the_taxonomy_cannot_meet_are_errors():
    tax = synthesis.load_taxonomy(TINY)  # 11 ids; repeat_prompt never with quotation
    seeds = _seeds(2)
    with pytest.raises(synthesis.SynthesisError, match="too few conflict-free lists"):
        synthesis.synthesize(seeds, tax, per_seed=1, min_constraints=11, max_constraints=11, seed=0)
    with pytest.raises(synthesis.SynthesisError, match="too few conflict-free lists"):
        synthesis.synthesize(seeds, tax, per_seed=12, min_constraints=1, max_constraints=1, seed=0)
    with pytest.raises(synthesis.SynthesisError, match="weights"):
        synthesis.synthesize(
            seeds, tax, per_seed=1, min_constraints=1, max_constraints=3, seed=0, weights=[1, 2]
        )
    recs = synthesis.synthesize(
        seeds, tax, per_seed=9, min_constraints=1, max_constraints=1, seed=0
    )
    assert len(recs) == 18  # exactly the 9 single ids per seed


def test_shipped_tiny_set_is_synthesized_and_make_tiny_instructions_check_passes(tmp_path):
    tax = synthesis.load_taxonomy(TINY)
    assert [e.id for e in tax.entries][:2] == [
        "punctuation:no_comma",
        "change_case:english_lowercase",
    ]
    proc = _launch("make_tiny_instructions", "--check", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert [line.split(": ")[1] for line in proc.stdout.splitlines()] == [
        "280 rows",
        "200 rows",
        "280 rows",
    ]
