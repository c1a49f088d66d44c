"""Records, validation, curriculum levels, the levels job, schedules, the grain pipeline and
prompt encoding."""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ifrl_jax import curriculum, data, pairs, records
from ifrl_jax.errors import UserError
from ifrl_jax.jobs import levels as levels_job
from ifrl_jax.records import Constraint, Record, RecordError

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[2] / "shared" / "upstream-verl-if-data"
ASSETS = REPO / "ifrl_jax" / "assets" / "instructions"
needs_shared = pytest.mark.skipif(
    not (SHARED / "train_from_parquet.jsonl").exists(),
    reason=f"reference data not found at {SHARED} (the ../shared checkout of the project)",
)


def _write_jsonl(path: Path, rows: list) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def _row(**overrides) -> dict:
    row = {
        "prompt": "Write a poem. Do not use commas. Answer in lowercase. ",
        "instruction_id_list": ["punctuation:no_comma", "change_case:english_lowercase"],
        "kwargs": [{}, {}],
        "constraint": ["Do not use commas", "Answer in lowercase"],
    }
    row.update(overrides)
    return row


def _levels(n_records: int = 12, k: int = 3) -> list[Record]:
    recs = []
    for i in range(n_records):
        cons = tuple(Constraint("punctuation:no_comma", {}, f"c{j}") for j in range(k))
        recs.append(Record(f"seed {i} ", cons, seed=f"seed {i} ", source=f"f:{i}"))
    return curriculum.decompose_all(recs).records


# ----------------------------------------------------------------------------- reference data


@pytest.fixture(scope="module")
def reference():
    raw = [json.loads(line) for line in open(SHARED / "train_from_parquet.jsonl", encoding="utf-8")]
    return raw, records.load_records(str(SHARED / "train_from_parquet.jsonl"))


@needs_shared
def test_reference_levels_match_the_upstream_construction(reference):
    raw, loaded = reference
    assert len(loaded.records) == 1319 and loaded.skipped == 0
    assert loaded.seeds_derived == 1319 and loaded.seeds_missing == 0  # derivation coverage
    # The derived seed is the seed_data task, instruction + " " + input, for every record.
    seed_data = [json.loads(line) for line in open(SHARED / "seed_data.jsonl", encoding="utf-8")]
    tasks = {s["instruction"] + " " + s["input"] for s in seed_data}
    assert all(r.seed in tasks for r in loaded.records)

    levels = curriculum.decompose_all(loaded.records).records
    assert len(levels) == 6595
    assert curriculum.level_counts(levels) == {f"L{k}": 1319 for k in range(1, 6)}
    for i, rec in enumerate(raw):
        for k in range(1, 6):
            level = levels[5 * i + k - 1]
            assert level.level == k and level.source == loaded.records[i].source
            assert level.instruction_ids == tuple(rec["instruction_id_list"][:k])
            assert level.prompt == level.seed + "".join(t + ". " for t in rec["constraint"][:k])
        assert levels[5 * i + 4].prompt == rec["prompt"]  # L5 is the record itself
        assert levels[5 * i + 4].meta["chosen"] == rec["chosen"]
        assert levels[5 * i].meta == {}


@needs_shared
def test_parquet_loads_like_jsonl_with_null_kwargs_removed(reference):
    _, loaded = reference
    from_parquet = records.load_records(str(SHARED / "train.parquet")).records
    assert [r.constraints for r in from_parquet] == [r.constraints for r in loaded.records]
    assert [r.prompt for r in from_parquet] == [r.prompt for r in loaded.records]
    assert from_parquet[7].source.endswith("train.parquet:row 7")


@needs_shared
def test_ifeval_records_load_without_texts_and_cannot_be_split():
    loaded = records.load_records(str(SHARED / "val_set.jsonl"))
    assert len(loaded.records) == 541 and loaded.seeds_missing == 541
    first = loaded.records[0]
    assert first.meta == {"key": 1000} and first.constraints[0].text is None
    with pytest.raises(RecordError, match="cannot split"):
        curriculum.decompose(first)
    skipped = curriculum.decompose_all(loaded.records, on_error="skip")
    assert skipped.records == [] and skipped.skipped == 541


