"""Arithmetic word problems with worked reasoning, and the GSM8k-style trace format.

One place defines the few-shot format that both think-token optimisation (training traces)
and the evaluation stage (lm-evaluation-harness prompts) use.  It is the harness's own
``gsm8k`` task format, with the rationale wrapped in think tags::

    Question: Ana buys 3 pens at $4 each. How much does she spend?
    Answer: <think> 3 * 4 = 12 </think> #### 12

Examples are joined by :data:`FEWSHOT_DELIMITER`; a question and its target by
:data:`TARGET_DELIMITER` (as the harness joins ``doc_to_text`` and ``doc_to_target``).

A problem is a dict ``{"question", "reasoning", "answer"}`` (all strings).  Problems come
from the deterministic generator here (the embedded default: no network) or from GSM8k
records (``{"question", "answer": "rationale #### number"}``, paper scale).  Either way the
train/held-out split is a hash of the question text (:func:`stylemerge.data.shards.is_heldout`),
so a problem never changes split when more problems are generated or read.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

from stylemerge.data.shards import is_heldout
from stylemerge.data.tokenizer import THINK_TOKENS

THINK_OPEN, THINK_CLOSE = THINK_TOKENS
QUESTION_TEMPLATE = "Question: {question}\nAnswer:"  # the harness's gsm8k doc_to_text
TARGET_DELIMITER = " "
FEWSHOT_DELIMITER = "\n\n"
ANSWER_MARK = "####"
# GSM8k rationales carry calculator annotations: "48/2 = <<48/2=24>>24"
CALCULATOR = re.compile(r"<<[^<>]*>>")

Problem = dict[str, str]


# --- formatting ------------------------------------------------------------------------------


def format_question(problem: Mapping) -> str:
    return QUESTION_TEMPLATE.format(question=problem["question"])


def format_target(problem: Mapping, think: bool = True) -> str:
    """``<think> reasoning </think> #### answer`` (without the tags when ``think`` is false)."""
    reasoning = (
        f"{THINK_OPEN} {problem['reasoning']} {THINK_CLOSE}" if think else problem["reasoning"]
    )
    return f"{reasoning} {ANSWER_MARK} {problem['answer']}"


def format_example(problem: Mapping, think: bool = True) -> str:
    """One solved example: ``Question: ...\\nAnswer: <think> ... </think> #### 42``."""
    return format_question(problem) + TARGET_DELIMITER + format_target(problem, think)


def fewshot_prompt(examples: Sequence[Mapping], target: Mapping, think: bool = True) -> str:
    """The solved ``examples`` then ``target``'s question, ending in ``Answer:`` (what the
    model continues; the harness builds the same string for ``num_fewshot=len(examples)``)."""
    parts = [format_example(e, think) for e in examples] + [format_question(target)]
    return FEWSHOT_DELIMITER.join(parts)


def format_trace(examples: Sequence[Mapping], target: Mapping, think: bool = True) -> str:
    """A k-shot training trace: the few-shot prompt followed by the target's solution."""
    return fewshot_prompt(examples, target, think) + TARGET_DELIMITER + format_target(target, think)


def harness_doc(problem: Mapping, think: bool = True) -> dict:
    """A record for an lm-eval task with ``doc_to_text: "Question: {{question}}\\nAnswer:"``
    and ``doc_to_target: "{{answer}}"`` (the gsm8k task's own fields)."""
    return {
        "question": problem["question"],
        "answer": format_target(problem, think),
        "number": problem["answer"],
    }


# --- the deterministic generator ---------------------------------------------------------------

