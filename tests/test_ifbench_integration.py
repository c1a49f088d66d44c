"""IFBench's ids in the verifier stage, the evaluator and training: the registry and its
namespace, load-time kwarg validation, the batch stage (modes, pool, time limit, error channel),
`launch/eval_ifeval.py --benchmark=ifbench`, and records/levels/pairs/rewards with IFBench ids."""

import json
import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ifrl_jax import curriculum, pairs, records, rewards, verifiers
from ifrl_jax.verifiers import ifbench, ifeval, spec
from ifrl_jax.verifiers.core import BAD_SPEC, ERROR, OK, TIMEOUT
from tests.test_ifbench_custom import CASES

REPO = Path(__file__).resolve().parents[1]
PROMPTS = REPO / "ifrl_jax" / "assets" / "ifbench" / "IFBench_test.jsonl"
SHARED = REPO.parent / "shared" / "ifbench-data" / "IFBench_test.jsonl"
IFEVAL_PROMPTS = REPO / "ifrl_jax" / "assets" / "ifeval" / "input_data.jsonl"
ROWS = [json.loads(line) for line in PROMPTS.read_text(encoding="utf-8").splitlines()]
FILE_IDS = {cid for r in ROWS for cid in r["instruction_id_list"]}
GOOD = {cid: good[0] for cid, (good, _) in CASES.items()}  # a satisfying custom response
BAD = {cid: bad[0] for cid, (_, bad) in CASES.items()}
ESSAY = (
    "Rivers carve valleys over long ages. They carry silt, and they feed the plains!\n\n"
    "Why do they bend? Soft banks erode; hard rock resists. * A bullet here.\n"
    "Engineers study them closely, and farmers depend on them."
)


def _first_kwargs() -> dict[str, dict]:
    """IFBench id -> the kwargs of its first prompt in the shipped file, nulls dropped."""
    out = {}
    for r in ROWS:
        for cid, kw in zip(r["instruction_id_list"], r["kwargs"]):
            out.setdefault(cid, {k: v for k, v in kw.items() if v is not None})
    return out


KWARGS = _first_kwargs()


@pytest.fixture(autouse=True)
def _quiet(caplog):
    caplog.set_level(logging.ERROR, logger="ifrl_jax.verifiers")


# ----------------------------------------------------------------------------- registry


def test_shipped_prompts_are_the_shared_file():
    if not SHARED.exists():
        pytest.skip("shared/ifbench-data is not beside this checkout")
    assert PROMPTS.read_bytes() == SHARED.read_bytes()


def test_every_id_of_the_prompts_is_registered_and_namespaced():
    assert len(ROWS) == 294 and len(FILE_IDS) == 57
    assert FILE_IDS <= verifiers.IFBENCH_IDS
    assert verifiers.IFBENCH_IDS - FILE_IDS == {"custom:character_reverse"}
    assert not verifiers.IFBENCH_IDS & verifiers.HARD_IDS and len(verifiers.HARD_IDS) == 25
    assert set(ifbench.CHECKS) == set(ifbench.SPECS) == verifiers.IFBENCH_IDS
    for cid in verifiers.IFBENCH_IDS:
        for name in (cid, "ifbench/" + cid):
            assert verifiers.is_hard(name) and not verifiers.is_soft(name)
            assert verifiers.ifbench_id(name) == cid
            assert verifiers.resolve_check(name) is ifbench.CHECKS[cid]
        assert set(ifbench.SPECS[cid].values()) <= set(ifbench.KINDS)
    assert (
        verifiers.resolve_check("punctuation:no_comma") is verifiers.CHECKS["punctuation:no_comma"]
    )
    for name in ("ifbench/punctuation:no_comma", "ifbench/", "ifbench/ifbench/custom:multiples"):
        assert not verifiers.is_hard(name) and verifiers.ifbench_id(name) is None
        with pytest.raises(verifiers.SpecError, match="not one of IFBench's"):
            verifiers.check_spec(name, {})