@needs_shared
def test_build_data_cli(tmp_path):
    out = tmp_path / "levels.jsonl"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    argv = [
        sys.executable,
        str(REPO / "launch" / "build_data.py"),
        f"--input={SHARED / 'train.parquet'}",
        f"--output={out}",
    ]
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=True, cwd=tmp_path)
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["records_in"] == 1319 and summary["records_out"] == 6595
    assert summary["per_level"] == {f"L{k}": 1319 for k in range(1, 6)}
    assert summary["skipped"] == 0
    back = records.load_records(str(out)).records  # the output reloads, seeds checked
    assert len(back) == 6595 and back[4].level == 5 and back[0].source.endswith("row 0")


# ----------------------------------------------------------------------------- validation


def test_prompt_construction_keeps_text_punctuation():
    texts = ["Use bullets:\n* a\n", "Be funny.", "No commas"]
    prompt = records.build_prompt("Task. ", texts)
    assert prompt == "Task. Use bullets:\n* a\n. Be funny.. No commas. "
    assert records.derive_seed(prompt, texts) == "Task. "
    assert records.derive_seed(prompt, ["other"]) is None
    assert records.derive_seed(prompt, []) is None


def test_bad_rows_name_file_line_and_field(tmp_path):
    path = _write_jsonl(tmp_path / "bad.jsonl", [_row(), _row(kwargs=[{}])])
    with pytest.raises(RecordError, match=r"bad\.jsonl:2: field 'kwargs'"):
        records.load_records(path)
    path = _write_jsonl(tmp_path / "bad2.jsonl", [_row(prompt=""), _row()])
    with pytest.raises(RecordError, match=r"bad2\.jsonl:1: field 'prompt'"):
        records.load_records(path)
    (tmp_path / "bad3.jsonl").write_text(json.dumps(_row()) + "\n\n{oops\n")
    with pytest.raises(RecordError, match=r"bad3\.jsonl:3: not valid JSON"):
        records.load_records(str(tmp_path / "bad3.jsonl"))
    path = _write_jsonl(tmp_path / "bad4.jsonl", [_row(instruction_id_list=["no:such_id", "x"])])
    with pytest.raises(ValueError, match=r"bad4\.jsonl:1: field 'instruction_id_list\[0\]'"):
        records.load_records(path)
    path = _write_jsonl(tmp_path / "bad5.jsonl", [_row(seed="Other task. ")])
    with pytest.raises(RecordError, match=r"bad5\.jsonl:1: field 'seed'"):
        records.load_records(path)
    soft = _row(instruction_id_list=["punctuation:no_comma", "style:humor"], constraint=[])
    path = _write_jsonl(tmp_path / "bad6.jsonl", [_row(), soft])
    match = r"bad6\.jsonl:2: field 'constraint': soft id 'style:humor"
    with pytest.raises(RecordError, match=match):
        records.load_records(path)


def test_bad_kwargs_are_rejected_by_check_spec(tmp_path):
    row = _row(
        instruction_id_list=["length_constraints:number_words"],
        kwargs=[{"num_words": "many", "relation": "at least"}],
        constraint=["Answer with at least many words"],
    )
    path = _write_jsonl(tmp_path / "kw.jsonl", [row])
    with pytest.raises(ValueError, match=r"kw\.jsonl:1: field 'kwargs\[0\]'"):
        records.load_records(path)


def test_parquet_errors_name_the_row(tmp_path):
    kwargs = [{"relation": None}, {"relation": None}]  # as Parquet stores absent keys
    rows = [_row(kwargs=kwargs), _row(kwargs=kwargs, instruction_id_list=[])]
    path = tmp_path / "t.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    with pytest.raises(RecordError, match=r"t\.parquet:row 1: field 'instruction_id_list'"):
        records.load_records(str(path))


