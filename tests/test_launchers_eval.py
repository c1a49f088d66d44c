"""The data, evaluation and planning launchers on bad input: one `error: ...` line naming the
file:line or flag on stderr, exit status 2, nothing compiled (each run is a few seconds)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
GOOD = {
    "prompt": "Write a poem. Do not use commas. ",
    "instruction_id_list": ["punctuation:no_comma"],
    "kwargs": [{}],
    "constraint": ["Do not use commas"],
}
PROMPT = {"key": 1, "prompt": "A", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    """Input paths: good (a record), bad (line 2 has no prompt), prompts (line 2 is not JSON),
    csv (an unknown file type), nope (does not exist)."""
    d = tmp_path_factory.mktemp("inputs")
    (d / "good.jsonl").write_text(json.dumps(GOOD) + "\n")
    (d / "bad.jsonl").write_text(json.dumps(GOOD) + "\n" + json.dumps({"prompt": 3}) + "\n")
    (d / "prompts.jsonl").write_text(json.dumps(PROMPT) + "\nnot json\n")
    (d / "in.csv").write_text("prompt\n")
    names = {"good": "good.jsonl", "bad": "bad.jsonl", "prompts": "prompts.jsonl",
             "csv": "in.csv", "nope": "nope.jsonl"}  # fmt: skip
    return {key: str(d / name) for key, name in names.items()}


CASES = [  # (launcher, flags with {path} placeholders, what the error line must name)
    ("build_data", ["--input={nope}", "--output={out}/l.jsonl"], "nope.jsonl"),
    ("build_data", ["--input={bad}", "--output={out}/l.jsonl"], "bad.jsonl:2: field 'prompt"),
    ("build_data", ["--input={csv}", "--output={out}/l.jsonl"], "in.csv"),
    ("build_data", ["--output={out}/l.jsonl"], "--input"),
    ("eval", ["--hf_path=h", "--output_dir={out}", "--mesh=fsdp=2"], "--mesh='fsdp=2'"),
    ("eval", ["--hf_path=h", "--output_dir={out}", "--records={nope}"], "nope.jsonl"),
    ("eval", ["--hf_path=h", "--output_dir={out}", "--prompts=", "--records={bad}"],
     "bad.jsonl:2: field 'prompt'"),
    ("eval", ["--hf_path=h", "--output_dir={out}", "--n=4"], "--n=4"),
    ("eval", ["--hf_path={out}/none", "--output_dir={out}", "--prompts={prompts}"],
     "prompts.jsonl:2"),
    ("eval_ifeval", ["--input_data={prompts}", "--input_response_data={good}",
                     "--output_dir={out}"], "prompts.jsonl:2"),
    ("eval_ifeval", ["--input_data={nope}", "--input_response_data={good}",
                     "--output_dir={out}"], "nope.jsonl"),
    ("plan", ["--mesh=fsdp=2"], "--mesh='fsdp=2'"),
    ("plan", ["--sweep", "--meshes=fsdp:8;tp=2"], "--meshes='tp=2'"),
    ("plan", ["--accelerator=v100"], "--accelerator='v100'"),
    ("plan", ["--minibatch_prompts=7"], "--minibatch_prompts=7"),
]  # fmt: skip


@pytest.mark.parametrize("launcher, argv, names", CASES)
def test_bad_input_is_one_error_line_and_status_2(files, tmp_path, launcher, argv, names):
    argv = [a.format(out=tmp_path, **files) for a in argv]
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))
    cmd = [sys.executable, str(REPO / "launch" / f"{launcher}.py"), *argv]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert names in lines[0], lines[0]
    assert proc.stdout == ""
