r"""The tiny-instructions job: the small instruction set shipped for the CPU default job.

Deterministic (seeded). `run` writes (or, with `check=True`, compares) in `out_dir`:

* ``train.jsonl``: multi-constraint instructions (1-3 hard constraints each) in the reference
  schema ``{"prompt", "instruction_id_list", "kwargs", "constraint"}``; the prompt is built as
  upstream, ``seed + "".join(text + ". " for text in constraint)`` with seed = task + " " (the
  loader derives the seed back from the prompt, so no seed field is stored).
* ``heldout.jsonl``: the same kind of records on seed tasks that ``train.jsonl`` never uses.
* ``train_responses.jsonl``: ``{"prompt", "response"}``, one reference response per training
  record, written by the template program below (`_respond`), for the warm-start supervised
  stage. Every response is checked with the verifiers; one that does not satisfy all its
  constraints is an AssertionError.

The seed tasks and their answers are written for this file (no third-party text). Constraint
texts follow IFEval's phrasing (google-research/instruction_following_eval, Apache-2.0).
`launch/make_tiny_instructions.py` runs it; the shipped files are in ifrl_jax/assets/instructions/.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

import numpy as np

from ifrl_jax import errors

PER_TRAIN_SEED = 7
PER_HELDOUT_SEED = 20


def _parse_seeds(text: str) -> list[tuple[str, str, str]]:
    """Parses blocks of three lines (task, title, answer) separated by blank lines."""
    blocks = [b.strip().split("\n") for b in text.strip().split("\n\n")]
    assert all(len(b) == 3 for b in blocks), [b for b in blocks if len(b) != 3]
    return [(b[0], b[1], b[2]) for b in blocks]


# Seed tasks: task, title, answer. No commas anywhere, so that every combination is satisfiable.
TRAIN_SEEDS = _parse_seeds(
    """
Write a short note about the sea.
The Sea
The sea is wide and deep. It moves with the wind and the moon every day.

Describe a quiet morning in the park.
Morning in the Park
The park is calm in the early morning. Birds sing and the grass is wet with dew.

Explain why people drink water.
Why We Drink Water
People drink water to stay alive and healthy. The body needs water to work well.

Tell me about your favorite season.
My Favorite Season
My favorite season is autumn. The leaves turn red and the air feels cool and fresh.

Write a few lines about a cat.
The Cat
The cat sleeps in the sun all day. At night it walks around the house and looks for food.

Describe a busy city street.
A Busy Street
The street is full of cars and people. Everyone is in a hurry to get somewhere.

Explain what a library is.
The Library
A library is a place with many books. People go there to read and learn for free.

Write about a walk in the forest.
A Forest Walk
The forest is green and quiet. Tall trees stand over the path and the air smells of pine.

Tell me why sleep is important.
Why Sleep Matters
Sleep helps the body rest and heal. Without enough sleep it is hard to think clearly.

Describe your ideal weekend.
My Ideal Weekend
My ideal weekend is slow and simple. I read a book and cook a good meal with my family.

Write a short story about a lost dog.
The Lost Dog
A small dog got lost in the town. A kind girl found him and took him home to his owner.

Explain how plants grow.
How Plants Grow
Plants grow from seeds in the soil. They need water and sunlight to make their own food.

Describe a rainy afternoon.
A Rainy Afternoon
The rain falls softly on the roof. I sit by the fire and listen to the sound of the water.

Write about the value of friendship.
The Value of Friendship
A good friend listens and helps when times are hard. Friendship makes life warm and bright.

Tell me about the moon.
The Moon
The moon goes around the earth once a month. Its light is the light of the sun.

Explain why exercise is good for you.
Why Exercise Helps
Exercise makes the heart and the muscles strong. It also helps the mind feel calm and happy.

Describe a visit to the beach.
A Day at the Beach
We walked on the warm sand and swam in the blue water. The day ended with a red sunset.

Write a note to thank a teacher.
Thank You Teacher
Thank you for your patience and your kind words. Your lessons helped me grow every day.

Explain what a volcano is.
The Volcano
A volcano is a mountain that can let out hot melted rock. The rock comes from deep under the ground.

Describe your favorite food.
My Favorite Food
My favorite food is fresh bread with butter. It is warm and soft and it smells wonderful.

Write about learning to ride a bike.
Learning to Ride
At first I fell many times. Then one day I kept my balance and rode all the way down the road.

Tell me about the stars at night.
Stars at Night
On a clear night the sky is full of stars. Each star is a huge ball of burning gas far away.

Explain why we recycle.
Why We Recycle
We recycle to use less new material. It keeps waste out of the ground and saves energy.

Describe a snowy day.
A Snowy Day
Snow covers the roads and the roofs. Children build a snowman and throw snowballs in the yard.

Write about a trip on a train.
A Train Trip
The train moves fast past fields and small towns. I look out of the window at the world.

Explain what a computer does.
What a Computer Does
A computer follows instructions to work with information. It can count and store data very fast.

