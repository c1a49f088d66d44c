"""The IFEval-compatible evaluator on IFEval's real 541 prompts, with generated responses.

For every constraint of every prompt a satisfying and a violating response is written by the
generators below (from the semantics, independently of the checks), so the expected verdicts
and accuracies are known exactly.
"""

import json
import os
import re
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

from ifrl_jax.verifiers import HARD_IDS, SpecError, ifeval

REPO = Path(__file__).resolve().parents[1]
# IFEval's 541 prompts: the shipped copy (same prompts, key/prompt/ids/kwargs), else ../shared.
VAL = REPO / "ifrl_jax" / "assets" / "ifeval" / "input_data.jsonl"
if not VAL.exists():
    VAL = REPO.parent / "shared" / "upstream-verl-if-data" / "val_set.jsonl"
pytestmark = pytest.mark.skipif(not VAL.exists(), reason=f"IFEval prompts not present at {VAL}")

ENGLISH = "This is a simple English sentence about the weather today."


@cache
def _language_text(code: str) -> str:
    """Text in language `code`: its 30 most frequent letter trigrams from langdetect's profile."""
    from langdetect.detector_factory import PROFILES_DIRECTORY

    with open(os.path.join(PROFILES_DIRECTORY, code), encoding="utf-8") as f:
        freq = json.load(f)["freq"]
    grams = [g for g in sorted(freq, key=lambda g: -freq[g]) if len(g) == 3 and " " not in g]
    return " ".join(grams[:30])


def _sentences(n: int) -> str:
    return " ".join(f"Sentence number {i} is here." for i in range(n))


def _words(n: int) -> str:
    return " ".join(["word"] * n) if n else "!!!"


def satisfy(cid: str, kw: dict) -> str | None:
    """A response that follows the constraint in strict mode, or None if none can."""
    at_least = kw.get("relation", kw.get("let_relation", kw.get("capital_relation"))) == "at least"
    if cid == "keywords:existence":
        return "Topics: " + " and ".join(kw["keywords"]) + "."
    if cid == "keywords:frequency":
        return " ".join([kw["keyword"]] * kw["frequency"]) if at_least else "12345"
    if cid == "keywords:forbidden_words":
        return "12345 67890"
    if cid == "keywords:letter_frequency":
        return kw["letter"] * kw["let_frequency"] if at_least else "12345"
    if cid == "language:response_language":
        return _language_text(kw["language"])
    if cid == "length_constraints:number_sentences":
        n = kw["num_sentences"] if at_least else kw["num_sentences"] - 1
        return _sentences(n) if n else None
    if cid == "length_constraints:number_paragraphs":
        return "\n***\n".join(f"Paragraph {i}." for i in range(kw["num_paragraphs"]))
    if cid == "length_constraints:number_words":
        return _words(kw["num_words"] if at_least else kw["num_words"] - 1)
    if cid == "length_constraints:nth_paragraph_first_word":
        paragraphs = ["Other text here."] * kw["num_paragraphs"]
        paragraphs[kw["nth_paragraph"] - 1] = f"{kw['first_word']} starts this paragraph."
        return "\n\n".join(paragraphs)
    if cid == "detectable_content:number_placeholders":
        return " ".join(f"[slot {i}]" for i in range(kw["num_placeholders"]))
    if cid == "detectable_content:postscript":
        return f"Main text.\n{kw['postscript_marker']} a short note."
    if cid == "detectable_format:number_bullet_lists":
        return "\n".join(f"* item {i}" for i in range(kw["num_bullets"]))
    if cid == "detectable_format:constrained_response":
        return "My answer is yes."
    if cid == "detectable_format:number_highlighted_sections":
        return " ".join(f"*part {i}*" for i in range(kw["num_highlights"]))
    if cid == "detectable_format:multiple_sections":
        spl = kw["section_spliter"].strip()
        return "\n".join(f"{spl} {i + 1}\nText of part {i + 1}." for i in range(kw["num_sections"]))
    if cid == "detectable_format:json_format":
        return '```json\n{"answer": [1, 2]}\n```'
    if cid == "detectable_format:title":
        return "<<A Good Title>>\nBody text."
    if cid == "combination:two_responses":
        return "First answer.\n******\nSecond answer."
    if cid == "combination:repeat_prompt":
        return kw["prompt_to_repeat"] + "\nAnd here is the answer."
    if cid == "startend:end_checker":
        return "Body text. " + kw["end_phrase"]
    if cid == "change_case:capital_word_frequency":
        return " ".join(["WORD"] * kw["capital_frequency"]) if at_least else "no capitals here"
    if cid == "change_case:english_capital":
        return ENGLISH.upper()
    if cid == "change_case:english_lowercase":
        return ENGLISH.lower()
    if cid == "punctuation:no_comma":
        return "No commas in here."
    if cid == "startend:quotation":
        return '"A quoted answer."'
    raise AssertionError(cid)


