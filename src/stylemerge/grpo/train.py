"""GRPO style adapters: trl's GRPOTrainer with a peft LoRA on the base model, rewarded by
the domain proxy against the general proxy (see :mod:`stylemerge.grpo.rewards`).

Checkpoints go to a directory that is not a Snakemake output, so a killed job resumes from
the last one when rerun; a fingerprint of the settings and inputs keeps a checkpoint from
another configuration from being resumed by mistake.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import shutil
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import torch

from stylemerge.core.checkpoints import (
    completed_steps,
    fingerprint,
    prepare_checkpoints,
)
from stylemerge.core.files import atomic_path, read_json, write_json
from stylemerge.core.job import JobSettings, set_seed
from stylemerge.core.precision import Autocast
from stylemerge.core.tracking import tracked
from stylemerge.data.shards import DomainShards, read_shard, shard_texts
from stylemerge.generation.sampling import make_prompts, prompt_windows, sample_completions
from stylemerge.generation.vllm import require_vllm
from stylemerge.grpo.mara import make_trainer_class, mara_bonus
from stylemerge.grpo.rewards import CharProfile, ProxyScorer, build_rewards, digit_punct_fraction
from stylemerge.grpo.trl_compat import MANAGED, trl_default
from stylemerge.grpo.vllm import grpo_policy_reference, grpo_trainer_settings
from stylemerge.models.reference import ModelReference

log = logging.getLogger(__name__)


def mean_se(values: Sequence[float], clusters: Sequence | None = None) -> dict:
    """The mean with its standard error; with ``clusters`` (a label per value: the document
    a prompt was cut from), the cluster-robust one (values of one document are not
    independent: ``sqrt(G / (G - 1) * sum_g (sum_{i in g} (x_i - mean))**2) / n`` over the
    ``G`` clusters), ``n`` then counting clusters and ``values`` the values."""
    mean = statistics.fmean(values)
    if clusters is None:
        se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else math.nan
        return {"mean": mean, "se": se, "n": len(values)}
    sums: dict = {}
    for value, cluster in zip(values, clusters, strict=True):
        sums[cluster] = sums.get(cluster, 0.0) + (value - mean)
    g = len(sums)
    se = (
        math.sqrt(g / (g - 1) * math.fsum(v * v for v in sums.values())) / len(values)
        if g > 1
        else math.nan
    )
    return {"mean": mean, "se": se, "n": g, "values": len(values)}


def evaluate_policy(
    model,
    tokenizer,
    prompts,
    reward_funcs,
    weights,
    general: ProxyScorer,
    settings: Mapping,
    seed: int,
    profile: CharProfile | None = None,
    autocast: Autocast = contextlib.nullcontext,
) -> dict:
    """Held-out reward components and fluency, averaged per prompt over its samples; with the
    domain's character ``profile``, also the drift from it (``char_profile_tv``: total
    variation distance of each sample's character classes) and ``digit_punct_fraction``."""
    trainer = settings["trainer"]
    completions = sample_completions(
        model,
        tokenizer,
        prompts,
        settings["eval_samples"],
        trainer.get("max_completion_length", trl_default("max_completion_length")),
        trainer.get("temperature", trl_default("temperature")),
        trainer.get("top_p", trl_default("top_p")),
        seed,
        autocast=autocast,
        top_k=trainer.get("top_k", trl_default("top_k")),  # as trl samples in training
        progress="held-out sampling",
    )
    flat_prompts = [p for p, group in zip(prompts, completions, strict=True) for _ in group]
    flat = [c for group in completions for c in group]
    k = settings["eval_samples"]

    def per_prompt(values):
        return [statistics.fmean(values[i * k : (i + 1) * k]) for i in range(len(prompts))]

    components = {}
    total = [0.0] * len(flat)
    for func, weight in zip(reward_funcs, weights, strict=True):
        values = func(prompts=flat_prompts, completions=flat, completion_ids=None)
        components[func.__name__] = per_prompt(values)
        total = [t + weight * v for t, v in zip(total, values, strict=True)]
    components["total"] = per_prompt(total)
    # raw general-proxy log-prob (NaN for blank completions; summarise() skips those prompts)
    components["fluency_logprob"] = per_prompt(general.mean_logprobs(flat_prompts, flat))
    # drift of the samples' characters (blank samples are left out of their prompt's mean)
    drift = {"digit_punct_fraction": [digit_punct_fraction(c) for c in flat]}
    if profile is not None:
        drift["char_profile_tv"] = [profile.distance(c) for c in flat]
    for name, values in drift.items():
        groups = [
            [v for v in values[i * k : (i + 1) * k] if math.isfinite(v)]
            for i in range(len(prompts))
        ]
        components[name] = [statistics.fmean(g) if g else math.nan for g in groups]
    return {
        "per_prompt": components,
        "examples": [[p, c[0]] for p, c in zip(prompts[:3], completions[:3], strict=True)],
    }


