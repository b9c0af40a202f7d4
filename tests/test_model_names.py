"""Model names (stylemerge.models.names), shared by workflow/rules/common.smk and the cost model."""

import copy

import pytest

from conftest import ROOT, SCHEMA
from stylemerge.cli.cost import load_config
from stylemerge.models.names import (
    ModelNameError,
    arms,
    diversity_models,
    lm_eval_models,
    think_models,
)


@pytest.fixture
def smol() -> dict:
    return load_config(ROOT / "config" / "smol.yaml", SCHEMA)


def test_names_and_places_of_the_smol_ablation(smol):
    assert arms(smol) == ["", "-mara"]
    assert think_models(smol) == ["karcher", "base"]
    scored = lm_eval_models(smol, "results/smol")
    assert scored == {
        "base": None,  # whatever models.base is
        "karcher": "results/smol/merges/karcher",
        "linear": "results/smol/merges/linear",
        "karcher-mara": "results/smol/merges/karcher-mara",
        "think_karcher": "results/smol/think/karcher",
        "think_base": "results/smol/think/base",
    }
    diversity = diversity_models(smol, "results/smol")
    assert list(diversity)[: len(scored)] == list(scored)  # and both arms' domain models
    assert diversity["domain_bbc_news-mara"] == "results/smol/domain_models/bbc_news-mara"
    assert len(diversity) == len(scored) + 2 * len(smol["domains"])


def test_without_the_ablation_one_arm_and_comparisons_by_reference(smol):
    config = copy.deepcopy(smol)
    config["ablation"]["mara"] = False
    config["evaluate"]["comparisons"] = {"wave": "org/wave"}
    config["evaluate"]["domain_models"] = True
    assert arms(config) == [""]
    scored = lm_eval_models(config)
    assert scored["wave"] == "org/wave"
    assert scored["domain_bbc_news"] == "results/domain_models/bbc_news"
    assert diversity_models(config) == scored


def test_colliding_names_are_refused_with_what_to_rename(smol):
    config = copy.deepcopy(smol)
    config["evaluate"]["comparisons"] = {"karcher": "org/other"}
    with pytest.raises(ModelNameError, match="rename a merge variant or a comparison"):
        lm_eval_models(config)
    config = copy.deepcopy(smol)
    config["merge"]["variants"]["base"] = {"method": "linear", "space": "weights"}
    with pytest.raises(ModelNameError, match="'merge.variants.base'"):
        think_models(config)


@pytest.mark.workflow
def test_the_workflow_turns_a_collision_into_its_error(tmp_path):
    from test_workflow import REDUCED, copy_workflow, snakemake

    config = copy.deepcopy(REDUCED)
    config.setdefault("evaluate", {})["comparisons"] = {"think_karcher": "org/other"}
    workdir = copy_workflow(tmp_path, config)
    result = snakemake(workdir, "-n", "--cores", "1", check=False)
    assert result.returncode != 0
    assert "model names to evaluate collide" in result.stderr + result.stdout
