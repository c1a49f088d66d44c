"""The training launchers on user mistakes: one `error: ...` line naming the flag, config key
or file:line on stderr, exit status 2, before anything compiles (a few seconds each)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "tiny_train_config.py"


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    """bad: line 2 is not JSON; pairs: line 2's response is empty; nope: does not exist."""
    d = tmp_path_factory.mktemp("inputs")
    row = {"prompt": "Hi. Do not use commas. ", "instruction_id_list": ["punctuation:no_comma"],
           "kwargs": [{}], "constraint": ["Do not use commas"]}  # fmt: skip
    (d / "bad.jsonl").write_text(json.dumps(row) + "\n{not json\n")
    pair = {
        "constraint": "x",
        "constraint_id": "style:x",
        "kwargs": {},
        "response": "y",
        "label": 1,
        "level": 1,
        "source": "s",
    }
    (d / "pairs.jsonl").write_text(json.dumps(pair) + "\n" + json.dumps({**pair, "response": ""}))
    return {"bad": str(d / "bad.jsonl"), "pairs": str(d / "pairs.jsonl"),
            "nope": str(d / "nope.jsonl")}  # fmt: skip


CASES = [  # (launcher, flags with {path} placeholders, what the error line must name)
    ("train_grpo", ["--config.rollout.n=1"], "config.rollout.n=1"),
    ("train_grpo", ["--config.grpo.kl_estimator=k9"], "config.grpo.kl_estimator='k9'"),
    ("train_grpo", ["--config.data.train={nope}"], "nope.jsonl does not exist"),
    ("train_grpo", ["--config.data.train={bad}"], "bad.jsonl:2"),
    ("train_grpo", ["--config.rollout.nn=3"], "rollout.nn"),
    ("train_grpo", ["--config=configs/nope.py"], "configs/nope.py"),
    ("train_grpo", ["--config.mesh.data=3", "--config.mesh.fsdp=8"], "config.mesh"),
    ("train_grpo", ["--config.rollout.n=abc"], "--config.rollout.n"),
    ("train_grpo", ["--coordinator_address=127.0.0.1:1"], "--num_processes"),
    ("train_rm", ["--config.pairs={nope}"], "nope.jsonl"),
    ("train_rm", ["--config.pairs={pairs}"], "pairs.jsonl:2: field 'response' is empty"),
    ("train_rm", ["--config.batch_size=3"], "config.batch_size=3"),  # 8 data-parallel devices
    ("train_rm", ["--config.schedule=linear"], "config.schedule='linear'"),
    ("build_pairs", ["--input={bad}", "--output={out}/p.jsonl", "--format=reference"],
     "bad.jsonl:2"),
    ("build_pairs", ["--input={bad}", "--output={out}/p.jsonl", "--mesh=fsdp=2"],
     "--mesh='fsdp=2'"),
    ("build_pairs", ["--output={out}/p.jsonl"], "--input"),
]  # fmt: skip


@pytest.mark.parametrize("launcher, argv, names", CASES)
def test_bad_input_is_one_error_line_and_status_2(files, tmp_path, launcher, argv, names):
    argv = [a.format(out=tmp_path, **files) for a in argv]
    if launcher == "train_grpo":
        argv = [*argv, f"--config.workdir={tmp_path}/w"]
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))
    cmd = [sys.executable, str(REPO / "launch" / f"{launcher}.py"), *argv]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert names in errors[0], errors[0]
    assert proc.stdout == ""


def test_verbosity_shows_the_traceback(tmp_path):
    """--verbosity=1 keeps the full traceback of the same mistake (for debugging)."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))
    cmd = [sys.executable, str(REPO / "launch" / "train_grpo.py"), "--config.rollout.n=1",
           f"--config.workdir={tmp_path}", "--verbosity=1"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert proc.returncode != 0 and "Traceback" in proc.stderr
    assert "config.rollout.n=1" in proc.stderr
