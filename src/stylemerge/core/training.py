"""Causal-LM training shared by the tiny-model pretraining and the style proxies.

Texts are joined with EOS and cut into fixed blocks; transformers' Trainer does the
training; held-out losses are measured before and after so that a model which learned
nothing is visible in its metrics, and a NaN loss stops the run with its step and value.
"""

from __future__ import annotations

import logging
import math
import tempfile
from collections.abc import Iterable, Mapping
from contextlib import nullcontext
from pathlib import Path

import torch
from transformers import TrainerCallback

from stylemerge.core.checkpoints import completed_steps, prepare_checkpoints
from stylemerge.core.job import JobSettings
from stylemerge.core.progress import progress_callback

log = logging.getLogger(__name__)


class Blocks(torch.utils.data.Dataset):
    """Fixed-length token blocks for causal-LM training (labels = inputs)."""

    def __init__(self, blocks: torch.Tensor):
        self.blocks = blocks

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, index: int) -> dict:
        ids = self.blocks[index]
        return {"input_ids": ids, "labels": ids, "attention_mask": torch.ones_like(ids)}


def pack(tokenizer, texts: Iterable[str], seq_len: int) -> torch.Tensor:
    """Token ids of all texts, each followed by EOS, cut into ``seq_len`` blocks (the
    remainder is dropped)."""
    ids: list[int] = []
    for text in texts:
        ids.extend(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])
        ids.append(tokenizer.eos_token_id)
    n = len(ids) // seq_len
    if n == 0:
        raise ValueError(f"only {len(ids)} tokens: fewer than one block of seq_len={seq_len}")
    return torch.tensor(ids[: n * seq_len], dtype=torch.long).view(n, seq_len)


class StopOnNonFinite(TrainerCallback):
    """Stop training with the step and the value when a logged loss or reward is NaN/inf.

    Trainer hides a NaN loss from its logs unless ``logging_nan_inf_filter`` is off (it logs
    the running average instead): every trainer here turns it off."""

    KEYS = ("loss", "eval_loss", "reward", "grad_norm")

    @classmethod
    def watched(cls, key: str) -> bool:
        return (
            key in cls.KEYS
            or key.endswith("_loss")
            or (key.startswith("rewards/") and key.endswith("/mean"))  # trl, per reward
        )

    def on_log(self, args, state, control, logs=None, **kwargs):
        bad = [
            f"{key} is {value}"
            for key, value in (logs or {}).items()
            if self.watched(key) and isinstance(value, float) and not math.isfinite(value)
        ]
        if bad:
            raise FloatingPointError(
                f"{', '.join(bad)} at step {state.global_step}: training diverged"
            )


def fit_causal_lm(
    model,
    train: torch.Tensor,
    eval_sets: Mapping[str, torch.Tensor],
    settings: Mapping,
    job: JobSettings,
    checkpoints: tuple[str | Path, str] | None = None,
    what: str = "training",
) -> dict:
    """Train ``model`` on ``train`` blocks; held-out loss per eval set before and after.
    The job's trackers (``report_to``) get the training logs; its log gets progress lines
    for ``what`` (stylemerge.core.progress).

    ``checkpoints``: (directory, fingerprint of the settings and inputs) to save a checkpoint
    every ``settings["save_steps"]`` steps and to resume from the last one there (a killed
    job): the model, optimiser, schedule, data order and RNG states, so that the result is
    the uninterrupted run's.  The caller removes the directory once its output is saved."""
    from transformers import Trainer

    resume = None
    if checkpoints is not None:
        directory, key = Path(checkpoints[0]), checkpoints[1]
        resume = prepare_checkpoints(directory, key)
    workdir = (
        nullcontext(str(directory)) if checkpoints else tempfile.TemporaryDirectory(prefix="fit-")
    )
    with workdir as scratch:
        trainer = Trainer(
            model=model,
            args=_training_arguments(settings, job, scratch, save=bool(checkpoints)),
            train_dataset=Blocks(train),
            callbacks=[StopOnNonFinite(), progress_callback(what)],
        )
        datasets = {name: Blocks(blocks) for name, blocks in eval_sets.items()}
        before = _heldout_losses(trainer, datasets)
        _train_or_restore(trainer, model, resume, settings["steps"])
        after = _heldout_losses(trainer, datasets)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return {
        "heldout_loss_before": before,
        "heldout_loss_after": after,
        # the logged losses' mean: the same whether or not the run was resumed (Trainer's own
        # training_loss counts only the steps since the resume)
        "train_loss": sum(losses) / len(losses) if losses else None,
        "tokens_seen": settings["steps"] * settings["batch_size"] * train.shape[1],
        "log_history": trainer.state.log_history,
        "resumed_from": Path(resume).name if resume else None,
    }


def _training_arguments(settings: Mapping, job: JobSettings, output_dir: str, save: bool):
    """Trainer's arguments for :func:`fit_causal_lm`: cosine schedule, the job's seed for
    the weights and the data order, a checkpoint every ``save_steps`` steps when ``save``."""
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=output_dir,
        max_steps=settings["steps"],
        per_device_train_batch_size=settings["batch_size"],
        per_device_eval_batch_size=settings["batch_size"],
        learning_rate=settings["learning_rate"],
        lr_scheduler_type="cosine",
        warmup_steps=settings["warmup_steps"],
        weight_decay=settings["weight_decay"],
        logging_steps=max(1, settings["steps"] // 20),
        logging_nan_inf_filter=False,  # a NaN loss must reach StopOnNonFinite
        save_strategy="steps" if save else "no",
        save_steps=settings.get("save_steps") or 500,
        save_total_limit=1,  # the last checkpoint is all a resumed job needs
        report_to=list(job.report_to),
        run_name=job.tracking_name,  # the run stylemerge.core.tracking opened for the job
        seed=job.seed,
        data_seed=job.seed,
        use_cpu=job.device == "cpu",
        bf16=job.precision == "bf16",  # autocast; the weights and Adam stay float32
        dataloader_num_workers=0,
        disable_tqdm=True,
    )


def _heldout_losses(trainer, datasets: Mapping[str, Blocks]) -> dict[str, float]:
    """The held-out loss on each dataset; an error naming the first that is not finite."""
    metrics = trainer.evaluate(eval_dataset=datasets)
    losses = {name: metrics[f"eval_{name}_loss"] for name in datasets}
    for name, value in losses.items():
        if not math.isfinite(value):
            raise FloatingPointError(f"held-out loss on {name} is {value}")
    return losses


def _train_or_restore(trainer, model, resume: str | None, steps: int) -> None:
    """Train, from ``resume`` if given; a checkpoint that already holds the last step is
    loaded instead (Trainer resumed there would step on)."""
    if resume and completed_steps(resume) >= steps:
        # killed after its last checkpoint, before its output was in place: that
        # checkpoint is the result
        from safetensors.torch import load_file
        from transformers import TrainerState

        model.load_state_dict(load_file(Path(resume) / "model.safetensors"), strict=False)
        trainer.state = TrainerState.load_from_json(str(Path(resume) / "trainer_state.json"))
        log.info("%s holds the last step: training was complete", resume)
    else:
        trainer.train(resume_from_checkpoint=resume)
