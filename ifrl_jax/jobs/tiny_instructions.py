r"""The tiny-instructions job: the small instruction set shipped for the CPU default job.

The records are synthesized (`ifrl_jax.synthesis`) from the shipped seed tasks and taxonomy in
ifrl_jax/assets/instructions/: ``tiny_seeds_train.jsonl`` (40 tasks, each with a title and an
answer), ``tiny_seeds_heldout.jsonl`` (10 others) and ``tiny_taxonomy.json`` (9 hard ids, 2 soft ids
whose hidden rule oracles are in `ifrl_jax.oracle`). What
stays here is the template program that writes the responses (`_respond`). Deterministic
(seeded); `run` writes (or, with `check=True`, compares) in `out_dir`:

* ``train.jsonl``: multi-constraint instructions (1-3 constraints each, odds
  `COUNT_WEIGHTS`, `PER_TRAIN_SEED` per task) in the reference schema ``{"prompt",
  "instruction_id_list", "kwargs", "constraint"}``; the prompt is built as upstream, ``seed +
  "".join(text + ". " for text in constraint)`` with seed = task + " " (the loader derives the
  seed back from the prompt, so no seed field is stored).
* ``heldout.jsonl``: the same kind of records on seed tasks that ``train.jsonl`` never uses.
* ``train_responses.jsonl``: ``{"prompt", "response"}``, one reference response per training
  record, written by the template program below (`_respond`), for the warm-start supervised
  stage. Every response is checked with the verifiers (soft ids: with their oracle); one that
  does not satisfy all its constraints is an AssertionError. The word-count constraints are
  fitted to these responses (the taxonomy's ``"kwargs": "fit"``, with `_reference` as the
  reference).

The seed tasks and their answers were written for this project (no third-party text; no commas,
so that every combination is satisfiable). A response opens with "Well, " unless its record
asks for no commas: without it `punctuation:no_comma` would hold for every response, and the
warm-started policy, its pseudo-label pairs and GRPO would have nothing to learn about it.
Constraint texts follow IFEval's phrasing (google-research/instruction_following_eval,
Apache-2.0). `launch/make_tiny_instructions.py`
runs it; the shipped files are in ifrl_jax/assets/instructions/.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from ifrl_jax import errors, records, synthesis

ASSETS = os.path.join(os.path.dirname(os.path.dirname(__file__)), "assets", "instructions")
TAXONOMY = os.path.join(ASSETS, "tiny_taxonomy.json")
TRAIN_SEEDS = os.path.join(ASSETS, "tiny_seeds_train.jsonl")
HELDOUT_SEEDS = os.path.join(ASSETS, "tiny_seeds_heldout.jsonl")
PER_TRAIN_SEED = 7
PER_HELDOUT_SEED = 20
COUNT_WEIGHTS = (0.25, 0.4, 0.35)  # odds of 1, 2, 3 constraints
POSTSCRIPTS = {"P.S.": "P.S. Thank you for reading.", "P.P.S": "P.P.S I hope this helps."}


def _respond(task: str, title: str, answer: str, ids: list[str], kwargs: list[dict]) -> str:
    """The template program: a response that satisfies every constraint of the record."""
    kw = dict(zip(ids, kwargs))
    parts = []
    if "combination:repeat_prompt" in kw:
        parts.append(kw["combination:repeat_prompt"]["prompt_to_repeat"])
    if "detectable_format:title" in kw:
        parts.append(f"<<{title}>>")
    body = answer
    if "punctuation:no_comma" not in kw:  # commas where allowed, so that no_comma is a real ask
        body = "Well, " + (body if body.startswith("I ") else body[0].lower() + body[1:])
    if "style:enthusiastic" in kw:
        body = f"What a wonderful thing to write about! {body}"
    if "soft_content:weather" in kw:
        body += " Outside the weather is sunny and warm."
    if "keywords:existence" in kw:
        words = kw["keywords:existence"]["keywords"]
        body += f" It makes me think of {' and '.join(words)}."
    parts.append(body)
    if "detectable_content:postscript" in kw:
        marker = kw["detectable_content:postscript"]["postscript_marker"]
        parts.append(POSTSCRIPTS[marker])
    text = "\n\n".join(parts)
    if "startend:end_checker" in kw:
        text += " " + kw["startend:end_checker"]["end_phrase"]
    if "change_case:english_lowercase" in kw:
        text = text.lower()
    if "startend:quotation" in kw:
        text = f'"{text}"'
    return text


def _reference(seed: synthesis.Seed, ids: list[str], kwargs: list[dict]) -> str:
    """`_respond` for a shipped seed task (its title is the seed file's "title" field)."""
    return _respond(seed.instruction, seed.meta["title"], seed.output, ids, kwargs)


def generate(seed: int = 0) -> dict[str, list[dict]]:
    """Builds the three files' rows: `synthesis.synthesize` on the shipped seeds and taxonomy.

    Args:
      seed: random seed.

    Returns:
      ``{"train.jsonl": rows, "heldout.jsonl": rows, "train_responses.jsonl": rows}``.
    """
    taxonomy = synthesis.load_taxonomy(TAXONOMY)
    train_seeds = synthesis.load_seeds(TRAIN_SEEDS)
    heldout_seeds = synthesis.load_seeds(HELDOUT_SEEDS)
    rng = np.random.default_rng(seed)  # one stream: train, then held-out, then the shuffle
    options = dict(min_constraints=1, max_constraints=3, weights=COUNT_WEIGHTS, respond=_reference)
    train = synthesis.synthesize(
        train_seeds, taxonomy, per_seed=PER_TRAIN_SEED, seed=rng, **options
    )
    heldout = synthesis.synthesize(heldout_seeds, taxonomy, per_seed=PER_HELDOUT_SEED, seed=rng,
                                   **options)  # fmt: skip
    by_prompt = {s.prompt: s for s in train_seeds}
    responses = []
    for rec in train:
        task = by_prompt[records.derive_seed(rec["prompt"], rec["constraint"])]
        response = _reference(task, rec["instruction_id_list"], rec["kwargs"])
        responses.append({"prompt": rec["prompt"], "response": response})
    order = rng.permutation(len(train))
    train = [train[i] for i in order]
    responses = [responses[i] for i in order]
    return {"train.jsonl": train, "heldout.jsonl": heldout, "train_responses.jsonl": responses}


def verify_responses(train: list[dict], responses: list[dict]) -> None:
    """Raises AssertionError unless every response satisfies all constraints of its record."""
    from ifrl_jax import oracle, verifiers

    for rec, resp in zip(train, responses):
        assert rec["prompt"] == resp["prompt"]
        for cid, kw in zip(rec["instruction_id_list"], rec["kwargs"]):
            if not verifiers.is_hard(cid):  # a soft id: its hidden oracle
                ok = oracle.check(cid, resp["response"])
            else:
                ok = verifiers.verify(cid, verifiers.check_spec(cid, kw), resp["response"])
            assert ok, f"template response fails {cid} {kw}:\n{resp['response']}"


def dumps(rows: list[dict]) -> str:
    """JSONL text of rows."""
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def run(out_dir: str, *, seed: int = 0, check: bool = False) -> dict[str, Any]:
    """Generates the three files, verifies the responses, and writes or compares the files.

    Prints `<path>: <n> rows` for each file as it is written or found equal.

    Args:
      out_dir: directory of the files (created when writing).
      seed: random seed (the shipped files: 0).
      check: compare with the files in `out_dir` instead of writing them; a file that differs
        is an `errors.UserError` naming it (a missing one, FileNotFoundError).

    Returns:
      The summary: `out_dir`, `seed`, `check`, and `rows`, the number of rows of each file by
      its path.
    """
    files = generate(seed)
    verify_responses(files["train.jsonl"], files["train_responses.jsonl"])
    train_tasks = {r["prompt"].split(".")[0] for r in files["train.jsonl"]}
    assert not train_tasks & {r["prompt"].split(".")[0] for r in files["heldout.jsonl"]}
    if not check:
        os.makedirs(out_dir, exist_ok=True)
    rows_by_path = {}
    for name, rows in files.items():
        path = os.path.join(out_dir, name)
        if check:
            with open(path, encoding="utf-8") as f:
                if f.read() != dumps(rows):
                    raise errors.UserError(f"{path} differs from the generator's output")
        else:
            with open(path, "w", encoding="utf-8") as f:
                f.write(dumps(rows))
        print(f"{path}: {len(rows)} rows", flush=True)
        rows_by_path[path] = len(rows)
    return {"out_dir": out_dir, "seed": seed, "check": check, "rows": rows_by_path}