def summarise(before: Mapping, after: Mapping, documents: Sequence | None = None) -> dict:
    """mean ± se before and after, and the paired change, per component; with ``documents``
    (each prompt's source document) the standard errors are over documents
    (:func:`mean_se`), ``n`` counting documents."""
    summary = {}
    for name, b in before["per_prompt"].items():
        a = after["per_prompt"][name]
        keep = [
            i
            for i, (x, y) in enumerate(zip(b, a, strict=True))
            if math.isfinite(x) and math.isfinite(y)
        ]
        clusters = None if documents is None else [documents[i] for i in keep]
        if len(keep) < 2 or (clusters is not None and len(set(clusters)) < 2):
            summary[name] = {"before": None, "after": None, "change": None}
            continue
        summary[name] = {
            "before": mean_se([b[i] for i in keep], clusters),
            "after": mean_se([a[i] for i in keep], clusters),
            "change": mean_se([a[i] - b[i] for i in keep], clusters),
        }
    return summary


def completion_summary(history: Sequence[Mapping]) -> dict:
    """The training completions' mean length in tokens and the share cut at
    max_completion_length (trl's ``completions/mean_length`` and
    ``completions/clipped_ratio``), averaged over the logged steps; None where trl logged
    neither."""

    def mean(key: str) -> float | None:
        values = [float(e[key]) for e in history if e.get(key) is not None]
        values = [v for v in values if math.isfinite(v)]
        return statistics.fmean(values) if values else None

    return {
        "mean_length": mean("completions/mean_length"),
        "clipped_ratio": mean("completions/clipped_ratio"),
    }


def checkpoint_fingerprint(
    settings: Mapping,
    seed: int,
    base: ModelReference,
    proxy: ModelReference,
    general_proxy: ModelReference,
    prompts: Sequence[str],
    precision: str = "fp32",
) -> str:
    """What a GRPO run's checkpoints depend on: another value of any part starts it over."""
    return fingerprint(
        settings=settings,
        seed=seed,
        precision=precision,
        # a changed revision is another model: its checkpoints are not resumed
        base=base.as_dict(),
        proxy=proxy.as_dict(),
        general_proxy=general_proxy.as_dict(),
        prompts=list(prompts),
    )