NAMES = (
    "Ana", "Ben", "Chen", "Dara", "Eli", "Farah", "Gus", "Hana", "Ivan", "Jade", "Kofi", "Lena",
    "Mateo", "Nia", "Omar", "Priya", "Quinn", "Rosa", "Sami", "Tariq", "Uma", "Vera", "Wes",
    "Yuki", "Zoe",
)  # fmt: skip
ITEMS = (  # plural, lowest and highest price
    ("pencils", 1, 4), ("notebooks", 2, 9), ("apples", 1, 3), ("sandwiches", 4, 12),
    ("tickets", 5, 25), ("books", 6, 30), ("mugs", 3, 15), ("plants", 4, 20), ("scarves", 8, 35),
    ("candles", 2, 11), ("puzzles", 7, 28), ("kites", 5, 18),
)  # fmt: skip
VEHICLES = ("train", "bus", "cyclist", "truck", "ferry", "car")
THINGS = ("marbles", "stickers", "cookies", "cards", "shells", "stamps", "beads", "grapes")
CROPS = ("tomato", "lettuce", "pepper", "cabbage", "melon", "pumpkin")


def _shopping(rng: random.Random) -> Problem:
    name = rng.choice(NAMES)
    (item1, lo1, hi1), (item2, lo2, hi2) = rng.sample(ITEMS, 2)
    a, b = rng.randint(2, 9), rng.randint(2, 9)
    p, q = rng.randint(lo1, hi1), rng.randint(lo2, hi2)
    total = a * p + b * q
    return {
        "question": f"{name} buys {a} {item1} at ${p} each and {b} {item2} at ${q} each. "
        f"How many dollars does {name} spend in total?",
        "reasoning": f"The {item1} cost {a} * {p} = {a * p} dollars.\n"
        f"The {item2} cost {b} * {q} = {b * q} dollars.\n"
        f"In total {a * p} + {b * q} = {total} dollars.",
        "answer": str(total),
    }


def _change(rng: random.Random) -> Problem:
    name = rng.choice(NAMES)
    item, lo, hi = rng.choice(ITEMS)
    a, p = rng.randint(2, 8), rng.randint(lo, hi)
    cost = a * p
    money = cost + rng.randint(1, 60)
    return {
        "question": f"{name} has ${money}. {name} buys {a} {item} that cost ${p} each. "
        "How many dollars are left?",
        "reasoning": f"The {item} cost {a} * {p} = {cost} dollars.\n"
        f"{name} has {money} - {cost} = {money - cost} dollars left.",
        "answer": str(money - cost),
    }


def _travel(rng: random.Random) -> Problem:
    vehicle = rng.choice(VEHICLES)
    s1, s2 = rng.randint(3, 18) * 5, rng.randint(3, 18) * 5
    h1, h2 = rng.randint(2, 6), rng.randint(2, 6)
    d1, d2 = s1 * h1, s2 * h2
    return {
        "question": f"A {vehicle} travels at {s1} km per hour for {h1} hours, then at {s2} km "
        f"per hour for {h2} hours. How many kilometres does it travel in total?",
        "reasoning": f"First it travels {s1} * {h1} = {d1} km.\n"
        f"Then it travels {s2} * {h2} = {d2} km.\n"
        f"In total {d1} + {d2} = {d1 + d2} km.",
        "answer": str(d1 + d2),
    }


def _sharing(rng: random.Random) -> Problem:
    name = rng.choice(NAMES)
    things = rng.choice(THINGS)
    friends, each = rng.randint(2, 9), rng.randint(3, 15)
    total = friends * each
    given = rng.randint(1, each - 1)
    return {
        "question": f"{name} has {total} {things} and shares them equally among {friends} "
        f"friends. Each friend then gives {given} of them away. How many {things} does each "
        "friend have left?",
        "reasoning": f"Each friend gets {total} / {friends} = {each} {things}.\n"
        f"After giving some away each has {each} - {given} = {each - given} {things}.",
        "answer": str(each - given),
    }


