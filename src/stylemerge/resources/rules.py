"""The rule registry: per Snakemake rule that requests resources, the config section that
sets them, its jobs for a config, whether it holds a GPU, and its memory overhead.  The rules
(``resources:``), the cost model, the memory model and the GPU check read it, and a test holds
profiles/slurm to it; :data:`stylemerge.resources.memory.RULE_MODELS` adds each rule's memory
terms (a test keeps the two on the same rules)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from stylemerge.models import names as model_names
from stylemerge.workflow.config import stage_settings


@dataclass(frozen=True)
class Rule:
    name: str
    section: str  # where its settings (gpus, mem_mb, runtime_min) are set, as users name it
    jobs: Callable[[Mapping], list[str]]  # config -> its jobs' items, as their benchmark files
    # Its models go on the config's device (job.device): on `device: cuda` it holds a GPU for
    # its whole run; profiles/slurm gives exactly these one GPU each, and the cost model's
    # requested GPU-hours count their stage's `gpus` (tests/test_slurm.py and
    # tests/test_costmodel.py tie the three together).
    gpu: bool
    # Peak RSS before any model (MiB). Measured with /usr/bin/time -v, Nov 2026: the imports
    # of each job (python -c "import snakemake.script, torch, <the job's libraries>": 246-490
    # MiB; a first from_pretrained pulls in ~140 MiB more of transformers), then raised to what
    # the embedded default's jobs (tiny models: tensors of a few MiB) peaked at beyond their
    # modelled tensors: lm-eval builds its tasks and data sets (and forks for bootstrap
    # standard errors), the training jobs hold Trainer and accelerate, the think job its
    # arithmetic traces.
    overhead_mb: int
    # (config, item) -> the section's settings, where the section is not a plain key path
    # (per-domain stage settings, a model's own section)
    custom_settings: Callable[[Mapping, str], Mapping] | None = None

    def settings(self, config: Mapping, item: str) -> Mapping:
        """The settings section one job of a validated config takes its resources from."""
        if self.custom_settings is not None:
            return self.custom_settings(config, item)
        for key in self.section.split("."):
            config = config[key]
        return config


def _converted(config: Mapping) -> list[str]:
    """One conversion per distinct GGUF source."""
    return sorted(set(model_names.gguf_owners(config).values()))


def _adapted(config: Mapping) -> list[str]:
    return [f"{d}{arm}" for d in config["domains"] for arm in model_names.arms(config)]


def _merges(config: Mapping) -> list[str]:
    chosen = config["merge"]["chosen"]
    return list(config["merge"]["variants"]) + [chosen + a for a in model_names.arms(config)[1:]]


def _grpo_settings(config: Mapping, item: str) -> Mapping:
    return stage_settings(config, "grpo", model_names.split_arm(config, item)[0])


def _model(key: str) -> Callable[[Mapping, str], Mapping]:
    return lambda config, item: config["models"][item][key]


# Pretraining only builds the embedded default's tiny models, on CPU; conversion is CPU only.
RULES = {
    rule.name: rule
    for rule in (
        Rule(
            "pretrain_model",
            "models.<name>.pretrain",
            model_names.tiny_models,
            False,
            550,
            _model("pretrain"),
        ),
        Rule("convert_model", "models.<name>.gguf", _converted, False, 400, _model("gguf")),
        Rule(
            "train_proxy",
            "proxy",
            lambda c: list(c["domains"]),
            True,
            550,
            lambda c, i: stage_settings(c, "proxy", i),
        ),
        Rule("train_adapter", "grpo", _adapted, True, 600, _grpo_settings),
        Rule("apply_adapter", "merge", _adapted, True, 450),
        Rule("merge_models", "merge", _merges, True, 500),
        Rule("optimize_think_tokens", "think", model_names.think_models, True, 550),
        Rule(
            "evaluate_lm",
            "evaluate.lm_eval",
            lambda c: list(model_names.lm_eval_models(c)),
            True,
            1000,
        ),
        Rule(
            "measure_diversity",
            "evaluate.diversity",
            lambda c: list(model_names.diversity_models(c)),
            True,
            450,
        ),
    )
}
GPU_RULES = tuple(name for name, rule in RULES.items() if rule.gpu)


def job_items(config: Mapping) -> dict[str, list[str]]:
    """Every job of a config per rule, named as its benchmark file (its wildcard item)."""
    return {name: rule.jobs(config) for name, rule in RULES.items()}


def job_settings(config: Mapping, rule: str, item: str) -> Mapping:
    """The settings section one job of a validated config takes its resources from."""
    return RULES[rule].settings(config, item)