def violate(cid: str, kw: dict) -> tuple[str, bool] | None:
    """A response that breaks the constraint, and whether it also fails in loose mode."""
    at_least = kw.get("relation", kw.get("let_relation", kw.get("capital_relation"))) == "at least"
    if cid in ("keywords:existence", "detectable_content:postscript"):
        return "12345 67890", True
    if cid == "keywords:frequency":
        return ("12345" if at_least else " ".join([kw["keyword"]] * kw["frequency"])), True
    if cid == "keywords:forbidden_words":
        w = kw["forbidden_words"][0]
        left = "" if re.match(r"\w", w[0]) else "x"
        right = "" if re.match(r"\w", w[-1]) else "x"
        return left + w + right, True
    if cid == "keywords:letter_frequency":
        return ("12345" if at_least else kw["letter"] * kw["let_frequency"]), True
    if cid == "language:response_language":
        return ENGLISH, True
    if cid == "length_constraints:number_sentences":
        n = kw["num_sentences"] - 1 if at_least else kw["num_sentences"]
        return (_sentences(n), True) if n else None
    if cid == "length_constraints:number_paragraphs":
        n = kw["num_paragraphs"]
        # On one line: deleting "*" leaves one paragraph, which is a pass when n == 1.
        return " *** ".join(f"Paragraph {i}." for i in range(n + 1)), n != 1
    if cid == "length_constraints:number_words":
        return _words(kw["num_words"] - 1 if at_least else kw["num_words"]), True
    if cid == "length_constraints:nth_paragraph_first_word":
        filler = "other" if kw["first_word"].lower() != "other" else "filler"
        return "\n\n".join([f"{filler} text here."] * kw["num_paragraphs"]), True
    if cid == "detectable_content:number_placeholders":
        return " ".join(f"[slot {i}]" for i in range(kw["num_placeholders"] - 1)) or "none", True
    if cid == "detectable_format:number_bullet_lists":
        return "\n".join(f"- item {i}" for i in range(kw["num_bullets"] + 3)), True
    if cid == "detectable_format:constrained_response":
        return "My answer is probably yes", True
    if cid == "detectable_format:number_highlighted_sections":
        return " ".join(f"*part {i}*" for i in range(kw["num_highlights"] - 1)) or "plain", True
    if cid == "detectable_format:multiple_sections":
        spl = kw["section_spliter"].strip()
        n = kw["num_sections"] - 1
        return "\n".join(f"{spl} {i + 1}\nText." for i in range(n)) or "No parts.", True
    if cid == "detectable_format:json_format":
        return "not { json", True
    if cid == "detectable_format:title":
        return "No title here.", True
    if cid == "combination:two_responses":
        return "Only one answer.", True
    if cid == "combination:repeat_prompt":
        return "Answer first.", True
    if cid == "startend:end_checker":
        return "Body text only, 12345.", True
    if cid == "change_case:capital_word_frequency":
        n = kw["capital_frequency"]
        return ("no capitals here" if at_least else " ".join(["WORD"] * n)), True
    if cid == "change_case:english_capital":
        return "This is not all caps.", True
    if cid == "change_case:english_lowercase":
        return "This Is Not Lowercase.", True
    if cid == "punctuation:no_comma":
        return "Yes, a comma.", True
    if cid == "startend:quotation":
        return "Not quoted.", True
    raise AssertionError(cid)


def _write_jsonl(path: Path, rows) -> str:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def prompts():
    return ifeval.read_prompts(str(VAL))


def test_reads_all_541_prompts(prompts):
    assert len(prompts) == 541
    assert {c for p in prompts for c in p.instruction_id_list} == HARD_IDS


@pytest.fixture(scope="module")
def per_constraint(prompts, tmp_path_factory):
    """One single-constraint record per (prompt, constraint) of IFEval, 834 in all."""
    tmp = tmp_path_factory.mktemp("per_constraint")
    records, good, bad, loose_bad = [], [], [], []
    for p in prompts:
        for i, (cid, kw) in enumerate(zip(p.instruction_id_list, p.kwargs)):
            yes, no = satisfy(cid, kw), violate(cid, kw)
            if yes is None or no is None:
                continue
            prompt = f"{p.prompt}\n[constraint {i}]"
            records.append({"key": f"{p.key}-{i}", "prompt": prompt, "instruction_id_list": [cid],
                            "kwargs": [kw]})  # fmt: skip
            good.append({"prompt": prompt, "response": yes})
            bad.append({"prompt": prompt, "response": no[0]})
            loose_bad.append(no[1])
    assert len(records) >= 830  # only "less than 1 sentence"-like specs are skipped
    return (
        _write_jsonl(tmp / "prompts.jsonl", records),
        _write_jsonl(tmp / "good.jsonl", good),
        _write_jsonl(tmp / "bad.jsonl", bad),
        loose_bad,
        tmp,
    )


