"""The Hugging Face model cards of what a user downloads: the chosen merge
(``results/merges/<chosen>/README.md``) and the same merge with its think rows optimised
(``results/think/<chosen>/README.md``).

:func:`model_card` builds the text from plain values alone (tested without a run): YAML front
matter (base_model with ``base_model_relation: merge``, license, library_name, tags, datasets,
and a ``model-index`` of this run's measured figures with their intervals), the recipe in a
few lines, the mergekit YAML the merge used, the card table (``tables/card.md``: each claim
of the original card, ours with its interval and a verdict), how to load and upload the
model, and the provenance of the weights.  :func:`recipe` picks the recipe's values out of
the validated config (the Snakefile passes them to ``make_tables`` as params);
:func:`write_model_cards` reads the model directories and the tables, writes
``tables/model_card.md`` (and ``tables/model_card_think.md``) and installs each as its
directory's ``README.md``.
"""

from __future__ import annotations

import csv
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePath
from typing import Any

import yaml

from stylemerge.core.files import read_json
from stylemerge.core.hub import is_hub_id
from stylemerge.report.claims import VERDICTS
from stylemerge.stats.intervals import finite

README = "README.md"
CARD_COPY = "model_card.md"
THINK_CARD_COPY = "model_card_think.md"
# stylemerge.merge.run.CONFIG_NAME (not imported: it imports torch, which make_tables' environment
# does not have; tests/test_model_card.py checks the two agree)
MERGEKIT_CONFIG = "mergekit_config.yml"
# the tags every card carries; the merge method's family is added (karcher, linear, ties)
TAGS = ("merge", "mergekit", "grpo", "lora", "style-transfer", "stylemerge")
# GRPO trainer settings the recipe names (the rest are in the config, hashed in provenance)
TRAINER_KEYS = (
    "max_steps",
    "per_device_train_batch_size",
    "num_generations",
    "max_completion_length",
    "learning_rate",
    "lr_scheduler_type",
    "beta",
    "temperature",
)


# --- from the config -------------------------------------------------------------------------


def _model_name(name: str, model: Mapping) -> str:
    """A model's name for the card: its hub id, or else the name of its local directory or
    GGUF file, or else its name in the config (a tiny model built here)."""
    ref = model.get("ref")
    if ref:
        return PurePath(ref).name if Path(ref).is_dir() else ref
    gguf = model.get("gguf")
    if gguf:
        return PurePath(gguf["path"]).name.removesuffix(".gguf")
    return name


def _model_origin(name: str, model: Mapping) -> str:
    """Where a model came from, in words."""
    ref, gguf = model.get("ref"), model.get("gguf")
    if ref:
        where = "local directory" if Path(ref).is_dir() else "hub"
        revision = f" (revision `{model['revision']}`)" if model.get("revision") else ""
        return f"`{ref}` ({where}){revision}"
    if gguf:
        pypi = gguf.get("pypi")
        source = f" from the PyPI wheel `{pypi['package']}=={pypi['version']}`" if pypi else ""
        return f"`{PurePath(gguf['path']).name}`{source}, dequantized to {gguf['dtype']}"
    tiny = model.get("tiny") or {}
    return (
        f"a tiny {tiny.get('architecture', 'qwen3')} model ({tiny.get('num_hidden_layers')} "
        f"layers, width {tiny.get('hidden_size')}) built and pretrained by this workflow"
    )


def _source(source: Mapping, domain: str) -> str:
    """A domain's source, in words."""
    if source["type"] == "builtin":
        return f"builtin corpus `{source.get('corpus') or domain}` (shipped with stylemerge)"
    if source["type"] == "local":
        return "local files " + ", ".join(f"`{p}`" for p in source["paths"])
    where = ", ".join(f"{k}={v}" for k, v in (source.get("where") or {}).items())
    parts = [f"split `{source.get('split', 'train')}`"]
    if source.get("name"):
        parts.insert(0, f"config `{source['name']}`")
    if source.get("revision"):
        parts.append(f"revision `{source['revision']}`")
    if where:
        parts.append(where)
    return f"hub data set `{source['path']}` ({', '.join(parts)})"


