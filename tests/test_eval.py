"""Evaluation: pass@k, scoring of hand-written responses, a tiny random policy end to end with the
tiny tokenizer (HF directory), and restoring a policy from a GRPO orbax checkpoint."""

import dataclasses
import itertools
import json
import os

import jax
import numpy as np
import pytest

from ifrl_jax import checkpoint, evaluate, models, records, sharding
from ifrl_jax import tokenizer as tokenizer_lib
from ifrl_jax import train_step as ts
from ifrl_jax.errors import UserError
from ifrl_jax.jobs import evaluate as eval_job
from ifrl_jax.verifiers import ifeval


def _jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _write(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return str(path)


# ----------------------------------------------------------------------------------- pass@k


def test_pass_at_k_hand_values():
    assert evaluate.pass_at_k(5, 2, 1) == pytest.approx(2 / 5)
    assert evaluate.pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)  # 1 - C(3,2)/C(5,2)
    assert evaluate.pass_at_k(5, 2, 4) == 1.0  # only 3 failures: any 4 samples hold a pass
    assert evaluate.pass_at_k(4, 0, 4) == 0.0


def test_pass_at_k_equals_enumerating_subsets():
    for n in range(1, 7):
        for c in range(n + 1):
            for k in range(1, n + 1):
                subsets = list(itertools.combinations(range(n), k))
                hits = sum(any(i < c for i in s) for s in subsets)  # samples 0..c-1 pass
                assert evaluate.pass_at_k(n, c, k) == pytest.approx(hits / len(subsets))


def test_pass_at_k_table_and_bad_input():
    table = evaluate.pass_at_k_table([[True, False], [False, False]], [1, 2])
    assert table == {"pass@1": pytest.approx(0.25), "pass@2": pytest.approx(0.5)}
    assert evaluate.default_ks(1) == [1]
    assert evaluate.default_ks(5) == [1, 2, 4, 5]
    assert evaluate.default_ks(8) == [1, 2, 4, 8]
    with pytest.raises(ValueError, match="k <= n"):
        evaluate.pass_at_k(2, 1, 3)


# ------------------------------------------------------------------- scoring, no model


def test_ifeval_scores_and_pass_at_k_of_known_responses(tmp_path):
    path = _write(
        tmp_path / "p.jsonl",
        [
            {"key": 1, "prompt": "A", "instruction_id_list": ["punctuation:no_comma"],
             "kwargs": [{}]},
            {"key": 2, "prompt": "B", "instruction_id_list": ["change_case:english_lowercase"],
             "kwargs": [{}]},
        ],
    )  # fmt: skip
    prompts = ifeval.read_prompts(path)
    texts = ["x, y", "a, b", "UPPER", "all lower"]  # grouped: A fails twice; B fails, passes
    summary, text = evaluate.evaluate_ifeval(prompts, texts, n=2, output_dir=str(tmp_path / "o"))
    assert summary["prompt_strict"] == 0.0 and summary["inst_strict"] == 0.0  # sample 0
    assert summary["pass@1_strict"] == pytest.approx(0.25)
    assert summary["pass@2_strict"] == pytest.approx(0.5)
    assert _jsonl(tmp_path / "o" / "responses.jsonl") == [
        {"prompt": "A", "response": "x, y"},
        {"prompt": "B", "response": "UPPER"},
    ]
    assert len(_jsonl(tmp_path / "o" / "samples.jsonl")) == 4
    assert "pass@2" in text and "punctuation:no_comma" in text


def test_records_tables_and_math_exact_match(tmp_path):
    path = _write(
        tmp_path / "r.jsonl",
        [
            {"prompt": "Say hi. Do not use commas. ", "instruction_id_list":
             ["punctuation:no_comma"], "kwargs": [{}], "constraint": ["Do not use commas"]},
            {"prompt": "What is 1+1?", "instruction_id_list": ["light"], "kwargs": [{}],
             "answer": "2"},
        ],
    )  # fmt: skip
    recs = records.load_records(path).records
    texts = ["hi there", "hi, there", "so \\boxed{2}", "\\boxed{3}"]
    out, text = evaluate.evaluate_records(recs, texts, n=2, output_dir=str(tmp_path))
    assert out["math_accuracy"] == 0.5
    assert out["records/prompt_pass_rate"] == 1.0  # sample 0 of the instruction record
    assert out["records/pass@1"] == 0.5 and out["records/pass@2"] == 1.0
    assert out["math/pass@2"] == 1.0
    assert out["records/id/punctuation:no_comma"] == 0.5
    rows = _jsonl(tmp_path / "records_results.jsonl")
    assert [r["follow_all"] for r in rows] == [True, False, True, False]
    assert "L1" in text and "math" in text


