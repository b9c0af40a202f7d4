"""Think-token optimisation: train only the ``<think>`` and ``</think>`` vectors on k-shot
reasoning traces, every other parameter bit-identical.

How only two rows train: every parameter is frozen except the input embedding matrix, and a
gradient hook on it zeroes every row of its gradient but the two think rows.  Plain Adam
(``weight_decay=0``) then leaves all other rows exactly as they were: their gradient is zero,
so Adam's moments and its update are zero too.  AdamW would not do: its decoupled weight decay
shrinks every row, gradient or not.  After training the stage checks that every other
parameter is bit-identical and records the largest absolute change of each (all 0.0).

Tied embeddings (Qwen3-4B, the tiny models): the embedding matrix is also the output
projection (one tensor), so the two rows train in both roles at once: as input vectors (what
the model reads after a tag) and as output vectors (the logits of emitting a tag, which enter
every position's softmax).  Untied models get the same treatment explicitly: the two rows of
the output projection train too, with the same mask, so the stage means the same thing
whichever way a checkpoint stores its vectors.  ``metrics.json`` names the tensors trained.

Measured on the held-out traces, before and after (cross-entropy in nats per token):

- ``overall``: every token of every trace;
- ``think_tags``: the tokens that are ``<think>`` or ``</think>`` (predicting a tag: the
  output-vector role);
- ``after_think_tags``: the token right after a tag (predicting what follows: the
  input-vector role).

A tokenizer without the tags (SmolLM2, the real-model tier; Qwen3 has them) gets them added
as non-special tokens, the embedding matrix grown to hold them (never shrunk: a padded
vocabulary has spare rows) and their new rows set to the exact mean of the existing token
rows.  Every pre-existing row then stays bit-identical to the loaded model's (checked and
recorded too), and the held-out "before" measurement is of the model with those mean rows.

Training and measurement run in float32; the two trained rows are rounded to the checkpoint's
own dtype (e.g. bfloat16) before the "after" measurement, so it measures the saved model, and
the model is saved in that dtype (every other parameter round-trips exactly).

Memory at paper scale (Qwen3-4B, 8 traces x 1024 tokens, backpropagation through 36 layers to
the input embeddings: ~100 GB of activations in float32) comes down with three settings, each
leaving the optimiser step the same: ``gradient_checkpointing`` (each decoder layer's forward
recomputed in the backward pass; only the layers run in training mode, their submodules stay
in eval mode, so no dropout), the job's ``precision: bf16`` (the training forward's matrix products
in bfloat16; the weights, the two trained rows, their gradients and Adam's moments stay
float32, recorded in ``metrics.json``'s ``precision``) and ``micro_batch_size`` (a step's
``batch_size`` traces in forward/backward passes of at most this many, their gradients summed:
each pass's loss is its summed token cross-entropy over the step's token count, so the step
optimises the same mean as one pass).  The held-out measurement runs in float32 without
autocast, ``micro_batch_size`` traces per pass.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import torch

from stylemerge.core.checkpoints import STATE, fingerprint, prepare_checkpoints, training_settings
from stylemerge.core.files import atomic_path, write_json
from stylemerge.core.job import JobSettings, set_seed
from stylemerge.core.progress import Progress
from stylemerge.core.tracking import tracked
from stylemerge.data.tokenizer import THINK_TOKENS
from stylemerge.models.reference import ModelError, ModelReference
from stylemerge.think.state import (
    Loop,
    Setup,
    Traces,
    check_unchanged,
    dtype_name,
    precision_record,
    stage_metrics,
)

log = logging.getLogger(__name__)


@contextlib.contextmanager
def checkpointed(model, enabled: bool) -> Iterator[None]:
    """Inside: gradient checkpointing of every decoder layer (transformers checkpoints a layer
    only while it is in training mode, so the layers alone are switched to it: their attention
    and MLP submodules stay in eval mode, without dropout).  Nothing when not ``enabled``."""
    if not enabled:
        yield
        return
    from transformers.modeling_layers import GradientCheckpointingLayer

    # non-reentrant: the inputs of the frozen layers need not require gradients
    model.activation_checkpointing_enable({"use_reentrant": False})
    layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
    if not layers:
        raise ModelError(
            f"{type(model).__name__}: no decoder layer supports gradient checkpointing"
        )
    for layer in layers:
        layer.training = True
    try:
        yield
    finally:
        for layer in layers:
            layer.training = False
        model.activation_checkpointing_disable()


def think_token_ids(tokenizer, ref: str | Path) -> list[int]:
    """The ids of ``<think>`` and ``</think>``; an error naming ``ref`` unless each is one
    token, alone and inside text."""
    ids = []
    for token in THINK_TOKENS:
        alone = tokenizer(token, add_special_tokens=False)["input_ids"]
        in_text = tokenizer(f"x {token} y", add_special_tokens=False)["input_ids"]
        if len(alone) != 1 or alone[0] not in in_text:
            raise ModelError(
                f"{ref}: its tokenizer encodes {token!r} as {len(alone)} tokens {alone} "
                f"(in text: {in_text}); think-token optimisation needs <think> and </think> as "
                "single tokens, and adding them to this tokenizer did not make them so"
            )
        ids.append(alone[0])
    return ids


def embedding_params(model) -> dict[str, torch.nn.Parameter]:
    """Name -> parameter of the input and output embeddings (one entry when tied)."""
    embed, output = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    return {name: p for name, p in model.named_parameters() if p is embed or p is output}


def ensure_think_tokens(tokenizer, model, ref: str | Path) -> tuple[list[int], bool]:
    """The ids of ``<think>`` and ``</think>``, and whether they were added here.

    A tag that is not one token is added as a non-special token (as in Qwen3: decoding with
    ``skip_special_tokens=True`` keeps it), the embeddings grow to ``len(tokenizer)`` rows
    unless they already have more, and each new id's row (input and, if untied, output) is
    set to the mean of the rows of the tokens the tokenizer had."""
    from transformers import AddedToken

    missing = [
        t for t in THINK_TOKENS if len(tokenizer(t, add_special_tokens=False)["input_ids"]) != 1
    ]
    vocab = len(tokenizer)
    if missing:
        # normalized=False: matched in the raw text, as stylemerge.data.tokenizer adds them
        tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in missing])
    # a tag already in the vocabulary keeps its id and its row: only new ids are initialised
    # (None: not added, think_token_ids below says so)
    new = [i for i in tokenizer.convert_tokens_to_ids(missing) if i is not None and i >= vocab]
    if new:
        rows = model.get_input_embeddings().weight.shape[0]
        # mean_resizing=False: transformers' mean resizing samples the new rows from a normal
        # around the mean (random); they are set to the mean itself below.  max: never drop
        # the spare rows of a padded vocabulary.
        model.resize_token_embeddings(max(rows, len(tokenizer)), mean_resizing=False)
        with torch.no_grad():
            for weight in embedding_params(model).values():
                weight[new] = weight[:vocab].double().mean(dim=0).to(weight.dtype)
        log.info(
            "%s: added %s as non-special tokens %s; %d -> %d embedding rows, new rows set to "
            "the mean of the %d existing token rows", ref, missing, new, rows,
            model.get_input_embeddings().weight.shape[0], min(vocab, rows),
        )  # fmt: skip
    return think_token_ids(tokenizer, ref), bool(new)


def encode(tokenizer, texts: Sequence[str], max_length: int) -> tuple[list[list[int]], int]:
    """Token ids of each text, cut to ``max_length``; also how many were cut."""
    rows = tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]
    truncated = sum(len(row) > max_length for row in rows)
    return [row[:max_length] for row in rows], truncated


def collate(rows: Sequence[Sequence[int]], pad_id: int, device: str):
    """Right-padded ids and attention mask."""
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids.to(device), mask.to(device)


@torch.no_grad()
def heldout_ce(model, rows, think_ids, pad_id: int, batch_size: int, device: str) -> dict:
    """Mean cross-entropy per token: overall, at the tags, and right after them; and per
    held-out trace (``per_document``: its summed nats and its tokens, overall), for intervals
    over traces."""
    think = torch.tensor(think_ids, device=device)
    sums = dict.fromkeys(("overall", "think_tags", "after_think_tags"), 0.0)
    counts = dict.fromkeys(sums, 0)
    per_document: dict[str, list] = {"nats": [], "tokens": []}
    for start in range(0, len(rows), batch_size):
        ids, mask = collate(rows[start : start + batch_size], pad_id, device)
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        labels, inputs, valid = ids[:, 1:], ids[:, :-1], mask[:, 1:].bool()
        ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, reduction="none")
        for key, where in (
            ("overall", valid),
            ("think_tags", valid & torch.isin(labels, think)),
            ("after_think_tags", valid & torch.isin(inputs, think)),
        ):
            sums[key] += ce[where].double().sum().item()
            counts[key] += int(where.sum())
        per_document["nats"] += torch.where(valid, ce.double(), 0.0).sum(dim=1).tolist()
        per_document["tokens"] += valid.sum(dim=1).tolist()
    result = {key: sums[key] / counts[key] if counts[key] else None for key in sums}
    bad = {k: v for k, v in result.items() if v is not None and not math.isfinite(v)}
    if bad:
        raise FloatingPointError(f"held-out cross-entropy is not finite: {bad}")
    return {**result, "tokens": counts, "per_document": per_document}


def save_rows_checkpoint(directory: Path, step: int, trained, optimizer, ids, loop: dict):
    """A think-stage checkpoint after ``step``: the trained rows and their Adam moments (all
    other rows of both are fixed: the rows are all there is to restore), and the loop's state
    (data order and its generator), trainer_state.json last; the previous one removed."""
    from safetensors.torch import save_file

    path = directory / f"checkpoint-{step}"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    tensors, adam_steps = {}, {}
    for name, param in trained.items():
        state = optimizer.state[param]
        tensors[f"{name}/rows"] = param.detach()[ids].cpu().contiguous()
        for moment in ("exp_avg", "exp_avg_sq"):
            tensors[f"{name}/{moment}"] = state[moment][ids].cpu().contiguous()
        adam_steps[name] = float(state["step"])
    save_file(tensors, path / "rows.safetensors")
    write_json(
        path / STATE,
        {"global_step": step, "adam_steps": adam_steps, **loop},
    )
    for old in directory.glob("checkpoint-*"):
        if old != path:
            shutil.rmtree(old, ignore_errors=True)


def restore_rows_checkpoint(path: Path, trained, optimizer, ids) -> dict:
    """Put a :func:`save_rows_checkpoint` back: the rows, Adam's state, and the loop's
    state (returned)."""
    from safetensors.torch import load_file

    tensors, state = load_file(path / "rows.safetensors"), json.loads((path / STATE).read_text())
    with torch.no_grad():
        for name, param in trained.items():
            param[ids] = tensors[f"{name}/rows"].to(param.device, param.dtype)
            moments = {}
            for moment in ("exp_avg", "exp_avg_sq"):
                full = torch.zeros_like(param)
                full[ids] = tensors[f"{name}/{moment}"].to(param.device, param.dtype)
                moments[moment] = full
            step = torch.tensor(state["adam_steps"][name], dtype=torch.float32)
            optimizer.state[param] = {"step": step, **moments}
    return state


@tracked(history=True)  # its own loop: no Trainer logs its steps
def optimize_think_tokens(
    job: JobSettings,
    model_ref: ModelReference | str | Path,
    traces: Mapping,
    out_dir: str | Path,
    settings: Mapping,
    checkpoint_dir: str | Path | None = None,
) -> dict:
    """Train the think-token rows of ``model_ref`` on ``traces["train"]``; save the model
    (safetensors), its tokenizer and ``metrics.json`` to ``out_dir``.

    ``traces``: ``train`` and ``heldout`` texts and ``info`` on where they came from (recorded
    in the metrics), as :func:`stylemerge.data.arithmetic.build_traces` returns them.
    ``settings``: ``steps``, ``learning_rate``, ``batch_size``, ``max_length``,
    ``save_steps``.  ``checkpoint_dir``: the rows, Adam's state and the data order saved every
    ``save_steps`` steps; a job run again after a kill resumes from the last one and ends
    with the same rows as an uninterrupted run (removed once the model is saved)."""
    train_texts, heldout_texts = traces["train"], traces["heldout"]
    if not train_texts or not heldout_texts:
        raise ValueError(
            f"think-token optimisation needs train and held-out traces, got "
            f"{len(train_texts)} and {len(heldout_texts)}"
        )
    job = job.apply()
    device = job.device
    model_ref = ModelReference.of(model_ref)
    setup = _prepare(job, model_ref, settings["learning_rate"], device)
    data = _encode_traces(setup, traces, settings)
    amp = job.autocast()  # the training passes only: the held-out CE is float32 either way
    ce_before = heldout_ce(setup.model, data.heldout, setup.ids, setup.pad_id, data.micro, device)
    log.info("held-out CE before: %s", {k: v for k, v in ce_before.items() if k != "per_document"})

    # A small explicit loop instead of transformers' Trainer: only two rows train, through a
    # gradient mask and plain Adam, and the loop says exactly that.
    loop = _start_loop(job, model_ref, setup, traces, settings, checkpoint_dir)
    _train(setup, data, loop, settings, amp, Path(out_dir).name)

    precision = precision_record(setup, job, settings, data.micro)
    with torch.no_grad():  # the saved values: the two rows rounded to the checkpoint's dtype
        for param in setup.trained.values():
            param[setup.ids] = param[setup.ids].to(setup.save_dtype).to(param.dtype)
            param.requires_grad_(False)
    ce_after = heldout_ce(setup.model, data.heldout, setup.ids, setup.pad_id, data.micro, device)
    log.info("held-out CE after: %s", {k: v for k, v in ce_after.items() if k != "per_document"})

    changes = check_unchanged(setup)
    metrics = stage_metrics(
        job, settings, traces, setup, data, loop, changes, precision, ce_before, ce_after
    )
    log.info(
        "held-out CE %.4f -> %.4f; at think tags %s -> %s",
        ce_before["overall"],
        ce_after["overall"],
        ce_before["think_tags"],
        ce_after["think_tags"],
    )
    setup.model.to("cpu", dtype=setup.save_dtype)
    with atomic_path(out_dir) as tmp:
        setup.model.save_pretrained(tmp)
        setup.tokenizer.save_pretrained(tmp)
        write_json(tmp / "metrics.json", metrics)
    if loop.checkpoint_dir is not None:  # done: a later rerun starts afresh
        shutil.rmtree(loop.checkpoint_dir, ignore_errors=True)
    return metrics


def _prepare(
    job: JobSettings, model_ref: ModelReference, learning_rate: float, device: str
) -> Setup:
    """Load the model and tokenizer, put the tags in the vocabulary, copy the parameters for
    the checks, move the model to ``device`` in float32 and freeze all of it but the think
    rows (a gradient mask on the embeddings, plain Adam); seeds the global RNG."""
    tokenizer = model_ref.tokenizer(job)
    pad_id = (
        tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    )
    model = model_ref.model(job)
    save_dtype = model.get_input_embeddings().weight.dtype
    vocab_before, rows_before = len(tokenizer), model.get_input_embeddings().weight.shape[0]
    # the loaded embeddings, to check at the end that no pre-existing row but a tag's changed
    loaded = {name: p.detach().to("cpu", copy=True) for name, p in embedding_params(model).items()}
    ids, added = ensure_think_tokens(tokenizer, model, model_ref)
    set_seed(job.seed)  # after resizing, which draws (discarded) random rows from the global RNG
    model.float().eval()  # no dropout: the rest of the network is fixed

    embed = model.get_input_embeddings().weight
    if max(ids) >= embed.shape[0]:
        raise ModelError(f"{model_ref}: think token ids {ids} beyond {embed.shape[0]} embeddings")
    # what must not change: a CPU copy of every parameter (a tied weight appears once), taken
    # after any added rows were initialised
    before = {name: p.detach().to("cpu", copy=True) for name, p in model.named_parameters()}
    model.to(device)  # moves the data of the same Parameter objects: tying survives
    embed = model.get_input_embeddings().weight
    tied = model.get_output_embeddings().weight is embed
    trained = embedding_params(model)

    row_mask = torch.zeros(embed.shape[0], 1, device=device, dtype=embed.dtype)
    row_mask[ids] = 1.0
    for param in model.parameters():
        param.requires_grad_(False)
    grad_dtypes: set[str] = set()

    def mask_rows(grad):
        grad_dtypes.add(dtype_name(grad.dtype))
        return grad * row_mask

    for param in trained.values():
        param.requires_grad_(True)
        param.register_hook(mask_rows)
    optimizer = torch.optim.Adam(list(trained.values()), lr=learning_rate, weight_decay=0.0)
    return Setup(
        model=model, tokenizer=tokenizer, device=device, pad_id=pad_id, ids=ids, added=added,
        save_dtype=save_dtype, vocab_before=vocab_before, rows_before=rows_before,
        loaded=loaded, before=before, tied=tied, trained=trained, optimizer=optimizer,
        grad_dtypes=grad_dtypes,
    )  # fmt: skip


def _encode_traces(setup: Setup, traces: Mapping, settings: Mapping) -> Traces:
    """The train and held-out traces as token ids, each cut to ``max_length`` (warned)."""
    max_length = settings["max_length"]
    positions = getattr(setup.model.config, "max_position_embeddings", None)
    if positions is not None and max_length > positions:
        log.warning("max_length %d exceeds the model's max_position_embeddings %d",
                    max_length, positions)  # fmt: skip
    train_rows, train_cut = encode(setup.tokenizer, traces["train"], max_length)
    heldout_rows, heldout_cut = encode(setup.tokenizer, traces["heldout"], max_length)
    if train_cut or heldout_cut:
        log.warning("cut to max_length %d: %d train, %d held-out traces", max_length, train_cut,
                    heldout_cut)  # fmt: skip
    batch_size = settings["batch_size"]
    micro = min(settings.get("micro_batch_size") or batch_size, batch_size)
    truncated = {"train": train_cut, "heldout": heldout_cut}
    return Traces(train_rows, heldout_rows, truncated, batch_size, micro)


def _start_loop(
    job: JobSettings,
    model_ref: ModelReference,
    setup: Setup,
    traces: Mapping,
    settings: Mapping,
    checkpoint_dir: str | Path | None,
) -> Loop:
    """The loop's state: fresh (the data order drawn from the job's seed), or, with a row
    checkpoint of the same settings and inputs in ``checkpoint_dir``, restored from it
    (the rows and Adam's state too)."""
    loop = Loop(settings["steps"], torch.Generator().manual_seed(job.seed), time.monotonic())
    if checkpoint_dir is None:
        return loop
    loop.checkpoint_dir = Path(checkpoint_dir)
    key = fingerprint(
        settings=training_settings(settings),
        seed=job.seed,
        precision=job.precision,
        model=model_ref.as_dict(),
        ids=list(setup.ids),
        traces=[traces["train"], traces["heldout"]],
    )
    loop.resume = prepare_checkpoints(loop.checkpoint_dir, key)
    if loop.resume:
        state = restore_rows_checkpoint(
            Path(loop.resume), setup.trained, setup.optimizer, setup.ids
        )
        loop.first, loop.order = state["global_step"] + 1, state["order"]
        loop.history = state["history"]
        loop.generator.set_state(torch.tensor(state["generator"], dtype=torch.uint8))
    return loop


def _train(setup: Setup, data: Traces, loop: Loop, settings: Mapping, amp, name: str) -> None:
    """Run the loop's remaining steps, each on the next ``batch_size`` traces of the data
    order (a fresh permutation appended whenever it runs short); the loss logged every
    ``steps // 20`` steps, a row checkpoint every ``save_steps`` (not after the last)."""
    steps, log_every = loop.steps, max(1, loop.steps // 20)
    save_steps = settings.get("save_steps") or steps
    progress = Progress(f"think {name}", steps, start=loop.first - 1)
    with checkpointed(setup.model, bool(settings.get("gradient_checkpointing"))):
        for step in range(loop.first, steps + 1):
            while len(loop.order) < data.batch_size:
                loop.order += torch.randperm(len(data.train), generator=loop.generator).tolist()
            batch = [data.train[i] for i in loop.order[: data.batch_size]]
            loop.order = loop.order[data.batch_size :]
            loss_sum = _step(setup, data, batch, amp, step)
            if step % log_every == 0 or step == steps:
                loop.history.append({"step": step, "loss": loss_sum})
                log.info("step %d/%d loss %.4f", step, steps, loss_sum)
            if loop.checkpoint_dir is not None and step % save_steps == 0 and step < steps:
                state = {
                    "order": loop.order,
                    "history": loop.history,
                    "generator": loop.generator.get_state().tolist(),
                }
                save_rows_checkpoint(
                    loop.checkpoint_dir, step, setup.trained, setup.optimizer, setup.ids, state
                )
            progress.update(step)
    loop.seconds = time.monotonic() - loop.started


def _step(setup: Setup, data: Traces, batch, amp, step: int) -> float:
    """One optimiser step on ``batch``, in forward/backward passes of ``micro`` traces whose
    gradients add up; the passes' summed loss (an error if one is not finite)."""
    # every pass's summed cross-entropy over the step's predicted tokens: the summed
    # gradients are those of the step's mean, however the traces are split
    targets = sum(len(row) - 1 for row in batch)
    setup.optimizer.zero_grad(set_to_none=True)
    loss_sum = 0.0
    for start in range(0, data.batch_size, data.micro):
        input_ids, mask = collate(batch[start : start + data.micro], setup.pad_id, setup.device)
        labels = input_ids.masked_fill(mask == 0, -100)
        with amp():
            loss = setup.model(
                input_ids=input_ids,
                attention_mask=mask,
                labels=labels,
                use_cache=False,
                num_items_in_batch=targets,
            ).loss
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training loss is {loss.item()} at step {step}: diverged")
        loss.backward()
        loss_sum += loss.item()
    setup.optimizer.step()
    return loss_sum