def _flat_keys(node: Mapping, prefix: str = "") -> list[str]:
    keys = []
    for key, value in node.items():
        if isinstance(value, Mapping) and value:
            keys += _flat_keys(value, f"{prefix}{key}.")
        else:
            keys.append(f"{prefix}{key}")
    return keys


def recipe(config: Mapping) -> dict[str, Any]:
    """The values the card states, from the validated config: plain data, so that the rule
    can declare them as params (editing ``release.license`` rewrites the card)."""
    chosen = config["merge"]["chosen"]
    variant = config["merge"]["variants"][chosen]
    base = config["models"]["base"]
    grpo = config["grpo"]
    domains = config["domains"]
    datasets = [
        d["source"]["path"]
        for d in domains.values()
        if d["source"]["type"] == "hf" and is_hub_id(d["source"]["path"])
    ]
    return {
        "chosen": chosen,
        "base_model": config["release"]["base_model"] or _model_name("base", base),
        "base_origin": _model_origin("base", base),
        "general_proxy": _model_origin("general_proxy", config["models"]["general_proxy"]),
        "license": config["release"]["license"],
        "datasets": list(dict.fromkeys(datasets)),
        "domains": {name: _source(d["source"], name) for name, d in domains.items()},
        "grpo": {
            "lora": {k: grpo["lora"][k] for k in ("r", "alpha", "dropout") if k in grpo["lora"]},
            "target_modules": list(grpo["lora"].get("target_modules") or []),
            "rewards": {name: r["weight"] for name, r in grpo["rewards"].items()},
            "trainer": {k: grpo["trainer"][k] for k in TRAINER_KEYS if k in grpo["trainer"]},
            "max_prompts": grpo["max_prompts"],
            "mara": bool(grpo["mara"]["enabled"]),
            "overrides": {
                name: _flat_keys(d["grpo"]) for name, d in domains.items() if d.get("grpo")
            },
        },
        "merge": {
            "method": variant["method"],
            "space": variant["space"],
            "parameters": dict(variant.get("parameters") or {}),
            "dtype": config["merge"]["dtype"],
        },
        "think": {"steps": config["think"]["steps"], "shots": config["think"]["data"]["shots"]},
    }


# --- the text --------------------------------------------------------------------------------


def _tags(method: str) -> list[str]:
    family = "karcher" if method.startswith("karcher") else method
    return [*TAGS[:2], family, *TAGS[2:]]


def front_matter(
    recipe: Mapping, index: list[dict] | None = None, think: bool = False
) -> dict[str, Any]:
    """The card's metadata (Hugging Face model-card YAML). ``index``: its ``model-index``
    (:func:`model_index`); ``think``: the card of the think-optimised merge."""
    meta: dict[str, Any] = {
        "base_model": recipe["base_model"],
        # the hub's model tree: a merge of (adapters on) the base; the think rows' training
        # changes two embedding rows of that merge and nothing else
        "base_model_relation": "merge",
        "license": recipe["license"],
        "library_name": "transformers",
        "pipeline_tag": "text-generation",
        "tags": _tags(recipe["merge"]["method"]) + (["think-tokens"] if think else []),
    }
    if recipe.get("datasets"):
        meta["datasets"] = list(recipe["datasets"])
    if index:
        meta["model-index"] = index
    return meta


def _significant(value: float) -> str:
    return f"{value:.3g}"


def is_think_claim(claim: str) -> bool:
    """The card's claims about the think rows (gsm8k, held-out cross-entropy): they belong
    to the think-optimised merge's card; the others to the merge's."""
    return "think" in claim