def test_every_constraint_satisfied(per_constraint):
    prompts_path, good, _, _, tmp = per_constraint
    results = ifeval.evaluate(ifeval.read_prompts(prompts_path), ifeval.read_responses(good))
    failed = [(r["instruction_id_list"], r["response"][:60]) for r in results["strict"]
              if not r["follow_all_instructions"]]  # fmt: skip
    assert failed == []
    assert ifeval.summary(results) == {
        "prompt_strict": 1.0,
        "inst_strict": 1.0,
        "prompt_loose": 1.0,
        "inst_loose": 1.0,
    }


def test_every_constraint_violated(per_constraint):
    prompts_path, _, bad, loose_bad, _ = per_constraint
    results = ifeval.evaluate(ifeval.read_prompts(prompts_path), ifeval.read_responses(bad))
    passed = [(r["instruction_id_list"], r["response"][:60]) for r in results["strict"]
              if r["follow_all_instructions"]]  # fmt: skip
    assert passed == []
    loose = [r["follow_all_instructions"] for r in results["loose"]]
    assert loose == [not fails for fails in loose_bad]  # only number_paragraphs with N == 1


@pytest.mark.timeout(300 + 300)  # its subprocess may take 300 s
def test_real_prompts_end_to_end(prompts, tmp_path):
    """The real 541-prompt file through the launcher: single-constraint prompts alternately
    satisfied and violated, multi-constraint prompts answered with whitespace (all fail)."""
    responses, n_follow, n_inst = [], 0, 0
    for b, p in enumerate(prompts):
        n_inst += len(p.kwargs)
        text = " "
        if len(p.kwargs) == 1:
            cid, kw = p.instruction_id_list[0], p.kwargs[0]
            if b % 2 == 0 and satisfy(cid, kw) is not None:
                text, n_follow = satisfy(cid, kw), n_follow + 1
            elif violate(cid, kw) is not None:
                text = violate(cid, kw)[0]
        responses.append({"prompt": p.prompt, "response": text})
    resp_path = _write_jsonl(tmp_path / "responses.jsonl", responses[::-1])  # order is free
    out_dir = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, str(REPO / "launch" / "eval_ifeval.py"), f"--input_data={VAL}",
           f"--input_response_data={resp_path}", f"--output_dir={out_dir}"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    final = json.loads(proc.stdout.strip().splitlines()[-1])
    assert final["prompt_strict"] == pytest.approx(n_follow / 541)
    assert final["inst_strict"] == pytest.approx(n_follow / n_inst)
    assert n_follow > 140 and n_inst == 834
    assert "prompt-level" in proc.stdout and "punctuation:no_comma" in proc.stdout
    for mode in ("strict", "loose"):
        with open(out_dir / f"eval_results_{mode}.jsonl", encoding="utf-8") as f:
            rows = [json.loads(line) for line in f]
        assert len(rows) == 541
        assert list(rows[0]) == [
            "follow_all_instructions",
            "follow_instruction_list",
            "instruction_id_list",
            "prompt",
            "response",
        ]
        assert rows[5]["prompt"] == prompts[5].prompt
    assert final["prompt_loose"] >= final["prompt_strict"]


def test_pool_gives_the_same_results(per_constraint):
    prompts_path, good, _, _, _ = per_constraint
    from ifrl_jax.verifiers import VerifierPool

    items = ifeval.read_prompts(prompts_path)[:200]
    responses = ifeval.read_responses(good)
    with VerifierPool(processes=2) as pool:
        assert ifeval.evaluate(items, responses, pool=pool) == ifeval.evaluate(items, responses)


@pytest.mark.parametrize(
    "prompt_line,response_line,message",
    [
        ('{"key": 1, "prompt": "p", "instruction_id_list": [],', None,
         "prompts.jsonl:2: malformed"),
        ('{"key": 1, "prompt": "p", "instruction_id_list": ["style:open_ended"], "kwargs": [{}]}',
         None, "prompts.jsonl:2: instruction_id_list[0]: 'style:open_ended' is not one"),
        ('{"key": 1, "prompt": "p", "instruction_id_list": ["keywords:existence"], "kwargs": [{}]}',
         None, "prompts.jsonl:2: instruction_id_list[0]: 'keywords:existence': missing kwarg"),
        ('{"key": 7, "prompt": "q", "instruction_id_list": [], "kwargs": []}', None,
         "prompts.jsonl:2: no response for this prompt (key 7) in"),
        (None, '{"prompt": "p"}', "responses.jsonl:1: field 'response'"),
    ],
)  # fmt: skip
def test_bad_input_names_file_and_line(tmp_path, prompt_line, response_line, message):
    first = (
        '{"key": 0, "prompt": "p", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}'
    )
    (tmp_path / "prompts.jsonl").write_text(first + "\n" + (prompt_line or "") + "\n")
    (tmp_path / "responses.jsonl").write_text(
        (response_line or '{"prompt": "p", "response": "r"}') + "\n"
    )
    with pytest.raises((ifeval.EvalInputError, SpecError), match=re.escape(message)):
        ifeval.run(
            str(tmp_path / "prompts.jsonl"), str(tmp_path / "responses.jsonl"), str(tmp_path)
        )