def test_the_semantics_index_links_every_family_file():
    folder = REPO / "ifrl_jax" / "verifiers" / "ifbench"
    index = (folder / "IFBENCH_SEMANTICS.md").read_text(encoding="utf-8")
    linked = set(re.findall(r"\]\((SEMANTICS_\w+\.md)\)", index))
    assert linked == {p.name for p in folder.glob("SEMANTICS_*.md")}
    assert "SEMANTICS_custom.md" in linked and len(linked) == 4


def test_a_colliding_or_duplicated_id_is_refused_at_import(monkeypatch):
    clash = dict(ifbench.SPECS, **{"punctuation:no_comma": {}})
    monkeypatch.setattr(ifbench, "SPECS", clash)
    monkeypatch.setattr(ifbench, "CHECKS", dict.fromkeys(clash))
    monkeypatch.setattr(spec, "IFBENCH_IDS", frozenset(clash))
    with pytest.raises(RuntimeError, match="'punctuation:no_comma' is also an IFEval id"):
        spec._check_registry()
    monkeypatch.setattr(ifbench, "_FAMILIES", (ifbench.custom, ifbench.custom))
    with pytest.raises(RuntimeError, match="defined by two family modules"):
        ifbench._merged("CHECKS")


# ----------------------------------------------------------------------------- kwargs


def test_every_prompt_of_the_file_validates_in_both_forms():
    for n, r in enumerate(ROWS, 1):
        for i, (cid, kw) in enumerate(zip(r["instruction_id_list"], r["kwargs"])):
            where = f"IFBench_test.jsonl:{n}: instruction_id_list[{i}]"
            bare = verifiers.check_spec(cid, kw, where=where)
            assert verifiers.check_spec("ifbench/" + cid, kw, where=where) == bare
            assert set(bare) == set(ifbench.SPECS[cid])
            for name, kind in ifbench.SPECS[cid].items():
                expected = {"int": int, "float": float, "str": str, "str_list": list}.get(kind)
                assert expected is None or type(bare[name]) is expected, (cid, name, bare[name])


def test_missing_extra_and_ill_typed_kwargs_are_load_time_errors():
    cid = next(c for c in sorted(FILE_IDS) if ifbench.SPECS[c])
    kw = KWARGS[cid]
    name = sorted(ifbench.SPECS[cid])[0]
    with pytest.raises(verifiers.SpecError, match=f"f.jsonl:3: '{cid}': missing kwarg '{name}'"):
        verifiers.check_spec(cid, {**kw, name: None}, where="f.jsonl:3")
    with pytest.raises(verifiers.SpecError, match="f.jsonl:3: .*unexpected kwarg 'bogus'"):
        verifiers.check_spec("ifbench/" + cid, {**kw, "bogus": 1}, where="f.jsonl:3")
    with pytest.raises(verifiers.SpecError, match="unexpected kwarg 'N'"):
        verifiers.check_spec("custom:multiples", {"N": 3})
    outcome = verifiers.verify_outcome(cid, {**kw, "bogus": 1}, ESSAY)
    assert (outcome.passed, outcome.status) == (False, "bad_spec")


@pytest.mark.parametrize(
    "kind, good, bad",
    [
        ("int", [(0, 0), (3, 3), (3.0, 3)], [-1, 2.5, True, "3", float("nan"), [1]]),
        ("float", [(0, 0.0), (12.5, 12.5), (7, 7.0)], [True, "1", float("inf"), 10**400, None]),
        ("str", [("a", "a"), (" x ", " x ")], ["", 3, ["a"]]),
        ("str_list", [(["a"], ["a"]), (("a", "b"), ["a", "b"])], [[], [""], "ab", [1]]),
        ("relation", [("less than", "less than"), ("at least", "at least")], ["more", 1, [1]]),
        ("any", [(0, 0), ({"x": 1}, {"x": 1})], []),
    ],
)
def test_each_kwarg_kind(kind, good, bad):
    def fail(msg):
        raise verifiers.SpecError(msg)

    for value, normalised in good:
        assert spec._check_ifbench_value(kind, "k", value, fail) == normalised
    for value in bad:
        with pytest.raises(verifiers.SpecError, match="kwarg 'k' must be"):
            spec._check_ifbench_value(kind, "k", value, fail)


