"""The per-rule conda environments (envs/*.yaml), checked statically.

Conda channels are out of reach on this project's machines, so the environments are never
built here; these tests check what can be checked without building them: every rule declares
one, the pins in them agree with pyproject.toml and constraints.txt (constraints-gpu.txt for
the GPU-side environments, which hold vLLM), and they have the form `snakemake --sdm conda`
expects.
"""

import re
import tomllib
from pathlib import Path

import pytest
import yaml

from conftest import ROOT

ENVS = sorted((ROOT / "envs").glob("*.yaml"))
FAMILIES = {"data", "train", "merge", "eval", "tables"}
# Rule -> environment, for the rules of the workflow's stages (those not defined yet are
# skipped by the test that uses this).
RULE_ENV = {
    "build_shards": "data",
    "index_shards": "data",
    "train_tokenizer": "train",
    "pretrain_model": "train",
    "train_proxy": "train",
    "train_adapter": "train",
    "optimize_think_tokens": "train",
    "apply_adapter": "merge",
    "merge_models": "merge",
    "evaluate_lm": "eval",
    "measure_diversity": "eval",
    "make_tables": "tables",
}
# What each family's jobs import (besides the standard library and stylemerge itself).
NEEDS = {
    "data": {"datasets", "jsonschema", "pyyaml"},
    "train": {"torch", "transformers", "tokenizers", "safetensors", "peft", "trl", "vllm"},
    "merge": {"mergekit", "torch", "transformers", "safetensors", "peft"},
    "eval": {"lm-eval", "torch", "transformers", "peft", "vllm"},
    "tables": {"pandas"},
}

# The families whose jobs generate with vLLM (GRPO colocated; lm-eval's vllm backend): their
# pins are the GPU set, constraints-gpu.txt, not constraints.txt.
GPU_FAMILIES = {"train", "eval"}
# Versions in which constraints-gpu.txt may differ from constraints.txt, and why; nothing else
# may. vllm 0.30.0 needs mistral_common[image]>=1.11.6, which needs numpy<2.4 on Python 3.11,
# while snakemake-executor-plugin-slurm 2.8.0 (constraints.txt) needs numpy>=2.4.5.
GPU_DIFFERENT = {"numpy"}


def normalize(name: str) -> str:
    """PEP 503 name, without extras: `lm_eval[hf]` -> `lm-eval`."""
    return re.sub(r"[-_.]+", "-", name.split("[")[0]).strip().lower()


def parse_pin(spec: str, sep: str) -> tuple[str, str | None]:
    name, _, version = spec.partition(sep)
    return normalize(name), (version.strip() or None)


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def constraint_pins(filename: str = "constraints.txt") -> dict[str, str]:
    pins = {}
    for line in (ROOT / filename).read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = parse_pin(line, "==")
            pins[name] = version
    return pins


def project_pins() -> dict[str, str]:
    """Exact pins: pyproject's dependencies first, then constraints.txt for the rest."""
    pins = constraint_pins()
    project = pyproject()["project"]
    specs = project["dependencies"] + [
        s for extra in project["optional-dependencies"].values() for s in extra
    ]
    for spec in specs:
        name, version = parse_pin(spec, "==")
        pins[name] = version
    return pins


def env_packages(path) -> tuple[dict[str, str | None], dict[str, str | None]]:
    """(conda packages, pip packages) of an environment file: name -> pinned version."""
    env = yaml.safe_load(path.read_text())
    conda, pip = {}, {}
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            for spec in dep["pip"]:
                name, version = parse_pin(spec, "==")
                pip[name] = version
        else:
            name, version = parse_pin(dep, "=")
            conda[name] = version.lstrip("=") if version else None
    return conda, pip


def test_one_environment_per_rule_family():
    assert {p.stem for p in ENVS} == FAMILIES


@pytest.mark.parametrize("path", ENVS, ids=lambda p: p.name)
def test_environment_has_the_form_conda_expects(path):
    env = yaml.safe_load(path.read_text())
    assert set(env) == {"channels", "dependencies"}, "name-less: Snakemake names the env"
    assert env["channels"] == ["conda-forge", "nodefaults"]
    conda, pip = env_packages(path)
    # Only python and pip come from conda; everything else from PyPI with the same pins
    # that .venv has. python must be the venv's minor version: a script's preamble falls
    # back to the submitting environment's site-packages for Snakemake itself.
    assert conda == {"python": "3.11", "pip": None}
    assert pyproject()["project"]["requires-python"] == ">=3.11,<3.12"
    assert pip, "no packages"