# ------------------------------------------------------------------------ with a model


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory):
    cfg = models.get_preset("tiny", vocab_size=2048)
    rng = np.random.default_rng(0)  # numpy weights: no init program to compile
    params = jax.tree.map(
        lambda a: rng.normal(0, 0.1, a.shape).astype(a.dtype), models.abstract_params(cfg)
    )
    path = str(tmp_path_factory.mktemp("tiny_hf"))
    models.save_hf(cfg, params, path)
    return path, cfg, params


def _read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def test_eval_tiny_policy_end_to_end(tiny_hf, tmp_path, capsys):
    path, _, _ = tiny_hf
    prompts = _write(tmp_path / "ifeval.jsonl", _jsonl(evaluate.IFEVAL_PROMPTS)[:5])
    heldout = os.path.join(os.path.dirname(evaluate.__file__), "assets", "instructions")
    out = str(tmp_path / "out")
    config = eval_job.EvalConfig(
        output_dir=out, hf_path=path, tokenizer=tokenizer_lib.TINY_TOKENIZER_DIR,
        prompts=prompts, records=os.path.join(heldout, "heldout.jsonl"), limit=3,
        mesh={"fsdp": -1}, temperature=1.0, n=2, max_new_tokens=8, batch_size=8,
        dtype="float32", cache_dtype="float32",
    )  # fmt: skip
    summary = eval_job.run(config)
    text = capsys.readouterr().out  # the report, printed by the job
    json.dumps(summary)  # the launcher's final line
    assert _read_json(os.path.join(out, "summary.json")) == json.loads(json.dumps(summary))
    responses = _jsonl(os.path.join(out, "responses.jsonl"))
    assert len(responses) == 3 and all(set(r) == {"prompt", "response"} for r in responses)
    # google's format round trip: the stand-alone evaluator gives the same four accuracies.
    first3 = _write(tmp_path / "first3.jsonl", _jsonl(prompts)[:3])
    report = ifeval.run(first3, os.path.join(out, "responses.jsonl"), str(tmp_path / "again"))
    again = json.loads(report.splitlines()[-1])
    assert {k: summary[k] for k in again} == again
    for mode in ("strict", "loose"):
        assert len(_jsonl(os.path.join(out, f"eval_results_{mode}.jsonl"))) == 3
    # pass@1 is the mean over both samples of the evaluator's prompt-level verdict.
    samples = _jsonl(os.path.join(out, "samples.jsonl"))
    read = ifeval.read_prompts(first3)
    verdicts = []
    for j in range(2):
        resp = {s["prompt"]: s["response"] for s in samples if s["sample"] == j}
        rows = ifeval.evaluate(read, resp, timeout_s=None)["strict"]
        verdicts.append([r["follow_all_instructions"] for r in rows])
    assert summary["pass@1_strict"] == pytest.approx(np.mean(verdicts))
    assert summary["pass@2_strict"] == pytest.approx(np.mean(np.any(verdicts, axis=0)))
    assert summary["records/count"] == 3
    assert len(_jsonl(os.path.join(out, "records_results.jsonl"))) == 6
    assert "instruction id" in text and "held-out records" in text


def test_ifeval_and_ifbench_in_one_run(tiny_hf, tmp_path):
    """--benchmark=ifeval,ifbench: one generation pass over both prompt sets, each scored by its
    own ids into its own subdirectory; the summary keys carry the benchmark."""
    path, _, _ = tiny_hf
    out = tmp_path / "both"
    config = eval_job.EvalConfig(
        output_dir=str(out), hf_path=path, tokenizer=tokenizer_lib.TINY_TOKENIZER_DIR,
        benchmark="ifeval,ifbench", limit=3, mesh={"fsdp": -1}, max_new_tokens=4, batch_size=8,
        dtype="float32", cache_dtype="float32",
    )  # fmt: skip
    summary = eval_job.run(config)
    for bench in ("ifeval", "ifbench"):
        assert 0.0 <= summary[f"{bench}/prompt_strict"] <= 1.0
        rows = _jsonl(out / bench / "eval_results_strict.jsonl")
        assert len(rows) == 3 and len(_jsonl(out / bench / "responses.jsonl")) == 3
        shipped = ifeval.read_prompts(ifeval.DEFAULT_PROMPTS[bench], benchmark=bench)[:3]
        assert [r["prompt"] for r in rows] == [p.prompt for p in shipped]
    assert any(i.startswith("count:") for p in shipped for i in p.instruction_id_list)
    with pytest.raises(UserError, match="--prompts"):
        eval_job.check(dataclasses.replace(config, prompts="p.jsonl"))
    with pytest.raises(UserError, match="--benchmark"):
        eval_job.check(dataclasses.replace(config, benchmark="ifeval,helm"))