def test_skip_policy_counts_and_logs(tmp_path, caplog):
    rows = [_row(), _row(kwargs=[{}]), _row(prompt=None), _row(), _row(kwargs=[{}])]
    path = _write_jsonl(tmp_path / "mixed.jsonl", rows)
    with caplog.at_level("WARNING"):
        loaded = records.load_records(path, on_error="skip")
    assert len(loaded.records) == 2 and loaded.skipped == 3
    assert loaded.reasons == {"RecordError in kwargs": 2, "RecordError in prompt": 1}
    assert "Skipped 3 invalid records" in caplog.text
    with pytest.raises(ValueError, match="on_error"):
        records.load_records(path, on_error="ignore")


def test_math_records(tmp_path):
    rows = [
        {"prompt": "1+1?", "instruction_id_list": ["light"], "kwargs": [{}], "answer": "2"},
        {"prompt": "2+2?", "instruction_id_list": ["light_choice"], "kwargs": [{}],
         "constraint": ["4"]},
        {"prompt": "3+3?", "instruction_id_list": ["light"], "ground_truth": "6"},
    ]  # fmt: skip
    path = _write_jsonl(tmp_path / "math.jsonl", rows)
    loaded = records.load_records(path).records
    assert [(r.kind, r.answer, r.constraints) for r in loaded] == [
        ("math", "2", ()),
        ("math", "4", ()),
        ("math", "6", ()),
    ]
    assert curriculum.decompose(loaded[0]) == [loaded[0]]
    bad = _write_jsonl(tmp_path / "m2.jsonl", [dict(rows[0], answer=None, constraint=[])])
    with pytest.raises(RecordError, match="field 'answer'"):
        records.load_records(bad)
    mixed = dict(rows[0], instruction_id_list=["light", "punctuation:no_comma"])
    with pytest.raises(RecordError, match="cannot be combined"):
        records.load_records(_write_jsonl(tmp_path / "m3.jsonl", [mixed]))


def test_levels_job_writes_every_level_and_counts_skips(tmp_path):
    rows = [_row(key=1), {"prompt": 3}, _row(constraint=[])]  # a bad row; one without texts
    path = _write_jsonl(tmp_path / "in.jsonl", rows)
    out = str(tmp_path / "out" / "levels.jsonl")
    summary = levels_job.run([path], out, on_error="skip")
    assert summary == {
        "records_in": 2, "records_out": 2, "per_level": {"L1": 1, "L2": 1}, "skipped": 2,
        "skip_reasons": {"RecordError in prompt": 1, "no seed (cannot build levels)": 1},
        "seeds_derived": 1, "output": out,
    }  # fmt: skip
    assert [r.level for r in records.load_records(out).records] == [1, 2]
    with pytest.raises(RecordError, match=r"in\.jsonl:2: field 'prompt'") as e:
        levels_job.run(path, out)  # strict: the first bad record, by file:line
    assert isinstance(e.value, UserError)  # printed as one line by the launchers
    (tmp_path / "in.csv").write_text("prompt\n")
    with pytest.raises(UserError, match="unknown file type"):
        levels_job.run(str(tmp_path / "in.csv"), out)


def test_write_then_load_round_trip(tmp_path):
    original = records.load_records(_write_jsonl(tmp_path / "a.jsonl", [_row(key=7)])).records
    levels = curriculum.decompose_all(original).records
    n = records.write_jsonl(levels, str(tmp_path / "out" / "levels.jsonl"))
    back = records.load_records(str(tmp_path / "out" / "levels.jsonl")).records
    assert n == 2 and back == levels
    assert back[1].meta == {"key": 7} and back[0].meta == {}


# ----------------------------------------------------------------------------- pipeline


def _epoch(recs: list[Record], **kw) -> list[list[Record]]:
    ds = data.make_dataset(recs, num_epochs=1, shard_index=0, shard_count=1, **kw)
    return list(ds)