@pytest.mark.parametrize("path", ENVS, ids=lambda p: p.name)
def test_every_pin_agrees_with_pyproject_and_constraints(path):
    if path.stem in GPU_FAMILIES:
        # constraints-gpu.txt holds every pyproject pin these need (a test below checks)
        pins, source = constraint_pins("constraints-gpu.txt"), "constraints-gpu.txt"
    else:
        pins, source = project_pins(), "pyproject.toml/constraints.txt"
    _, pip = env_packages(path)
    for name, version in pip.items():
        assert version is not None, f"{path.name}: {name} is not pinned (name==version)"
        assert name in pins, f"{path.name}: {name} is not pinned in {source}"
        assert version == pins[name], (
            f"{path.name}: {name}=={version}, but {source} pin {pins[name]}"
        )


def test_gpu_pins_agree_with_constraints_but_numpy():
    cpu, gpu = constraint_pins(), constraint_pins("constraints-gpu.txt")
    differ = {name for name in cpu.keys() & gpu.keys() if cpu[name] != gpu[name]}
    assert differ == GPU_DIFFERENT, "constraints-gpu.txt and constraints.txt differ in these"
    assert gpu["numpy"] == "2.3.5"


def test_gpu_pins_hold_vllm_and_every_core_dependency_but_not_the_slurm_plugin():
    project = pyproject()["project"]
    extras = project["optional-dependencies"]
    gpu = constraint_pins("constraints-gpu.txt")
    assert extras["gpu"] == ["vllm==0.30.0"] and gpu["vllm"] == "0.30.0"
    # what make gpu-venv installs: the core dependencies, gpu and tracking
    for spec in project["dependencies"] + extras["gpu"] + extras["tracking"]:
        name, version = parse_pin(spec, "==")
        assert gpu.get(name) == version, f"constraints-gpu.txt: {name} is not pinned at {version}"
    for spec in extras["slurm"]:  # needs numpy>=2.4.5: never in the GPU set
        assert parse_pin(spec, "==")[0] not in gpu


def test_the_slurm_plugin_is_an_extra_that_dev_installs():
    project = pyproject()["project"]
    extras = project["optional-dependencies"]
    # the submitter's plugin, and (through the slurm-jobstep extra) the one each Slurm job's
    # snakemake runs with, which the GPU set holds too: profiles/slurm runs jobs in .venv-gpu
    assert set(extras["slurm"]) == {
        "snakemake-executor-plugin-slurm==2.8.0",
        "stylemerge[slurm-jobstep]",
    }
    names = {"snakemake-executor-plugin-slurm", "snakemake-executor-plugin-slurm-jobstep"}
    assert {parse_pin(spec, "==")[0] for spec in extras["slurm-jobstep"]} == names - {
        "snakemake-executor-plugin-slurm"
    }
    assert not names & {parse_pin(spec, "==")[0] for spec in project["dependencies"]}
    assert "stylemerge[slurm]" in extras["dev"]  # make test and CI (tests/test_slurm.py)
    for path in ENVS:  # jobs never submit
        assert not names & set(env_packages(path)[1]), path.name


@pytest.mark.parametrize("family", sorted(NEEDS))
def test_environment_has_what_its_rules_import(family):
    _, pip = env_packages(ROOT / "envs" / f"{family}.yaml")
    # Every job imports stylemerge.workflow.config (jsonschema, yaml) through the Snakefile's
    # PYTHONPATH.
    assert NEEDS[family] | {"jsonschema", "pyyaml"} <= set(pip)


def rules_with_conda() -> dict[str, Path | None]:
    """Rule name -> the env file its `conda:` names (None: no conda directive), for every
    rule that runs something (script, shell, run, notebook, wrapper)."""
    rules = {}
    sources = [ROOT / "Snakefile", *sorted((ROOT / "workflow" / "rules").glob("*.smk"))]
    for source in sources:
        for block in re.split(r"^(?=(?:local)?rule \w+)", source.read_text(), flags=re.M):
            head = re.match(r"(?:local)?rule (\w+)", block)
            if not head:
                continue
            if not re.search(r"^\s+(script|shell|run|notebook|wrapper):", block, re.M):
                continue
            conda = re.search(r"^\s+conda:\s*\n\s+[\"'](.+?)[\"']", block, re.M)
            rules[head.group(1)] = (source.parent / conda.group(1)).resolve() if conda else None
    return rules


def test_every_rule_declares_its_family_environment():
    rules = rules_with_conda()
    assert {"build_shards", "train_tokenizer", "pretrain_model"} <= set(rules)
    for rule, env in rules.items():
        assert env is not None, f"rule {rule} has no conda: directive"
        assert env.parent == ROOT / "envs" and env.is_file(), f"rule {rule}: {env}"
        if rule in RULE_ENV:
            assert env.stem == RULE_ENV[rule], f"rule {rule} uses envs/{env.name}"