# ----------------------------------------------------------------------------- batch stage


def _batch():
    """A mixed IFEval + IFBench batch (bare and qualified ids) with the expected verdicts."""
    responses = [GOOD["custom:multiples"], BAD["custom:multiples"], "no commas here", ESSAY]
    constraints = [
        [("custom:multiples", {}), ("punctuation:no_comma", {})],
        [("ifbench/custom:multiples", None), ("punctuation:no_comma", {})],
        [("punctuation:no_comma", {}), ("style:open_ended", {}), ("custom:word_reverse", {})],
        [(cid, KWARGS[cid]) for cid in sorted(FILE_IDS)[:12]],
    ]
    return responses, constraints


def _expected(responses, constraints, loose):
    return [
        [
            verifiers.verify(cid, kw, text, loose=loose) if verifiers.is_hard(cid) else False
            for cid, kw in row
        ]
        for text, row in zip(responses, constraints)
    ]


def test_ifbench_ids_join_the_batch_stage_in_both_modes_in_process_and_on_a_pool():
    responses, constraints = _batch()
    report = verifiers.verify_batch_report(responses, constraints, timeout_s=None)
    assert (report.errors, report.timeouts, report.bad_specs) == (0, 0, 0), report.messages
    for mode in ("strict", "loose"):
        got = [[bool(s) for s in row[: len(c)]] for row, c in zip(report.scores[mode], constraints)]
        assert got == _expected(responses, constraints, mode == "loose")
    assert report.scores["strict"][0, :2].tolist() == [1.0, 0.0]
    assert report.valid[2].tolist()[:3] == [True, False, True]
    with verifiers.VerifierPool(1) as pool:
        pooled = verifiers.verify_batch_report(responses, constraints, pool=pool, timeout_s=None)
    for mode in ("strict", "loose"):
        assert (pooled.scores[mode] == report.scores[mode]).all()
    assert (pooled.status == report.status).all()


def test_loose_mode_is_ifevals_variants_for_ifbench_ids():
    text = "The multiples of 7 between 10 and 50:\n14, 21, 28, 35, 42, 49"
    assert not verifiers.verify("custom:multiples", {}, text)
    assert verifiers.verify("ifbench/custom:multiples", {}, text, loose=True)


def test_ifbench_checks_get_the_time_limit_and_the_error_channel(monkeypatch):
    def spin(text, kw):
        while True:
            pass

    def crash(text, kw):
        raise ValueError("boom")

    monkeypatch.setitem(ifbench.CHECKS, "custom:multiples", spin)
    monkeypatch.setitem(ifbench.CHECKS, "custom:word_reverse", crash)
    start = time.perf_counter()
    report = verifiers.verify_batch_report(
        ["text one", "text two"],
        [[("ifbench/custom:multiples", {})], [("custom:word_reverse", {}), ("custom:x", {})]],
        modes=("strict",),
        timeout_s=0.3,
    )
    assert time.perf_counter() - start < 5
    assert report.status.tolist() == [[TIMEOUT, OK], [ERROR, BAD_SPEC]]
    assert (report.timeouts, report.errors, report.bad_specs) == (1, 1, 1)
    assert not report.scores["strict"].any()


def test_a_failing_family_warmup_does_not_break_the_batch(monkeypatch, caplog):
    def broken():
        raise OSError("asset missing")

    monkeypatch.setattr(ifbench, "_warm", False)
    monkeypatch.setattr(ifbench.custom, "warmup", broken, raising=False)
    caplog.set_level(logging.WARNING, logger="ifrl_jax.verifiers")
    assert verifiers.verify("custom:multiples", {}, GOOD["custom:multiples"])
    assert "custom.warmup() failed" in caplog.text


# ----------------------------------------------------------------------------- evaluator