def test_in_order_schedule_runs_levels_in_phases():
    levels = _levels(12, 3)
    batches = _epoch(levels, batch_size=4, schedule="in_order", seed=3)
    flat = [r for b in batches for r in b]
    assert sorted(map(id, flat)) == sorted(map(id, levels))  # each record once per epoch
    assert [r.level for r in flat] == [1] * 12 + [2] * 12 + [3] * 12
    assert [r.source for r in flat[:12]] != [f"f:{i}" for i in range(12)]  # shuffled in phase
    # Two epochs: the phases restart, reshuffled.
    ds = data.make_dataset(levels, batch_size=4, schedule="in_order", seed=3, num_epochs=2,
                           shard_index=0, shard_count=1)  # fmt: skip
    two = [r for b in ds for r in b]
    assert [r.level for r in two[36:]] == [1] * 12 + [2] * 12 + [3] * 12
    assert [r.source for r in two[36:48]] != [r.source for r in two[:12]]


def test_mixed_schedule_shuffles_all_levels():
    levels = _levels(12, 3)
    flat = [r for b in _epoch(levels, batch_size=4, schedule="mixed", seed=0) for r in b]
    assert sorted(map(id, flat)) == sorted(map(id, levels))
    assert sorted(r.level for r in flat[:12]) != [1] * 12
    again = [r for b in _epoch(levels, batch_size=4, schedule="mixed", seed=0) for r in b]
    assert again == flat  # deterministic in the seed
    other = [r for b in _epoch(levels, batch_size=4, schedule="mixed", seed=1) for r in b]
    assert other != flat


def test_level_less_records_spread_over_phases():
    levels = _levels(4, 2)
    math = [Record(f"q{i}", (), kind="math", answer="1", source=f"m:{i}") for i in range(4)]
    flat = [r for b in _epoch(levels + math, batch_size=2, schedule="in_order") for r in b]
    first, second = flat[:6], flat[6:]
    assert sum(r.kind == "math" for r in first) == 2 and sum(r.kind == "math" for r in second) == 2
    assert all(r.level in (1, None) for r in first) and all(r.level in (2, None) for r in second)


@pytest.mark.parametrize("schedule", sorted(data.SCHEDULES))
def test_hosts_read_disjoint_slices_of_one_global_order(schedule):
    levels = _levels(16, 3)  # 48 records, global batch 8 -> 6 batches per epoch
    kw = dict(batch_size=8, schedule=schedule, seed=5, num_epochs=1)
    single = list(data.make_dataset(levels, shard_index=0, shard_count=1, **kw))
    hosts = [list(data.make_dataset(levels, shard_index=h, shard_count=2, **kw)) for h in (0, 1)]
    assert len(hosts[0]) == len(hosts[1]) == 6 and all(len(b) == 4 for b in hosts[0])
    for b in range(6):  # global batch b = host 0's batch b then host 1's, in order
        assert [id(r) for r in hosts[0][b] + hosts[1][b]] == [id(r) for r in single[b]]


@pytest.mark.parametrize("schedule", sorted(data.SCHEDULES))
def test_iterator_state_round_trip_resumes_exactly(schedule):
    levels = _levels(10, 3)
    kw = dict(batch_size=4, schedule=schedule, seed=11, shard_index=1, shard_count=2)
    it = data.make_iterator(levels, **kw)
    for _ in range(7):  # past the first epoch (15 records per host)
        next(it)
    state = json.loads(json.dumps(it.get_state()))  # it must survive a JSON checkpoint
    expected = [[r.source + str(r.level) for r in next(it)] for _ in range(10)]
    resumed = data.make_iterator(levels, state=state, **kw)
    got = [[r.source + str(r.level) for r in next(resumed)] for _ in range(10)]
    assert got == expected


def test_finite_epochs_give_every_host_the_same_batch_count():
    levels = _levels(11, 1)  # 11 records, global batch 4: two full batches, 3 records left
    kw = dict(batch_size=4, num_epochs=1, shard_count=2)
    hosts = [list(data.make_dataset(levels, shard_index=h, **kw)) for h in (0, 1)]
    assert [len(b) for b in hosts[0]] == [len(b) for b in hosts[1]] == [2, 2]