def test_load_policy_from_checkpoint(tiny_hf, tmp_path):
    path, cfg, params = tiny_hf
    mesh = sharding.make_mesh({"fsdp": -1})
    placed = jax.device_put(params, models.param_shardings(cfg, mesh, "fsdp"))
    opt_state = ts.make_optimizer(ts.OptimConfig()).init(placed)  # eager: the run's tree
    state = ts.TrainState(params=placed, opt_state=opt_state, step=jax.numpy.int32(7))
    workdir = tmp_path / "run"
    ckpt = checkpoint.Checkpointer(str(workdir / "ckpt"), async_save=False)
    ckpt.save(7, state, {"data": None})
    ckpt.close()
    models.save_hf(cfg, params, str(workdir / "hf_final"))  # the config comes from here
    got_cfg, got, source = eval_job.load_policy(
        checkpoint=str(workdir), mesh=mesh, rules="fsdp", dtype="float32"
    )
    assert source.endswith(os.path.join("ckpt", "7", "state"))
    assert got_cfg.vocab_size == 2048 and not got_cfg.scan_layers
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(UserError, match="--preset"):  # tiny's 256-token vocab does not match
        eval_job.load_policy(checkpoint=str(workdir), preset="tiny", mesh=mesh, rules="fsdp")
    with pytest.raises(FileNotFoundError, match="--checkpoint"):
        eval_job.load_policy(checkpoint=str(tmp_path), mesh=mesh, rules="fsdp")


def test_think_mode_judges_the_answer_after_the_think_block(tmp_path):
    path = _write(
        tmp_path / "p.jsonl",
        [
            {
                "key": 1,
                "prompt": "A",
                "instruction_id_list": ["punctuation:no_comma"],
                "kwargs": [{}],
            }
        ],
    )
    prompts = ifeval.read_prompts(path)
    texts = ["<think>a, b</think>\n\nno commas here", "no think block at all"]
    summary, _ = evaluate.evaluate_ifeval(
        prompts, texts, n=2, output_dir=str(tmp_path), think_mode="required"
    )
    assert summary["prompt_strict"] == 1.0  # sample 0: judged after </think>
    assert summary["pass@1_strict"] == 0.5  # sample 1: no closing tag fails
    assert _jsonl(tmp_path / "responses.jsonl")[0]["response"] == texts[0]  # raw output kept
    assert _jsonl(tmp_path / "responses_answer.jsonl")[0]["response"] == "no commas here"


@pytest.mark.parametrize(
    "fields, message",
    [
        ({}, "exactly one of --hf_path and --checkpoint"),
        ({"hf_path": "h", "checkpoint": "c"}, "exactly one of --hf_path and --checkpoint"),
        ({"hf_path": "h", "prompts": ""}, "nothing to evaluate"),
        ({"hf_path": "h", "n": 2}, "--n=2: .*--temperature > 0"),
        ({"hf_path": "h", "think_mode": "maybe"}, "--think_mode='maybe'"),
        ({"hf_path": "h", "preset": "qwen9"}, "--preset='qwen9': unknown preset"),
        ({"hf_path": "h", "overrides": {"vocab": 3}}, r"--overrides: \['vocab'\]"),
        ({"hf_path": "h", "dtype": "fp8"}, "--dtype='fp8'"),
        ({"hf_path": "h", "batch_size": 0}, "--batch_size=0"),
        ({"hf_path": "h", "top_p": 0.0}, "--top_p=0.0"),
        ({"hf_path": "h", "sharding": "zero3"}, r"\(flag --sharding\)"),
    ],
)
def test_eval_config_errors_name_the_flag(fields, message):
    with pytest.raises(UserError, match=message):
        eval_job.check(eval_job.EvalConfig(output_dir="o", **fields))


def test_parse_overrides():
    got = eval_job.parse_overrides("vocab_size=2048,remat=full,scan_layers=true")
    assert got == {"vocab_size": 2048, "remat": "full", "scan_layers": True}
    assert eval_job.parse_overrides("") == {}
    with pytest.raises(UserError, match="--overrides='a=1,b': 'b' is not key=value"):
        eval_job.parse_overrides("a=1,b")