def model_index(name: str, rows: Sequence[Mapping[str, Any]]) -> list[dict]:
    """The hub's ``model-index`` of a card: one result per claim this run measured (rows of
    ``tables/card.csv``), its value the run's estimate; its name says the claim, the 95 %
    interval, n in its unit, the seeds and the verdict, and ``args`` hold them as numbers.
    Claims not measured are left out; unverified (the hub did not run them)."""
    results = []
    for row in rows:
        ours = finite(row.get("ours"))
        if ours is None:
            continue
        low, high = finite(row.get("ci_low")), finite(row.get("ci_high"))
        n, seeds = finite(row.get("n")), finite(row.get("seeds"))
        unit = row.get("unit") or ""
        interval = (
            f"95 % CI [{_significant(low)}, {_significant(high)}]"
            if low is not None and high is not None
            else "no interval"
        )
        over = row.get("interval") or ""
        parts = [f"{row['claim']} ({row['model']}): {_significant(ours)} {unit}", interval]
        if n is not None:
            parts.append(f"n = {int(n)}" + (f", {over}" if over else ""))
        if seeds and seeds > 1:
            parts.append(f"{int(seeds)} seeds")
        if row.get("verdict"):
            parts.append(f"verdict: {row['verdict']}")
        args = {"ci_level": 0.95, "ci_low": low, "ci_high": high, "n": n, "seeds": seeds}
        results.append(
            {
                "task": {"type": "text-generation", "name": "Text Generation"},
                "dataset": {"type": "stylemerge", "name": row["claim"]},
                "metrics": [
                    {
                        # the claim without its parenthesised figures: a stable key
                        "type": re.sub(
                            r"[^a-z0-9]+", "_", row["claim"].split(" (")[0].lower()
                        ).strip("_"),
                        "value": round(ours, 4),
                        "name": "; ".join(parts),
                        "args": {k: v for k, v in args.items() if v is not None},
                        "verified": False,
                    }
                ],
            }
        )
    return [{"name": name, "results": results}] if results else []


def _mergekit_command(merge: Mapping) -> str:
    """mergekit's own CLI, or the same with stylemerge's methods registered
    (karcher_weighted, Karcher over task vectors)."""
    own = merge["method"] in ("linear", "ties") or (
        merge["method"] == "karcher" and merge["space"] == "weights"
    )
    return "mergekit-yaml" if own else "stylemerge-mergekit-yaml"