def test_pipeline_rejects_bad_settings():
    levels = _levels(4, 1)
    with pytest.raises(ValueError, match="multiple of the 3 hosts"):
        data.make_dataset(levels, batch_size=4, shard_index=0, shard_count=3)
    with pytest.raises(ValueError, match="schedule"):
        data.make_dataset(levels, batch_size=4, schedule="curriculum", shard_index=0, shard_count=1)
    with pytest.raises(ValueError, match="no records"):
        data.make_dataset([], batch_size=4, shard_index=0, shard_count=1)


def test_default_sharding_uses_jax_process():
    levels = _levels(4, 2)
    batches = list(data.make_dataset(levels, batch_size=2, num_epochs=1))
    assert len(batches) == 4  # one process in tests: it reads everything


# ----------------------------------------------------------------------------- prompt encoding


class _CharTokenizer:
    """One token per character; the chat template adds 4 characters."""

    pad_id = 0

    def apply_chat_template(self, prompts, *, system=None):
        return [f"<u>{p}>" for p in prompts]

    def encode(self, texts):
        return [[ord(c) for c in t] for t in texts]


def _prompts(*lengths: int) -> list[Record]:
    return [Record("x" * n, (), source=f"p:{n}") for n in lengths]


def test_encode_prompts_overlong_rules():
    recs = _prompts(2, 10, 6)  # chat lengths 6, 14, 10
    out = data.encode_prompts(_CharTokenizer(), recs, max_prompt_len=10, overlong="truncate_left")
    assert out.input_ids.shape == (3, 10) and (out.num_truncated, out.num_dropped) == (1, 0)
    assert out.attention_mask.sum(1).tolist() == [6, 10, 10]
    assert out.input_ids[1, -1] == ord(">")  # truncation keeps the end (generation prompt)
    assert out.input_ids[0, :4].tolist() == [0] * 4  # left padding

    out = data.encode_prompts(_CharTokenizer(), recs, max_prompt_len=10, overlong="drop")
    assert (out.num_truncated, out.num_dropped) == (0, 1)
    assert out.kept.tolist() == [0, 2] and [r.source for r in out.records] == ["p:2", "p:6"]

    with pytest.raises(ValueError, match="p:10: prompt has 14 tokens"):
        data.encode_prompts(_CharTokenizer(), recs, max_prompt_len=10, overlong="error")
    none = data.encode_prompts(_CharTokenizer(), _prompts(20), max_prompt_len=10, overlong="drop")
    assert none.input_ids.shape == (0, 0) and none.num_dropped == 1


def test_encode_prompts_with_the_tiny_tokenizer():
    tokenizer = pytest.importorskip("ifrl_jax.tokenizer")
    if not (tokenizer.TINY_TOKENIZER_DIR / "tokenizer.json").exists():
        pytest.skip("tiny tokenizer not built")
    tok = tokenizer.load_tokenizer(tokenizer.TINY_TOKENIZER_DIR)
    recs = records.load_records(str(ASSETS / "heldout.jsonl")).records[:4]
    out = data.encode_prompts(tok, recs, max_prompt_len=512, pad_to_multiple=16)
    assert out.input_ids.shape[0] == 4 and out.input_ids.shape[1] % 16 == 0
    chat = tok.apply_chat_template([recs[0].prompt])[0]
    n = int(out.attention_mask[0].sum())
    assert out.input_ids[0, -n:].tolist() == tok.encode([chat])[0]


# ----------------------------------------------------------------------------- shipped set