Describe an old house.
The Old House
The old house stands at the end of the road. Its walls are gray and its windows are dusty.

Write a short poem about the wind.
The Wind
The wind runs over the hills. It sings in the trees and then it is gone.

Tell me why bees are important.
Why Bees Matter
Bees carry pollen from flower to flower. This helps plants make fruit and seeds for us to eat.

Describe a birthday party.
The Party
The room was full of balloons and music. We ate cake and sang happy songs together.

Explain how to make tea.
How to Make Tea
Boil some water and pour it over the tea leaves. Wait a few minutes and then enjoy your cup.

Write about a garden in spring.
A Spring Garden
In spring the garden wakes up. New flowers open and small green leaves appear on every branch.

Tell me about the ocean animals.
Ocean Animals
The ocean is home to fish and whales and turtles. Some live near the top and some live very deep.

Describe the sound of a city at night.
The City at Night
At night the city hums with soft noise. You can hear distant cars and music from open windows.

Explain why reading is useful.
Why Reading Helps
Reading teaches new words and new ideas. It also lets us visit other places in our mind.

Write about a mountain hike.
The Hike
The path to the top was steep and long. From the summit we could see the whole valley below.

Describe your morning routine.
My Morning
I wake up early and drink a glass of water. Then I eat breakfast and get ready for the day.

Tell me about a river.
The River
The river flows from the hills to the sea. Fish swim in its clear and cold water.

Explain what clouds are.
What Clouds Are
Clouds are made of tiny drops of water in the sky. When the drops grow heavy they fall as rain.

Write a short welcome message for a new neighbor.
Welcome Neighbor
Welcome to our street. We are happy to have you here and we hope you like your new home.
"""
)

HELDOUT_SEEDS = _parse_seeds(
    """
Describe a sunny market square.
The Market
The market square is bright and loud. People sell fruit and bread and flowers from small tables.

Write about a day at the zoo.
The Zoo
We saw lions and monkeys and a tall giraffe. The elephants were the best part of the day.

Explain why the sky looks blue.
The Blue Sky
Sunlight is made of many colors. The air scatters blue light the most so the sky looks blue.

Tell me about a lighthouse.
The Lighthouse
A lighthouse stands by the sea. Its bright lamp guides ships safely home at night.

Describe a winter evening at home.
A Winter Evening
Outside it is cold and dark. Inside the lamps are warm and we drink hot soup together.

Write a short note about an owl.
The Owl
The owl sleeps during the day. At night it flies without a sound and hunts for mice.

Explain how a bridge helps a town.
The Bridge
A bridge lets people cross the river quickly. It joins the two sides of the town together.

Describe a field of flowers.
The Flower Field
The field is full of yellow and purple flowers. Bees move from one bloom to the next.

Tell me why music makes people happy.
Music and Joy
Music can lift our mood and bring back good memories. Many people sing when they feel happy.

