"""Style proxies: the general proxy fine-tuned on one domain's train shard.

The metrics record the held-out loss on every domain before and after: a style proxy should
gain most on its own domain (``specialised``); one that does not is recorded as such.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping
from pathlib import Path

from stylemerge.core.checkpoints import fingerprint, training_settings
from stylemerge.core.files import atomic_path, sha256_file, write_json
from stylemerge.core.job import JobSettings, set_seed
from stylemerge.core.tracking import tracked
from stylemerge.core.training import fit_causal_lm, pack
from stylemerge.data.shards import shard_texts
from stylemerge.models.reference import ModelReference

log = logging.getLogger(__name__)


@tracked()  # the job's run in report_to's trackers, its result logged
def train_proxy(
    job: JobSettings,
    general_proxy: ModelReference | str | Path,
    domain: str,
    train_shard: str | Path,
    heldout_shards: Mapping[str, str | Path],
    out_dir: str | Path,
    settings: Mapping,
    checkpoint_dir: str | Path | None = None,
) -> dict:
    """Fine-tune ``general_proxy`` on ``domain``; save it with ``metrics.json``.

    ``checkpoint_dir``: checkpoints every ``settings["save_steps"]`` steps, resumed from by a
    job run again after a kill (removed once the proxy is saved)."""

    job = job.apply()
    general_proxy = ModelReference.of(general_proxy)
    if domain not in heldout_shards:
        raise ValueError(f"no held-out shard for the proxy's own domain {domain!r}")
    tokenizer = general_proxy.tokenizer(job)
    set_seed(job.seed)
    model = general_proxy.model(job, dtype="float32")
    seq_len = settings["seq_len"]
    train = pack(tokenizer, shard_texts([train_shard]), seq_len)
    eval_sets = {
        name: pack(tokenizer, shard_texts([path]), seq_len)[: settings["eval_blocks"]]
        for name, path in heldout_shards.items()
    }
    checkpoints = None
    if checkpoint_dir is not None:
        key = fingerprint(
            settings=training_settings(settings),
            seed=job.seed,
            precision=job.precision,
            general_proxy=general_proxy.as_dict(),  # another revision: another start
            domain=domain,
            shards={
                name: sha256_file(path)
                for name, path in {"train": train_shard, **heldout_shards}.items()
            },
        )
        checkpoints = (checkpoint_dir, key)
    fit = fit_causal_lm(model, train, eval_sets, settings, job, checkpoints, f"proxy {domain}")
    before, after = fit["heldout_loss_before"], fit["heldout_loss_after"]
    gain = {name: before[name] - after[name] for name in before}
    others = [g for name, g in gain.items() if name != domain]
    metrics = {
        "domain": domain,
        "heldout_loss_before": before,
        "heldout_loss_after": after,
        "gain": gain,
        "own_gain": gain[domain],
        "mean_other_gain": sum(others) / len(others) if others else None,
        # the proxy gains more on its own domain than on any other: it models the style
        "specialised": all(gain[domain] > g for g in others),
        "train_blocks": len(train),
        "train_loss": fit["train_loss"],
        "resumed_from": fit["resumed_from"],
        "tokens_seen": fit["tokens_seen"],
        "threads": job.threads,
        "log_history": fit["log_history"],
        "settings": dict(settings),
        "provenance": dict(job.provenance),
    }
    log.info(
        "%s: own held-out loss %.3f -> %.3f; specialised=%s",
        domain,
        before[domain],
        after[domain],
        metrics["specialised"],
    )
    with atomic_path(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / "metrics.json", metrics)
    if checkpoint_dir is not None:  # done: a later rerun starts afresh
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    return metrics