def test_shipped_instruction_set():
    from ifrl_jax import oracle, verifiers

    train = records.load_records(str(ASSETS / "train.jsonl"))
    heldout = records.load_records(str(ASSETS / "heldout.jsonl"))
    assert (len(train.records), len(heldout.records)) == (280, 200)
    assert train.seeds_derived == 280 and heldout.seeds_derived == 200
    for rec in train.records + heldout.records:
        assert 1 <= len(rec.constraints) <= 3
        # Hard ids, and soft ones given only as text (their hidden oracle measures them).
        assert all(verifiers.is_hard(c.id) or oracle.has_oracle(c.id) for c in rec.constraints)
        assert all(c.text for c in rec.constraints)
    for recs in (train.records, heldout.records):
        soft = {c.id for r in recs for c in r.constraints if not verifiers.is_hard(c.id)}
        assert soft == {"style:enthusiastic", "soft_content:weather"}
    assert not {r.seed for r in train.records} & {r.seed for r in heldout.records}
    sizes = sum(p.stat().st_size for p in ASSETS.glob("*.jsonl"))
    assert sizes < 450_000
    levels = curriculum.decompose_all(train.records).records
    counts = collections.Counter(r.level for r in levels)
    assert counts[1] == 280 and counts[3] > 50


def test_shipped_files_are_the_generator_output(tmp_path):
    from ifrl_jax import errors
    from ifrl_jax.jobs import tiny_instructions as gen

    files = gen.generate(0)
    for name, rows in files.items():
        assert (ASSETS / name).read_text(encoding="utf-8") == gen.dumps(rows), name
    summary = gen.run(str(tmp_path), seed=1)  # the job: verified, written, then checked
    assert list(summary["rows"].values()) == [280, 200, 280]
    assert gen.run(str(tmp_path), seed=1, check=True)["rows"] == summary["rows"]
    with pytest.raises(errors.UserError, match="train.jsonl differs"):
        gen.run(str(tmp_path), seed=0, check=True)


def test_every_shipped_hard_constraint_is_failed_where_it_is_not_asked():
    """A hard constraint that every response meets teaches nothing (until 2026-12-06 no shipped
    response had a comma, so no_comma held everywhere): each hard constraint of a record is
    checked on the responses to the same task's records that do not ask for its id."""
    from ifrl_jax import verifiers

    train = records.load_records(str(ASSETS / "train.jsonl")).records
    responses = pairs.load_responses(str(ASSETS / "train_responses.jsonl"), train)
    by_task = collections.defaultdict(list)
    for i, r in enumerate(train):
        by_task[r.seed].append(i)
    failed = collections.defaultdict(list)
    for r in train:
        for c in (c for c in r.constraints if verifiers.is_hard(c.id)):
            spec = verifiers.check_spec(c.id, c.kwargs)
            others = [j for j in by_task[r.seed] if c.id not in train[j].instruction_ids]
            failed[c.id] += [not verifiers.verify(c.id, spec, responses[j]) for j in others]
    rates = {cid: np.mean(v) for cid, v in failed.items()}
    assert len(rates) == 9 and all(len(v) > 200 for v in failed.values())
    # number_words' limits are fitted per record: other responses often meet them (0.29 fail).
    assert rates.pop("length_constraints:number_words") > 0.2
    assert min(rates.values()) > 0.99, rates


def test_shipped_responses_satisfy_every_constraint():
    from ifrl_jax import oracle, rewards

    train = records.load_records(str(ASSETS / "train.jsonl")).records
    lines = (ASSETS / "train_responses.jsonl").read_text(encoding="utf-8").splitlines()
    responses = [json.loads(line) for line in lines]
    assert [r["prompt"] for r in responses] == [r.prompt for r in train]
    # The soft ids judged by their hidden oracle, in the place of the RM.
    text_id = {c.text: c.id for r in train for c in r.constraints if oracle.has_oracle(c.id)}
    by_oracle = lambda texts, asks: np.array(
        [float(oracle.check(text_id[a], t)) for t, a in zip(texts, asks)]
    )
    result = rewards.score(train, [r["response"] for r in responses], soft_scorer=by_oracle)
    np.testing.assert_array_equal(result.rewards, np.full(len(train), 5.0, np.float32))
    assert rewards.soft_stats(result)[0] > 80
    # And the same responses do not satisfy other records' constraints (the checks bite).
    shifted = rewards.score(
        train, [r["response"] for r in responses[1:] + responses[:1]], soft_scorer=by_oracle
    )
    assert shifted.rewards.mean() < 4.0