def _boxes(rng: random.Random) -> Problem:
    crop = rng.choice(CROPS)
    rows, per_row = rng.randint(3, 12), rng.randint(4, 15)
    grown = rows * per_row
    size = rng.randint(2, 9)
    boxes = rng.randint(1, (grown - 1) // size)
    sold = grown - boxes * size
    return {
        "question": f"A farm has {rows} rows of {per_row} {crop} plants, and each plant gives "
        f"one {crop}. {sold} {crop}s are sold at the market and the rest are packed into boxes "
        f"of {size}. How many boxes are packed?",
        "reasoning": f"The farm grows {rows} * {per_row} = {grown} {crop}s.\n"
        f"After the market {grown} - {sold} = {grown - sold} are left.\n"
        f"They fill {grown - sold} / {size} = {boxes} boxes.",
        "answer": str(boxes),
    }


def _savings(rng: random.Random) -> Problem:
    name = rng.choice(NAMES)
    weekly, weeks = rng.randint(3, 25), rng.randint(2, 12)
    saved = weekly * weeks
    spent = rng.randint(1, saved - 1)
    bonus = rng.randint(0, 4) * 5
    left = saved - spent + bonus
    gift = f" and then gets a ${bonus} gift" if bonus else ""
    gift_step = f"\nWith the gift {saved - spent} + {bonus} = {left} dollars." if bonus else ""
    return {
        "question": f"{name} saves ${weekly} every week for {weeks} weeks, then spends ${spent} "
        f"on a present{gift}. How many dollars does {name} have now?",
        "reasoning": f"{name} saves {weekly} * {weeks} = {saved} dollars.\n"
        f"After the present {saved} - {spent} = {saved - spent} dollars.{gift_step}",
        "answer": str(left),
    }


def _bakery(rng: random.Random) -> Problem:
    batches, per_batch, days = rng.randint(2, 8), rng.randint(6, 24), rng.randint(2, 7)
    daily = batches * per_batch
    eaten = rng.randint(1, 5)
    total = daily * days
    return {
        "question": f"A baker makes {batches} batches of {per_batch} rolls every day and keeps "
        f"{eaten} rolls each day for lunch. How many rolls are left to sell after {days} days?",
        "reasoning": f"Each day the baker makes {batches} * {per_batch} = {daily} rolls.\n"
        f"Each day {daily} - {eaten} = {daily - eaten} are left to sell.\n"
        f"Over {days} days that is {daily - eaten} * {days} = {total - eaten * days} rolls.",
        "answer": str(total - eaten * days),
    }


TEMPLATES: dict[str, Callable[[random.Random], Problem]] = {
    "shopping": _shopping,
    "change": _change,
    "travel": _travel,
    "sharing": _sharing,
    "boxes": _boxes,
    "savings": _savings,
    "bakery": _bakery,
}


def generate_problems(seed: int) -> Iterator[Problem]:
    """A deterministic stream of distinct problems: template and numbers drawn from
    ``random.Random(seed)``."""
    rng = random.Random(seed)
    seen: set[str] = set()
    misses = 0
    while misses < 10_000:  # the templates have far more distinct problems than anyone asks for
        template = TEMPLATES[rng.choice(sorted(TEMPLATES))]
        problem = template(rng)
        if problem["question"] in seen:
            misses += 1
            continue
        seen.add(problem["question"])
        yield problem


def problem_split(problem: Mapping, heldout_fraction: float) -> str:
    """``"heldout"`` or ``"train"``, by a hash of the question text."""
    return "heldout" if is_heldout(problem["question"], heldout_fraction) else "train"


def split_problems(
    problems: Iterable[Mapping], n_train: int, n_heldout: int, heldout_fraction: float
) -> dict[str, list[Problem]]:
    """The first ``n_train`` train and ``n_heldout`` held-out problems of ``problems``
    (duplicate questions skipped); an error if the source runs out first."""
    splits: dict[str, list[Problem]] = {"train": [], "heldout": []}
    wanted = {"train": n_train, "heldout": n_heldout}
    seen: set[str] = set()
    for problem in problems:
        if problem["question"] in seen:
            continue
        seen.add(problem["question"])
        split = problem_split(problem, heldout_fraction)
        if len(splits[split]) < wanted[split]:
            splits[split].append(dict(problem))
        if all(len(splits[s]) >= wanted[s] for s in splits):
            return splits
    raise ValueError(
        f"ran out of problems: wanted {n_train} train and {n_heldout} held-out, got "
        f"{len(splits['train'])} and {len(splits['heldout'])} (heldout_fraction "
        f"{heldout_fraction})"
    )


# --- GSM8k -------------------------------------------------------------------------------------


def from_gsm8k(records: Iterable[Mapping], strip_calculator: bool = True) -> Iterator[Problem]:
    """GSM8k records (``{"question", "answer": "rationale\\n#### 72"}``) as problems; the
    rationale becomes the reasoning (calculator annotations ``<<48/2=24>>`` removed unless
    ``strip_calculator`` is false).  A record without ``####`` is an error naming it."""
    for number, record in enumerate(records):
        answer = record.get("answer", "")
        if ANSWER_MARK not in answer or "question" not in record:
            raise ValueError(
                f"GSM8k record {number}: expected 'question' and an 'answer' with "
                f"'{ANSWER_MARK} <number>', got keys {sorted(record)}"
            )
        rationale, final = answer.rsplit(ANSWER_MARK, 1)
        if strip_calculator:
            rationale = CALCULATOR.sub("", rationale)
        yield {
            "question": record["question"].strip(),
            "reasoning": rationale.strip(),
            "answer": final.strip().replace(",", ""),
        }


def load_gsm8k(
    path: str = "openai/gsm8k",
    name: str | None = "main",
    split: str = "train",
    revision: str | None = None,
) -> Iterable[Mapping]:
    """GSM8k records from the hub (or a local data set directory) via ``datasets``."""
    from datasets import load_dataset

    return load_dataset(path, name, split=split, revision=revision)


# --- traces from settings ----------------------------------------------------------------------


def make_traces(
    problems: Sequence[Mapping], shots: int, seed: int, think: bool = True
) -> list[str]:
    """One k-shot trace per problem; its ``shots`` examples are drawn (seeded) from the other
    problems of the same list, so held-out traces contain held-out problems only."""
    if shots and len(problems) <= shots:
        raise ValueError(f"{len(problems)} problems: too few for {shots}-shot traces")
    rng = random.Random(seed)
    traces = []
    for i, target in enumerate(problems):
        others = rng.sample(range(len(problems) - 1), shots)
        examples = [problems[j if j < i else j + 1] for j in others]
        traces.append(format_trace(examples, target, think))
    return traces


def build_traces(data: Mapping, seed: int) -> dict:
    """Train and held-out traces from the ``think.data`` settings: ``{"train": [...],
    "heldout": [...], "info": {...}}`` (info: source, counts, what the traces look like).

    ``source: builtin`` uses :func:`generate_problems`; ``source: gsm8k`` reads the data set
    (``path``, ``name``, ``split``, ``revision``) and splits its records by question hash too,
    so the gsm8k test split stays untouched for evaluation."""
    source = data["source"]
    fraction = data["heldout_fraction"]
    if source == "builtin":
        problems: Iterable[Mapping] = generate_problems(seed)
        origin = {"source": "builtin", "templates": sorted(TEMPLATES)}
    elif source == "gsm8k":
        records = load_gsm8k(data["path"], data["name"], data["split"], data["revision"])
        problems = from_gsm8k(records, data["strip_calculator"])
        origin = {key: data[key] for key in ("path", "name", "split", "revision")}
        origin = {"source": "gsm8k", **origin, "strip_calculator": data["strip_calculator"]}
    else:
        raise ValueError(f"think data source {source!r}: expected 'builtin' or 'gsm8k'")
    splits = split_problems(problems, data["train"], data["heldout"], fraction)
    traces = {
        split: make_traces(items, data["shots"], seed + offset)
        for offset, (split, items) in enumerate(splits.items())
    }
    info = {
        **origin,
        "heldout_fraction": fraction,
        "shots": data["shots"],
        "problems": {split: len(items) for split, items in splits.items()},
        "example_trace": traces["train"][0],
    }
    return {**traces, "info": info}