def _number(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _recipe_lines(recipe: Mapping, think: bool = False) -> list[str]:
    grpo, merge = recipe["grpo"], recipe["merge"]
    trainer = grpo["trainer"]
    rewards = ", ".join(f"`{name}` ({_number(w)})" for name, w in grpo["rewards"].items())
    lora = grpo["lora"]
    modules = f" on {', '.join(grpo['target_modules'])}" if grpo["target_modules"] else ""
    steps = [
        f"{trainer['max_steps']} steps" if "max_steps" in trainer else None,
        f"batch {trainer['per_device_train_batch_size']}"
        if "per_device_train_batch_size" in trainer
        else None,
        f"{trainer['num_generations']} completions per prompt"
        if "num_generations" in trainer
        else None,
        f"up to {trainer['max_completion_length']} tokens each"
        if "max_completion_length" in trainer
        else None,
        f"learning rate {_number(trainer['learning_rate'])}"
        + (f" ({trainer['lr_scheduler_type']})" if "lr_scheduler_type" in trainer else "")
        if "learning_rate" in trainer
        else None,
        f"KL beta {_number(trainer['beta'])}" if "beta" in trainer else None,
        f"temperature {_number(trainer['temperature'])}" if "temperature" in trainer else None,
    ]
    lines = [
        f"- **Base model**: {recipe['base_origin']}.",
        f"- **Domains** ({len(recipe['domains'])}), one LoRA adapter each:",
        *(f"  - `{name}`: {source}" for name, source in recipe["domains"].items()),
        f"- **GRPO** (trl): LoRA r={lora.get('r')}, alpha={lora.get('alpha')}{modules}; "
        f"rewards {rewards}, the style reward scored by a proxy fine-tuned on the domain "
        f"from {recipe['general_proxy']}; "
        + ", ".join(s for s in steps if s)
        + f"; at most {grpo['max_prompts']} prompts per domain; MARA "
        + ("on" if grpo["mara"] else "off")
        + ".",
    ]
    for name, keys in grpo["overrides"].items():
        lines.append(f"  - `{name}` overrides " + ", ".join(f"`{k}`" for k in keys) + ".")
    parameters = ", ".join(f"{k}={_number(v)}" for k, v in merge["parameters"].items())
    lines += [
        "- **Merge**: each adapter merged into the base (a domain model), then the domain "
        f"models merged with mergekit: `{merge['method']}` over the {merge['space']}"
        + (f" ({parameters})" if parameters else "")
        + f", computed in float32 and saved in {merge['dtype']} (configuration below).",
        f"- **Think tokens**: the `<think>`/`</think>` embedding rows of this merge are "
        f"optimised separately ({recipe['think']['steps']} steps on "
        f"{recipe['think']['shots']}-shot reasoning traces) into `think/{recipe['chosen']}`"
        + (
            ": this model. Only those two rows differ from the merge "
            f"(`merges/{recipe['chosen']}`, which has its own card)."
            if think
            else ", a sibling of this directory; this directory holds the merge before that step."
        ),
    ]
    return lines


def _provenance_lines(provenance: Mapping | None, tables: Mapping | None) -> list[str]:
    if not provenance:
        return ["No provenance recorded with the merge."]
    git = provenance.get("git") or {}
    revision = git.get("revision")
    state = " (with uncommitted changes)" if git.get("dirty") else ""
    lines = [
        "| | |",
        "| --- | --- |",
        f"| git revision | `{revision}`{state} |"
        if revision
        else "| git revision | unknown (not run from a git checkout) |",
        f"| config sha256 | `{provenance.get('config_sha256')}` |",
        f"| seed | {provenance.get('seed')} |",
        f"| merged | {provenance.get('created')} |",
        f"| python | {provenance.get('python')} |",
    ]
    for package, version in (provenance.get("packages") or {}).items():
        if version is not None:
            lines.append(f"| {package} | {version} |")
    tables_git = ((tables or {}).get("git") or {}).get("revision")
    if tables and tables_git != revision:
        lines += ["", f"The evaluation tables were made at git revision `{tables_git}`."]
    return lines


def model_card(
    recipe: Mapping,
    mergekit_config: str,
    card_table: str,
    provenance: Mapping | None,
    path: str,
    tables_provenance: Mapping | None = None,
    card_rows: Sequence[Mapping[str, Any]] = (),
    think: bool = False,
) -> str:
    """The README.md of the chosen merge, or with ``think`` of the merge with its think rows
    optimised.  ``recipe``: :func:`recipe`; ``mergekit_config``: the merge's
    ``mergekit_config.yml``; ``card_table``: ``tables/card.md``; ``provenance``: the model's
    (its metrics.json); ``path``: the model's directory, as the upload command names it;
    ``tables_provenance``: the tables' (named where its git revision differs);
    ``card_rows``: the rows of ``tables/card.csv``, whose claims about this model become its
    ``model-index``."""
    lines = [
        *_head_lines(recipe, card_rows, think),
        *_section("Recipe", _recipe_lines(recipe, think)),
        *_section("Merge configuration", _merge_config_lines(recipe, mergekit_config, think)),
        *_section(
            "Results: the original card's claims against this run",
            [card_table.strip("\n"), "", VERDICTS],
        ),
        *_section("Usage", _usage_lines(path)),
        *_section("Provenance", _provenance_lines(provenance, tables_provenance)),
        "",  # the file ends with a newline
    ]
    return "\n".join(lines)


def _section(title: str, body: list[str]) -> list[str]:
    """A section of the card: a blank line, its heading, a blank line and its body."""
    return ["", f"## {title}", "", *body]


def _head_lines(recipe: Mapping, card_rows: Sequence[Mapping[str, Any]], think: bool) -> list[str]:
    """The front matter (with this model's claims as its ``model-index``), the title and
    what the model is."""
    chosen = recipe["chosen"]
    title = f"{chosen}, think tokens optimised" if think else chosen
    rows = [row for row in card_rows if is_think_claim(row["claim"]) == think]
    index = model_index(f"stylemerge {title}", rows)
    meta = yaml.safe_dump(front_matter(recipe, index, think), sort_keys=False, allow_unicode=True)
    lines = [
        "---",
        meta.rstrip("\n"),
        "---",
        "",
        f"# stylemerge: {title}",
        "",
        "A reproduction, by the stylemerge workflow, of the recipe "
        "behind `Lambent/Qwen3-4B-Base-Continued-GRPO-Style-Karcher`: one GRPO LoRA style "
        "adapter per text domain, merged into the base, and the domain models merged with "
        "mergekit.",
    ]
    if think:
        lines += [
            "",
            f"This is the merge `{chosen}` with its `<think>`/`</think>` embedding rows "
            "optimised on reasoning traces; every other weight is the merge's.",
        ]
    return lines


def _merge_config_lines(recipe: Mapping, mergekit_config: str, think: bool) -> list[str]:
    """The mergekit YAML the merge was made from, and the command that reproduces it."""
    return [
        (
            f"The mergekit YAML the merge was made from (`mergekit_config.yml` in "
            f"`merges/{recipe['chosen']}`; its model paths are this run's local domain models):"
            if think
            else "The mergekit YAML this merge was made from (`mergekit_config.yml` in this "
            "directory; its model paths are this run's local domain models):"
        ),
        "",
        "```yaml",
        mergekit_config.rstrip("\n"),
        "```",
        "",
        f"Reproduce it: `{_mergekit_command(recipe['merge'])} {MERGEKIT_CONFIG} OUT`.",
    ]


def _usage_lines(path: str) -> list[str]:
    """How to load the model from ``path`` and upload it to the hub."""
    return [
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        f'path = "{path}"  # or "<user>/<repo>" once uploaded',
        "model = AutoModelForCausalLM.from_pretrained(path)",
        "tokenizer = AutoTokenizer.from_pretrained(path)",
        "```",
        "",
        "Upload (after `hf auth login`; replace `<user>/<repo>`):",
        "",
        "```sh",
        f'hf upload <user>/<repo> {path} --exclude ".snakemake_timestamp"',
        "```",
    ]


def read_card_rows(tables_dir: str | Path) -> list[dict[str, str]]:
    """The rows of ``tables/card.csv`` (none where the tables have no card)."""
    path = Path(tables_dir) / "card.csv"
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def write_model_cards(
    merge_dir: str | Path,
    tables_dir: str | Path,
    recipe: Mapping | None,
    tables_provenance: Mapping | None = None,
    think_dir: str | Path | None = None,
) -> list[Path]:
    """Write ``tables_dir/model_card.md`` from the merge directory and the card table
    (``card.md``, ``card.csv``) and install it as ``merge_dir/README.md``; with
    ``think_dir`` (the merge with its think rows optimised) also ``model_card_think.md``,
    installed as its ``README.md``.  Returns the READMEs' paths."""
    if recipe is None:
        raise ValueError(f"{merge_dir}: a model card needs the recipe (model_card.recipe)")
    merge_dir, tables_dir = Path(merge_dir), Path(tables_dir)
    mergekit_config = (merge_dir / MERGEKIT_CONFIG).read_text()
    card_table = (tables_dir / "card.md").read_text()
    rows = read_card_rows(tables_dir)
    readmes = []
    models = [(merge_dir, CARD_COPY, False)]
    if think_dir is not None:
        models.append((Path(think_dir), THINK_CARD_COPY, True))
    for directory, copy_name, think in models:
        metrics = directory / "metrics.json"
        text = model_card(
            recipe,
            mergekit_config,
            card_table,
            read_json(metrics).get("provenance") if metrics.is_file() else None,
            str(directory),
            tables_provenance,
            rows,
            think,
        )
        copy = tables_dir / copy_name
        copy.write_text(text, encoding="utf-8")
        readme = directory / README
        shutil.copyfile(copy, readme)
        readmes.append(readme)
    return readmes
