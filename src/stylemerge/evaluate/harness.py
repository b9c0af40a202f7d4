"""The lm-evaluation-harness part of the evaluation stage (``evaluate_lm``).

Models are scored through the harness's Python API: :func:`evaluate_lm` wraps a model loaded
with :func:`stylemerge.models.reference.load_model` (safetensors only) in ``HFLM`` and calls
``simple_evaluate``; the compact result (:mod:`stylemerge.evaluate.lm_result`) is written to
one fixed path, whatever file names lm-eval would pick.  With ``backend: vllm`` the harness's
own vLLM model runs instead, under the same guarantees (:mod:`stylemerge.generation.vllm`).

Tasks are harness task names (paper scale: ``lambada_openai``, ``gsm8k``,
``uncheatable_eval_<domain>``) or the tasks packaged here (``stylemerge_*``; the embedded
default, no network), whose data and YAMLs :func:`stylemerge.evaluate.task_data.prepare_task_data`
writes to a per-run directory first (:func:`run_lm_eval`).

Think tags survive generation: lm-eval decodes generations with ``skip_special_tokens=True``;
``<think>``/``</think>`` are not special tokens in Qwen3 or the tiny models, and
:func:`hflm_class` (an HFLM subclass) keeps them even for a tokenizer that marks them special.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from importlib import metadata
from pathlib import Path

from stylemerge.core.files import write_json
from stylemerge.core.job import JobSettings, resolve_device
from stylemerge.core.tracking import tracked
from stylemerge.data.tokenizer import THINK_TOKENS
from stylemerge.evaluate.lm_result import group_results, jsonable, task_results
from stylemerge.evaluate.task_data import BPB, GSM8K, LAMBADA, PREFIX, prepare_task_data
from stylemerge.generation.vllm import make_vllm_lm, require_vllm
from stylemerge.models.reference import ModelReference

log = logging.getLogger(__name__)


# --- the harness's per-run overheads ----------------------------------------------------------


@contextlib.contextmanager
def lean_harness() -> Iterator[None]:
    """Inside: lm-eval without three overheads that change no value this module keeps
    (measured, 2-core machine: about 3 s of a 12 s job on the tiny models).

    - ``add_env_info`` runs ``pip list`` and other subprocesses (torch's ``collect_env``,
      1.2 s) for the ``pretty_env_info`` of the full results, which the compact result
      here does not keep (its ``provenance`` records the packages);
    - ``apply_template`` compiles the same Jinja template again for every document (1.3 s
      for ~1200 calls); the compiled templates are cached here, the rendering is the same;
    - the bootstrap of a stderr starts a pool of ``cpu_count()`` processes, whatever the
      job's ``threads`` (``DISABLE_MULTIPROC``: the same draws, ``random.Random(i)`` per
      chunk, in this process).
    Everything is restored on exit."""
    import lm_eval.evaluator
    import lm_eval.utils

    @functools.cache
    def compiled(template: str):
        return lm_eval.utils.env.from_string(template)

    def apply_template(template: str, doc: dict) -> str:
        return compiled(template).render(**doc)

    saved = (lm_eval.evaluator.add_env_info, lm_eval.utils.apply_template)
    saved_env = os.environ.get("DISABLE_MULTIPROC")
    lm_eval.evaluator.add_env_info = lambda storage: None
    lm_eval.utils.apply_template = apply_template
    os.environ["DISABLE_MULTIPROC"] = "1"
    try:
        yield
    finally:
        lm_eval.evaluator.add_env_info, lm_eval.utils.apply_template = saved
        if saved_env is None:
            os.environ.pop("DISABLE_MULTIPROC", None)
        else:
            os.environ["DISABLE_MULTIPROC"] = saved_env


# lm-eval's modules that report through tqdm (vllm_causallms once imported) -> what their
# bars without a description count: a task's documents as it builds their contexts, else
# the model's requests
TQDM_MODULES = {
    "lm_eval.api.model": ("requests", "request"),
    "lm_eval.api.task": ("building contexts", "document"),
    "lm_eval.models.huggingface": ("requests", "request"),
    "lm_eval.models.vllm_causallms": ("requests", "request"),
}


@contextlib.contextmanager
def logged_progress() -> Iterator[None]:
    """Inside: lm-eval's progress bars (building contexts, running requests) log progress
    lines (stylemerge.core.progress) instead of tqdm's carriage-return redraws in the job's log.
    Restored on exit."""
    from stylemerge.core.progress import tqdm_class

    swapped = {
        module: sys.modules[module].tqdm
        for module in TQDM_MODULES
        if module in sys.modules and hasattr(sys.modules[module], "tqdm")
    }
    for module in swapped:
        sys.modules[module].tqdm = tqdm_class(*TQDM_MODULES[module])
    try:
        yield
    finally:
        for module, original in swapped.items():
            sys.modules[module].tqdm = original


# --- the harness model --------------------------------------------------------------------------


@functools.cache
def hflm_class():
    """:class:`ThinkKeepingHFLM`, built on first use (importing lm-eval costs seconds)."""
    from lm_eval.models.huggingface import HFLM

    class ThinkKeepingHFLM(HFLM):
        """HFLM whose decoding keeps ``<think>``/``</think>`` when special tokens are skipped
        (lm-eval decodes every generation with ``skip_special_tokens=True``)."""

        def tok_decode(self, tokens, skip_special_tokens: bool = True):
            if not skip_special_tokens or isinstance(tokens, int):
                return super().tok_decode(tokens, skip_special_tokens=skip_special_tokens)
            if hasattr(tokens, "tolist"):  # a tensor
                tokens = tokens.tolist()
            return self.tokenizer.decode(
                [t for t in tokens if t not in self._skipped_ids], skip_special_tokens=False
            )

        @property
        def _skipped_ids(self) -> frozenset[int]:
            if getattr(self, "_skipped_cache", None) is None:
                tok = self.tokenizer
                special = set(tok.all_special_ids) | {
                    i for i, added in tok.added_tokens_decoder.items() if added.special
                }
                vocab = tok.get_vocab()
                keep = {vocab[t] for t in THINK_TOKENS if t in vocab}
                self._skipped_cache = frozenset(special - keep)
            return self._skipped_cache

    return ThinkKeepingHFLM


def make_hflm(
    job: JobSettings,
    model_ref: ModelReference | str | Path,
    batch_size: int | str = 1,
    max_length: int | None = None,
):
    """The harness's HF model around a model loaded from safetensors, on the job's device
    (HFLM takes a loaded model's own device; its default would be cuda)."""
    model_ref = ModelReference.of(model_ref)
    model = model_ref.model(job).to(resolve_device(job.device))
    return hflm_class()(
        pretrained=model,
        tokenizer=model_ref.tokenizer(job),
        batch_size=batch_size,
        max_length=max_length,
        trust_remote_code=job.trust_remote_code,
    )


def make_lm(job: JobSettings, model_ref: ModelReference, settings: Mapping):
    """The harness model of ``settings["backend"]``: ``hf`` (:func:`make_hflm`, the default)
    or ``vllm`` (:func:`stylemerge.generation.vllm.make_vllm_lm`)."""
    if backend(settings) == "vllm":
        return make_vllm_lm(job, model_ref, settings)
    return make_hflm(job, model_ref, settings["batch_size"], settings["max_length"])


def backend(settings: Mapping) -> str:
    return settings.get("backend") or "hf"


# --- evaluation ---------------------------------------------------------------------------------


def _pinned(task_manager, name: str, revision: str) -> dict:
    """Harness task ``name`` built with its hub data set at ``revision`` (the run's lock): the
    task's own YAML with ``dataset_kwargs.revision`` added, through lm-eval's group syntax (a
    member ``{"task": name, ...}`` of a group is the registered task with those overrides);
    its data set is downloaded when the task is built, so the revision must be there first."""
    from lm_eval.tasks._yaml_loader import load_yaml

    from stylemerge.evaluate.task_data import harness_data_set

    entry = task_manager.task_index.get(name)
    own = load_yaml(entry.yaml_path, resolve_func=True) if entry and entry.yaml_path else {}
    kwargs = {**(own.get("dataset_kwargs") or {}), "revision": revision}
    loaded = task_manager.load(
        [{"group": f"{PREFIX}_pinned_{name}", "task": [{"task": name, "dataset_kwargs": kwargs}]}]
    )
    task = loaded["tasks"][name]
    expected = harness_data_set(name)
    if expected and task.DATASET_PATH != expected:
        raise ValueError(
            f"lm-eval task {name!r} loads {task.DATASET_PATH!r}, not {expected!r} as "
            "stylemerge.evaluate.task_data.HARNESS_DATA_SETS says: the lock pinned another "
            "repository's commit; correct the table for this lm-eval version"
        )
    return {"tasks": {name: task}, "groups": {}}


def _load_tasks(task_manager, tasks: Sequence[Mapping]) -> list:
    """Task and Group objects for ``tasks`` (``{"name", "num_fewshot"?, "revision"?}``),
    with a task's ``num_fewshot`` set on every task it names (a group's or tag's tasks too)
    and a harness task's data set at its ``revision`` (the run's lock) where it has one."""
    objects = []
    for spec in tasks:
        name = spec["name"]
        try:
            if spec.get("revision") and not name.startswith(PREFIX):
                loaded = _pinned(task_manager, name, spec["revision"])
            else:
                loaded = task_manager.load([name])
        except KeyError:
            known = sorted(t for t in task_manager.all_tasks if t.startswith(PREFIX))
            raise ValueError(
                f"lm-eval task {name!r} not found (packaged tasks here: {', '.join(known)}; "
                "a harness task needs include_defaults)"
            ) from None
        if spec.get("num_fewshot") is not None:
            for task in loaded["tasks"].values():
                task.set_config(key="num_fewshot", value=spec["num_fewshot"])
        if name in loaded["groups"]:
            objects.append(loaded["groups"][name])
        else:
            objects.extend(loaded["tasks"].values())
    return objects


def evaluate_lm(
    job: JobSettings,
    model_ref: ModelReference | str | Path,
    out_json: str | Path,
    settings: Mapping,
    include_path: str | Path | None = None,
    task_data: Mapping | None = None,
) -> dict:
    """Run lm-eval's ``simple_evaluate`` on ``model_ref`` and write the compact result to
    ``out_json``; return it.

    ``settings`` (the config's ``evaluate.lm_eval``): ``tasks``, ``[{"name": task, group or
    tag, "num_fewshot": n or None (the task's own)}]``; ``limit``, documents per task (a
    fraction below 1), None for all; ``samples``, documents per generation task whose
    generations are kept in the result (every task's per-document metric values are kept,
    under ``per_document``); ``batch_size``, ``max_length``, ``bootstrap_iters``; ``backend``,
    ``hf`` (the default) or ``vllm``.
    ``include_path``: the directory of :func:`prepare_task_data` (needed for ``stylemerge_*``
    tasks); the harness's own tasks are indexed only when a task is not packaged here.
    ``task_data``: what :func:`prepare_task_data` returned (each data file's sha256 goes into
    the result).  The job's seed seeds python, numpy, torch and the few-shot sampler."""
    # lm-eval imported first (it sets environment variables), before the checks and seeding
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    tasks = settings["tasks"]
    arguments = _evaluate_arguments(settings, job.seed)
    include_defaults = _include_defaults(settings, include_path)
    job, model_ref = job.apply(), ModelReference.of(model_ref)
    started = time.monotonic()
    task_manager = TaskManager(include_path=include_path, include_defaults=include_defaults)
    objects = _load_tasks(task_manager, tasks)  # before the model: a bad name fails fast
    lm = make_lm(job, model_ref, settings)
    device = job.device if backend(settings) == "vllm" else str(lm.device)  # vLLM's is None
    log.info("lm-eval on %s: %s", model_ref, ", ".join(spec["name"] for spec in tasks))
    # the hf model's passes under the job's precision (vLLM's: its dtype, vllm_model_args)
    with lean_harness(), logged_progress(), job.autocast()():
        results = simple_evaluate(
            model=lm, tasks=objects, task_manager=task_manager, device=device, **arguments
        )
    seconds = time.monotonic() - started
    result = {
        "model": model_ref.ref,
        "revision": model_ref.revision,
        "tasks": task_results(results, settings, include_path),
        "groups": group_results(results),
        "lm_eval": _run_record(
            job, settings, results, lm, device, include_path, include_defaults, seconds
        ),
        # the packaged tasks' data files (paths relative to the temporary task directory)
        "task_data": jsonable(task_data["tasks"], include_path) if task_data else None,
        "provenance": dict(job.provenance),
    }
    write_json(out_json, result)
    return result


def _evaluate_arguments(settings: Mapping, seed: int) -> dict:
    """``simple_evaluate``'s arguments from ``settings`` (read before anything loads, so that a
    missing one fails fast); ``seed`` seeds python, numpy, torch and the few-shot sampler."""
    batch_size, limit = settings["batch_size"], settings["limit"]
    return {
        "limit": limit,
        "bootstrap_iters": settings["bootstrap_iters"],
        "log_samples": True,  # per-document values, for intervals over documents
        "random_seed": seed,
        "numpy_random_seed": seed,
        "torch_random_seed": seed,
        "fewshot_random_seed": seed,
        "batch_size": batch_size,
    }


def _include_defaults(settings: Mapping, include_path: str | Path | None) -> bool:
    """Check the tasks before minutes of loading (some named, vLLM installed where it is the
    backend, a task directory for packaged tasks); return whether lm-eval must index its own
    tasks (some task is not packaged here)."""
    tasks = settings["tasks"]
    if not tasks:
        raise ValueError("evaluate_lm: no tasks")
    if backend(settings) == "vllm":  # before minutes of task loading
        require_vllm("evaluate.lm_eval.backend: vllm")
    names = [spec["name"] for spec in tasks]
    local = [n for n in names if n.startswith(PREFIX)]
    if local and include_path is None:
        raise ValueError(f"tasks {local} are packaged tasks: prepare_task_data first")
    return len(local) < len(names)


def _run_record(
    job: JobSettings,
    settings: Mapping,
    results: Mapping,
    lm,
    device: str,
    include_path: str | Path | None,
    include_defaults: bool,
    seconds: float,
) -> dict:
    """The result's ``lm_eval`` section: how the harness ran (version, tasks requested,
    backend, device, sizes, seeds as lm-eval applied them, the model's parameters and dtype,
    the job's threads and precision, seconds taken)."""
    model_info = results.get("config", {})
    return {
        "version": metadata.version("lm_eval"),
        "requested": [dict(spec) for spec in settings["tasks"]],
        "include_path": str(include_path) if include_path is not None else None,
        "include_defaults": include_defaults,
        "backend": backend(settings),
        "device": device,
        "batch_size": settings["batch_size"],
        "max_length": lm.max_length,
        "limit": settings["limit"],
        "bootstrap_iters": settings["bootstrap_iters"],
        "seeds": {
            key: model_info.get(key)
            for key in ("random_seed", "numpy_seed", "torch_seed", "fewshot_seed")
        },
        "model_num_parameters": model_info.get("model_num_parameters"),
        "model_dtype": jsonable(model_info.get("model_dtype")),
        "threads": job.threads,
        "precision": job.precision,
        "seconds": round(seconds, 2),
    }


@tracked()  # the job's run in report_to's trackers, its result logged
def run_lm_eval(
    job: JobSettings,
    model_ref: ModelReference | str | Path,
    heldout_shards: Mapping[str, str | Path],
    out_json: str | Path,
    settings: Mapping,
    heldout_fraction: float,
    scratch_dir: str | Path | None = None,
    ood_shards: Mapping[str, str | Path] | None = None,
) -> dict:
    """The ``evaluate_lm`` step: write the packaged tasks' data when ``settings["tasks"]``
    names any (in a temporary directory under ``scratch_dir``, removed afterwards; the result
    records every data file's sha256), then :func:`evaluate_lm`.

    ``settings``: the config's ``evaluate.lm_eval`` section.  ``heldout_fraction``: the think
    stage's (``think.data.heldout_fraction``), so the arithmetic test problems are held out of
    its training traces.  ``ood_shards``: the out-of-domain sources' shards (the
    ``stylemerge_lambada_ood`` task's text)."""
    tasks = settings["tasks"]
    if backend(settings) == "vllm":  # before the task data are written
        require_vllm("evaluate.lm_eval.backend: vllm")
    local = [spec["name"] for spec in tasks if spec["name"].startswith(PREFIX)]
    if scratch_dir is not None:
        Path(scratch_dir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="lm_eval_tasks.", dir=scratch_dir) as tmp:
        task_data, include_path = None, None
        if local:
            # the tag stylemerge: every packaged task but those named beside it
            wanted = tuple(local) if PREFIX not in local else (LAMBADA, GSM8K, BPB, *local)
            task_data = prepare_task_data(
                heldout_shards, tmp, settings, job.seed, heldout_fraction, wanted, ood_shards
            )
            include_path = task_data["include_path"]
        return evaluate_lm(job, model_ref, out_json, settings, include_path, task_data)