def _responses_file(tmp_path, *, drop=(), strip_key=None) -> Path:
    """A response per prompt: the custom tasks' satisfying ones, ESSAY for the others."""
    lines = []
    for r in ROWS:
        if r["key"] in drop:
            continue
        cid = r["instruction_id_list"][0]
        prompt = r["prompt"].strip() if r["key"] == strip_key else r["prompt"]
        lines.append({"prompt": prompt, "response": GOOD.get(cid, ESSAY)})
    path = tmp_path / "responses.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    return path


def test_eval_ifbench_writes_ifevals_files_and_scores_like_verify(tmp_path):
    path = _responses_file(tmp_path, strip_key="0")
    assert ROWS[0]["prompt"] != ROWS[0]["prompt"].strip()  # matched by the stripped prompt
    text = ifeval.run(None, str(path), str(tmp_path / "out"), benchmark="ifbench")
    final = json.loads(text.splitlines()[-1])
    assert set(final) == {"prompt_strict", "inst_strict", "prompt_loose", "inst_loose"}
    assert "category" in text and "responses missing" not in text
    follow = {}
    for mode in ("strict", "loose"):
        rows = [json.loads(x) for x in (tmp_path / "out" / f"eval_results_{mode}.jsonl").open()]
        assert len(rows) == 294 and list(rows[0]) == [
            "follow_all_instructions",
            "follow_instruction_list",
            "instruction_id_list",
            "prompt",
            "response",
        ]
        follow[mode] = [row["follow_instruction_list"] for row in rows]
        n_inst = sum(len(f) for f in follow[mode])
        assert n_inst == 335
        assert final[f"inst_{mode}"] == pytest.approx(sum(map(sum, follow[mode])) / n_inst)
        assert final[f"prompt_{mode}"] == pytest.approx(sum(map(all, follow[mode])) / 294)
    for r, got in zip(ROWS, follow["strict"]):
        if r["instruction_id_list"][0].startswith("custom:"):  # the custom tasks are followed
            assert got == [True] * len(got), r["key"]
    sample = [i for i, r in enumerate(ROWS) if not r["instruction_id_list"][0].startswith("cu")]
    for i in sample[::25]:
        r = ROWS[i]
        expected = [
            verifiers.verify(cid, kw, ESSAY)
            for cid, kw in zip(r["instruction_id_list"], r["kwargs"])
        ]
        assert follow["strict"][i] == expected, r["key"]


def test_eval_ifbench_scores_missing_responses_as_not_followed(tmp_path):
    path = _responses_file(tmp_path, drop={"276", "277", "5"})
    text = ifeval.run(None, str(path), str(tmp_path / "out"), benchmark="ifbench")
    assert "responses missing: 3 of 294 prompts (scored 0)" in text
    rows = [json.loads(x) for x in (tmp_path / "out" / "eval_results_loose.jsonl").open()]
    by_prompt = {row["prompt"]: row for row in rows}
    for r in ROWS:
        if r["key"] in {"276", "277", "5"}:
            row = by_prompt[r["prompt"]]
            assert row["response"] == "" and not any(row["follow_instruction_list"])
    empty = tmp_path / "none.jsonl"
    empty.write_text(json.dumps({"prompt": "other", "response": "x"}) + "\n")
    with pytest.raises(ifeval.EvalInputError, match="answers none of the 294 prompts"):
        ifeval.run(None, str(empty), str(tmp_path / "o2"), benchmark="ifbench")


def test_each_benchmark_accepts_only_its_own_ids(tmp_path):
    with pytest.raises(verifiers.SpecError, match=r"IFBench_test.jsonl:1: .*IFEval instruction"):
        ifeval.read_prompts(str(PROMPTS))
    with pytest.raises(verifiers.SpecError, match=r"input_data.jsonl:1: .*an IFBench instruction"):
        ifeval.read_prompts(str(IFEVAL_PROMPTS), benchmark="ifbench")
    qualified = tmp_path / "q.jsonl"
    row = {"key": 1, "prompt": "Count.", "instruction_id_list": ["ifbench/custom:multiples"]}
    qualified.write_text(json.dumps({**row, "kwargs": [{"N": None}]}) + "\n")
    (p,) = ifeval.read_prompts(str(qualified), benchmark="ifbench")
    results = ifeval.evaluate([p], {"Count.": GOOD["custom:multiples"]}, benchmark="ifbench")
    assert results["strict"][0]["follow_all_instructions"]
    assert "custom " in ifeval.report(results, categories=True)
    with pytest.raises(ValueError, match="benchmark='ifbenchh'"):
        ifeval.read_prompts(str(qualified), benchmark="ifbenchh")