def restore_finished(trainer, checkpoint: str | Path) -> None:
    """Load a finished run's adapter weights and trainer state from its last checkpoint."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file
    from transformers import TrainerState

    checkpoint = Path(checkpoint)
    weights = load_file(checkpoint / "adapter_model.safetensors")
    set_peft_model_state_dict(trainer.model, weights)
    trainer.state = TrainerState.load_from_json(str(checkpoint / "trainer_state.json"))
    log.info("%s holds the last step: training was complete", checkpoint)


def trained_dtypes(trainer, precision: str) -> dict:
    """What the adapter was trained in: the job's precision (the passes' matrix products)
    and the dtypes of the trainable weights and of the optimiser's state, float32 under
    either precision."""

    def names(tensors) -> list[str]:
        return sorted({str(t.dtype).removeprefix("torch.") for t in tensors})

    trainable = [p for p in trainer.model.parameters() if p.requires_grad]
    state = trainer.optimizer.state.values() if trainer.optimizer is not None else []
    moments = [v for s in state for k, v in s.items() if k != "step" and torch.is_tensor(v)]
    return {"passes": precision, "trainable": names(trainable), "optimizer_state": names(moments)}


class ProxyNotSpecialisedError(ValueError):
    """The domain's proxy did not learn the domain's style: its reward would be noise."""


def check_proxy_specialised(proxy: str | Path, domain: str) -> None:
    """Refuse a proxy whose own-domain held-out loss did not improve, or improved less than
    on another domain (``metrics.json`` of train_proxy): GRPO would optimise a meaningless
    reward.  A proxy without metrics (not made by train_proxy) is taken as it is."""
    path = Path(proxy) / "metrics.json"
    if not path.is_file():
        return
    metrics = read_json(path)
    own = metrics["own_gain"]
    if own > 0 and metrics["specialised"]:
        return
    best = max(metrics["gain"], key=metrics["gain"].get)
    raise ProxyNotSpecialisedError(
        f"{path}: the {domain} proxy is not specialised (own-domain held-out loss gain "
        f"{own:+.4f} nats; largest gain {metrics['gain'][best]:+.4f} on {best}), so its style "
        "reward would be noise. Retune proxy.* for this domain (learning rate, steps), or set "
        "grpo.require_specialised_proxy: false to train on it anyway"
    )


class _Inputs(NamedTuple):  # what a GRPO run takes from the policy and the domain's shards
    domain: str
    tokenizer: object  # the policy's
    profile: CharProfile  # the train texts' character classes, for drift
    train: list[str]  # train prompts
    heldout: list[str]  # held-out prompts
    documents: list[str]  # the document each held-out prompt was cut from


class _Rewards(NamedTuple):  # the training rewards, and the general proxy for fluency
    funcs: list
    weights: list
    general: ProxyScorer


def _trainer_settings(job: JobSettings, settings: Mapping) -> dict:
    """``grpo.trainer`` as GRPOConfig takes it, completed from the applied ``job``; a key the
    workflow sets, or one that contradicts the job, is a ValueError."""
    # with use_vllm, vllm_max_model_length derived where unset (stylemerge.generation.vllm)
    trainer_settings = grpo_trainer_settings(settings)
    if trainer_settings.get("use_vllm"):  # trl's own error comes after the models are loaded
        require_vllm("grpo.trainer.use_vllm: true")
    managed = sorted(set(trainer_settings) & set(MANAGED))
    if managed:
        raise ValueError(f"grpo.trainer may not set {managed}: the workflow sets them")
    if "hub_token" in trainer_settings:  # the settings are copied into metrics.json
        raise ValueError(
            "grpo.trainer may not set hub_token: a hub token comes from the environment "
            "(HF_TOKEN) only, never from settings"
        )
    # a NaN loss must reach StopOnNonFinite (Trainer would log a running average instead)
    trainer_settings.setdefault("logging_nan_inf_filter", False)
    # the trainer runs where the rest of the job runs: config `device` decides
    use_cpu = job.device == "cpu"
    if trainer_settings.setdefault("use_cpu", use_cpu) != use_cpu:
        raise ValueError(
            f"grpo.trainer.use_cpu={trainer_settings['use_cpu']} contradicts device={job.device!r}"
        )
    # the trainer's mixed precision is the job's: bf16 autocasts the policy's and the
    # reference's passes; the LoRA weights and the optimiser state stay float32
    trainer_settings["bf16"] = job.precision == "bf16"
    # trl hands GRPOConfig.trust_remote_code to its vLLM engine (the only place it reads it for
    # a policy given as a model): repository code runs there only where the config allows it
    trust = job.trust_remote_code
    if trainer_settings.setdefault("trust_remote_code", trust) != trust:
        raise ValueError(
            f"grpo.trainer.trust_remote_code={trainer_settings['trust_remote_code']} contradicts "
            f"trust_remote_code={trust} (set the top-level key only)"
        )
    return trainer_settings


def _read_inputs(job: JobSettings, policy_ref, shards: DomainShards, settings: Mapping) -> _Inputs:
    """The policy's tokenizer, the train texts' character profile, then the train and held-out
    prompts; too few prompts of either is a ValueError."""
    tokenizer = policy_ref.tokenizer(job)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    texts = list(shard_texts([shards.train]))
    profile = CharProfile.of_texts(texts)
    train_prompts = make_prompts(
        tokenizer,
        texts,
        settings["prompt_tokens"],
        settings["prompts_per_document"],
        settings["max_prompts"],
    )
    heldout = list(read_shard(shards.heldout))
    # few held-out documents (small corpora): take more windows from each; windows are taken
    # from every document before a second from any (prompt_windows)
    per_document = max(
        settings["prompts_per_document"], math.ceil(settings["eval_prompts"] / len(heldout))
    )
    windows = prompt_windows(
        tokenizer,
        [r["text"] for r in heldout],
        settings["prompt_tokens"],
        per_document,
        settings["eval_prompts"],
        documents=[r.get("id") or str(i) for i, r in enumerate(heldout)],
    )
    eval_prompts = [w["prompt"] for w in windows]
    eval_documents = [w["document"] for w in windows]
    if not train_prompts or len(eval_prompts) < 2:
        raise ValueError(
            f"domain {shards.domain!r}: too few prompts ({len(train_prompts)} train, "
            f"{len(eval_prompts)} held-out) of {settings['prompt_tokens']} tokens: documents "
            f"are too short for grpo.prompt_tokens"
        )
    log.info("%d train prompts, %d held-out prompts", len(train_prompts), len(eval_prompts))
    return _Inputs(shards.domain, tokenizer, profile, train_prompts, eval_prompts, eval_documents)


def _rewards(job: JobSettings, settings: Mapping, proxy, general_proxy, profile) -> _Rewards:
    """Load the general proxy's scorer, then the domain proxy's, and build the rewards on
    them (:func:`stylemerge.grpo.rewards.build_rewards`)."""

    def scorer(model: ModelReference):
        return ProxyScorer(
            model.model(job).to(job.device),
            model.tokenizer(job),
            batch_size=settings["scorer_batch_size"],
            autocast=job.autocast(),
        )

    general = scorer(general_proxy)
    reward_funcs, weights = build_rewards(
        settings["rewards"], scorer(proxy), general, profile=profile
    )
    return _Rewards(reward_funcs, weights, general)


def _run_trainer(
    job, settings, trainer_settings, policy, inputs, rewards, checkpoint_dir, resume, out_dir
):
    """Put a new LoRA on ``policy`` and train it with GRPO (MARA's trainer where enabled) on
    the train prompts, from the checkpoint ``resume`` if any; return the trainer."""
    from datasets import Dataset
    from peft import LoraConfig
    from trl import GRPOConfig, GRPOTrainer

    from stylemerge.core.progress import progress_callback
    from stylemerge.core.training import StopOnNonFinite

    trainer_settings.setdefault("report_to", list(job.report_to))
    trainer_settings.setdefault("run_name", job.tracking_name)  # stylemerge.core.tracking's run
    mara = settings["mara"]
    trainer_class, extra = GRPOTrainer, {}
    funcs, weights = list(rewards.funcs), list(rewards.weights)
    if mara["enabled"]:  # MARA's bonus is one more reward column (stylemerge.grpo.mara)
        trainer_class = make_trainer_class()
        extra = {"mara": {k: v for k, v in mara.items() if k != "enabled"}}
        funcs.append(mara_bonus)
        weights.append(1.0)
    args = GRPOConfig(
        output_dir=str(checkpoint_dir), seed=job.seed, reward_weights=weights, **trainer_settings
    )
    lora = settings["lora"]
    trainer = trainer_class(
        model=policy,
        reward_funcs=funcs,
        args=args,
        train_dataset=Dataset.from_dict({"prompt": inputs.train}),
        processing_class=inputs.tokenizer,
        peft_config=LoraConfig(
            r=lora["r"],
            lora_alpha=lora["alpha"],
            lora_dropout=lora["dropout"],
            target_modules=list(lora["target_modules"]),
            task_type="CAUSAL_LM",
        ),
        callbacks=[StopOnNonFinite(), progress_callback(f"grpo {Path(out_dir).name}")],
        **extra,
    )
    if resume and completed_steps(resume) >= args.max_steps > 0:
        # Killed after its last checkpoint but before the output was in place: the checkpoint
        # is the finished adapter. Trainer would run one step more when resumed there
        # (transformers 5.23), and the result would differ from an uninterrupted run's.
        restore_finished(trainer, resume)
    else:
        trainer.train(resume_from_checkpoint=resume)
    return trainer


def _adapter_metrics(job, settings, inputs, rewards, trainer, resume, before, after) -> dict:
    """``metrics.json``: the held-out evaluation ``before`` and ``after`` training, the
    training's steps and completions, and what the run used."""
    return {
        "domain": inputs.domain,
        # standard errors over the held-out documents the prompts were cut from
        "heldout": summarise(before, after, inputs.documents),
        "heldout_documents": inputs.documents,
        # per held-out prompt (same prompts and seed in every run of the domain): arms of an
        # ablation are compared paired on these
        "heldout_per_prompt": {"before": before["per_prompt"], "after": after["per_prompt"]},
        "examples": {"before": before["examples"], "after": after["examples"]},
        "train_prompts": len(inputs.train),
        "heldout_prompts": len(inputs.heldout),
        "steps": trainer.state.global_step,
        "completions": completion_summary(trainer.state.log_history),
        "resumed_from": Path(resume).name if resume else None,
        "reward_weights": dict(
            zip([f.__name__ for f in rewards.funcs], rewards.weights, strict=True)
        ),
        "char_profile": inputs.profile.as_dict(),
        "threads": job.threads,
        "precision": trained_dtypes(trainer, job.precision),
        "settings": dict(settings),
        "provenance": dict(job.provenance),
    }


@tracked()  # the job's run in report_to's trackers, its result logged
def train_adapter(
    job: JobSettings,
    base: ModelReference | str | Path,
    general_proxy: ModelReference | str | Path,
    proxy: str | Path,
    shards: DomainShards,
    out_dir: str | Path,
    checkpoint_dir: str | Path,
    settings: Mapping,
) -> dict:
    """Train one domain's LoRA adapter on ``base`` with GRPO, rewarded by the domain's
    ``proxy`` (against ``general_proxy``) on the prompts of ``shards``; save adapter, log
    history and metrics."""
    import pandas as pd

    job = job.apply()
    device, seed, domain = job.device, job.seed, shards.domain
    base, general_proxy = ModelReference.of(base), ModelReference.of(general_proxy)
    proxy = ModelReference.of(proxy)
    trainer_settings = _trainer_settings(job, settings)
    if settings["require_specialised_proxy"]:
        check_proxy_specialised(proxy.ref, domain)
    # with use_vllm, the pinned revision's local snapshot: trl's vLLM loads the policy's
    # name_or_path, and nothing else of it (stylemerge.grpo.vllm.grpo_policy_reference)
    policy_ref = grpo_policy_reference(job, base, trainer_settings)
    inputs = _read_inputs(job, policy_ref, shards, settings)
    rewards = _rewards(job, settings, proxy, general_proxy, inputs.profile)

    set_seed(seed)
    policy = policy_ref.model(job).to(device)
    # the held-out evaluation before and after training: same prompts, seed and precision
    evaluate = functools.partial(
        evaluate_policy,
        tokenizer=inputs.tokenizer,
        prompts=inputs.heldout,
        reward_funcs=rewards.funcs,
        weights=rewards.weights,
        general=rewards.general,
        settings=settings,
        seed=seed,
        profile=inputs.profile,
        autocast=job.autocast(),
    )
    before = evaluate(policy)

    checkpoint_dir = Path(checkpoint_dir)
    resume = prepare_checkpoints(
        checkpoint_dir,
        checkpoint_fingerprint(
            settings, seed, base, proxy, general_proxy, inputs.train, job.precision
        ),
    )
    trainer = _run_trainer(
        job, settings, trainer_settings, policy, inputs, rewards, checkpoint_dir, resume, out_dir
    )
    after = evaluate(trainer.model)

    metrics = _adapter_metrics(job, settings, inputs, rewards, trainer, resume, before, after)
    with atomic_path(out_dir) as tmp:
        trainer.model.save_pretrained(tmp)
        pd.DataFrame(trainer.state.log_history).to_csv(tmp / "log_history.csv", index=False)
        write_json(tmp / "metrics.json", metrics)
    shutil.rmtree(checkpoint_dir, ignore_errors=True)  # done: a later rerun starts afresh
    style = metrics["heldout"].get("style_contrast")  # absent where no reward is named so
    log.info("%s: held-out style change %s", domain, style["change"] if style else None)
    return metrics