Write about a boat on a lake.
The Boat
A small boat floats on the calm lake. The man inside rows slowly toward the shore.
"""
)

KEYWORDS = ["sun", "friend", "music", "window", "journey", "color", "story", "smile", "paper",
            "stone", "light", "kitchen", "letter", "village", "summer", "road"]  # fmt: skip
END_PHRASES = [
    "Is there anything else I can help with?",
    "Any other questions?",
    "That is all for now.",
    "Let me know if you have additional questions.",
    "Have a great day.",
]
POSTSCRIPTS = [("P.S.", "P.S. Thank you for reading."), ("P.P.S", "P.P.S I hope this helps.")]
CONFLICTS = {frozenset({"combination:repeat_prompt", "startend:quotation"})}

ALL_IDS = [
    "punctuation:no_comma",
    "change_case:english_lowercase",
    "startend:end_checker",
    "detectable_content:postscript",
    "keywords:existence",
    "startend:quotation",
    "length_constraints:number_words",
    "detectable_format:title",
    "combination:repeat_prompt",
]


def _text(cid: str, kw: dict) -> str:
    """The constraint text (IFEval's phrasing, without the final period the builder adds)."""
    if cid == "punctuation:no_comma":
        return "In your entire response, refrain from the use of any commas"
    if cid == "change_case:english_lowercase":
        return (
            "Your entire response should be in English, and in all lowercase letters. "
            "No capital letters are allowed"
        )
    if cid == "startend:end_checker":
        return (
            f"Finish your response with this exact phrase {kw['end_phrase']} "
            "No other words should follow this phrase"
        )
    if cid == "detectable_content:postscript":
        return (
            "At the end of your response, please explicitly add a postscript starting with "
            f"{kw['postscript_marker']}"
        )
    if cid == "keywords:existence":
        return f"Include keywords {', '.join(kw['keywords'])} in the response"
    if cid == "startend:quotation":
        return "Wrap your entire response with double quotation marks"
    if cid == "length_constraints:number_words":
        return f"Answer with {kw['relation']} {kw['num_words']} words"
    if cid == "detectable_format:title":
        return (
            "Your answer must contain a title, wrapped in double angular brackets, such as "
            "<<poem of joy>>"
        )
    if cid == "combination:repeat_prompt":
        return (
            "First repeat the request word for word without change, then give your answer "
            "(1. do not say any words or characters before repeating the request; 2. the request "
            "you need to repeat does not include this sentence)"
        )
    raise KeyError(cid)


def _word_count(text: str) -> int:
    return len(re.findall(r"\w+", text))  # IFEval's count_words: RegexpTokenizer(r"\w+")


def _respond(task: str, title: str, answer: str, ids: list[str], kwargs: list[dict]) -> str:
    """The template program: a response that satisfies every constraint of the record."""
    kw = dict(zip(ids, kwargs))
    parts = []
    if "combination:repeat_prompt" in kw:
        parts.append(kw["combination:repeat_prompt"]["prompt_to_repeat"])
    if "detectable_format:title" in kw:
        parts.append(f"<<{title}>>")
    body = answer
    if "keywords:existence" in kw:
        words = kw["keywords:existence"]["keywords"]
        body += f" It makes me think of {' and '.join(words)}."
    parts.append(body)
    if "detectable_content:postscript" in kw:
        marker = kw["detectable_content:postscript"]["postscript_marker"]
        parts.append(dict(POSTSCRIPTS)[marker])
    text = "\n\n".join(parts)
    if "startend:end_checker" in kw:
        text += " " + kw["startend:end_checker"]["end_phrase"]
    if "change_case:english_lowercase" in kw:
        text = text.lower()
    if "startend:quotation" in kw:
        text = f'"{text}"'
    return text


def _draw_ids(rng: np.random.Generator) -> list[str]:
    while True:
        k = int(rng.choice([1, 2, 3], p=[0.25, 0.4, 0.35]))
        ids = [ALL_IDS[i] for i in rng.choice(len(ALL_IDS), size=k, replace=False)]
        if not any(c <= set(ids) for c in CONFLICTS):
            return ids


def _make(seeds: list, per_seed: int, rng: np.random.Generator) -> tuple[list, list]:
    records, responses = [], []
    for task, title, answer in seeds:
        seen = set()
        while len(seen) < per_seed:
            ids = _draw_ids(rng)
            if tuple(ids) in seen:
                continue
            seen.add(tuple(ids))
            kwargs = []
            for cid in ids:
                if cid == "startend:end_checker":
                    kwargs.append({"end_phrase": END_PHRASES[rng.integers(len(END_PHRASES))]})
                elif cid == "detectable_content:postscript":
                    kwargs.append({"postscript_marker": POSTSCRIPTS[rng.integers(2)][0]})
                elif cid == "keywords:existence":
                    n = int(rng.integers(1, 3))
                    words = [KEYWORDS[i] for i in rng.choice(len(KEYWORDS), n, replace=False)]
                    kwargs.append({"keywords": words})
                elif cid == "combination:repeat_prompt":
                    kwargs.append({"prompt_to_repeat": task})
                else:
                    kwargs.append({})
            if "length_constraints:number_words" in ids:
                # Pick N around the template response's length, so the response satisfies it.
                i = ids.index("length_constraints:number_words")
                n = _word_count(_respond(task, title, answer, ids, kwargs))
                if rng.random() < 0.5:
                    kwargs[i] = {"relation": "at least", "num_words": max(5, (n // 5) * 5)}
                else:
                    kwargs[i] = {"relation": "less than", "num_words": (n // 5 + 2) * 5}
            texts = [_text(c, k) for c, k in zip(ids, kwargs)]
            seed = task + " "
            prompt = seed + "".join(t + ". " for t in texts)
            records.append(
                {
                    "prompt": prompt,
                    "instruction_id_list": ids,
                    "kwargs": kwargs,
                    "constraint": texts,
                }
            )
            responses.append(
                {"prompt": prompt, "response": _respond(task, title, answer, ids, kwargs)}
            )
    return records, responses


def generate(seed: int = 0) -> dict[str, list[dict]]:
    """Builds the three files' rows.

    Args:
      seed: random seed.

    Returns:
      ``{"train.jsonl": rows, "heldout.jsonl": rows, "train_responses.jsonl": rows}``.
    """
    rng = np.random.default_rng(seed)
    train, responses = _make(TRAIN_SEEDS, PER_TRAIN_SEED, rng)
    heldout, _ = _make(HELDOUT_SEEDS, PER_HELDOUT_SEED, rng)
    order = rng.permutation(len(train))
    train = [train[i] for i in order]
    responses = [responses[i] for i in order]
    return {"train.jsonl": train, "heldout.jsonl": heldout, "train_responses.jsonl": responses}


def verify_responses(train: list[dict], responses: list[dict]) -> None:
    """Raises AssertionError unless every response satisfies all constraints of its record."""
    from ifrl_jax import verifiers

    for rec, resp in zip(train, responses):
        assert rec["prompt"] == resp["prompt"]
        for cid, kw in zip(rec["instruction_id_list"], rec["kwargs"]):
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