def test_launcher_scores_ifbench_by_default_prompts(tmp_path):
    path = _responses_file(tmp_path)
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [
        sys.executable,
        str(REPO / "launch" / "eval_ifeval.py"),
        "--benchmark=ifbench",
        f"--input_response_data={path}",
        f"--output_dir={tmp_path / 'out'}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    final = json.loads(proc.stdout.strip().splitlines()[-1])
    again = ifeval.summary(
        {
            m: [json.loads(x) for x in (tmp_path / "out" / f"eval_results_{m}.jsonl").open()]
            for m in ("strict", "loose")
        }
    )
    assert final == pytest.approx(again) and final["prompt_strict"] >= 10 / 294


# ----------------------------------------------------------------------------- training


REJECTED = "ok"  # a reference pair's rejected response: short, and fails most checks


def _training_records(tmp_path) -> Path:
    """IFBench prompts as training records: seed = the prompt, one text per constraint."""
    rows = []
    for r in ROWS:
        ids = r["instruction_id_list"]
        if r["key"] in {"280", "283"} or (len(ids) == 2 and len(rows) < 4):
            ids = [i if n else "ifbench/" + i for n, i in enumerate(ids)]  # both forms
            texts = [f"Follow {i}" for i in ids]
            seed = r["prompt"] + " "
            rows.append(
                {
                    "prompt": records.build_prompt(seed, texts),
                    "instruction_id_list": ids,
                    "kwargs": r["kwargs"],
                    "constraint": texts,
                    "key": r["key"],
                    "chosen": GOOD.get(r["instruction_id_list"][-1], ESSAY),
                    "rejected": REJECTED,
                }
            )
    path = tmp_path / "ifbench_records.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in rows), encoding="utf-8")
    return path


def test_ifbench_records_load_decompose_pair_and_score(tmp_path):
    loaded = records.load_records(str(_training_records(tmp_path)))
    recs = loaded.records
    assert len(recs) == 4 + 2 and loaded.skipped == 0
    assert all(verifiers.is_hard(c.id) for r in recs for c in r.constraints)
    levels = [lv for r in recs for lv in curriculum.decompose(r)]
    assert len(levels) == 4 * 2 + 2 and {lv.level for lv in levels} == {1, 2}
    responses = [GOOD.get(verifiers.ifbench_id(lv.constraints[-1].id), ESSAY) for lv in levels]
    result = rewards.score(levels, responses, timeout_s=None)
    assert (result.verifier_errors, result.verifier_timeouts) == (0, 0)
    for i, (lv, text) in enumerate(zip(levels, responses)):
        verdicts = [verifiers.verify(c.id, c.kwargs, text) for c in lv.constraints]
        assert result.valid[i, : len(verdicts)].all()
        assert result.rewards[i] == pytest.approx(5.0 * sum(verdicts) / len(verdicts))
    custom_levels = [i for i, lv in enumerate(levels) if lv.meta.get("key") in {"280", "283"}]
    assert [result.rewards[i] for i in custom_levels] == [5.0, 5.0]
    rows = pairs.pairs_from_reference(recs)
    quality = pairs.quality_summary(rows, timeout_s=None)
    assert quality["soft_pairs"] == 0 and quality["hard_positives"] == 6
    # The negatives' pass rate is the rule verdicts' on the rejected text (blank is refused).
    negatives = [verifiers.verify(r.constraints[-1].id, r.constraints[-1].kwargs, REJECTED)
                 for r in recs]  # fmt: skip
    assert quality["neg_hard_pass_rate"] == pytest.approx(sum(negatives) / len(negatives))
    assert quality["neg_hard_pass_rate"] < 1.0
    assert quality["per_id"]["ifbench/custom:multiples"][0] == 1.0
