"""The lm-evaluation-harness part of the evaluation stage (``evaluate_lm``).

Models are scored through the harness's Python API: :func:`evaluate_lm` wraps a model loaded
with :func:`stylemerge.models.reference.load_model` (safetensors only) in ``HFLM`` and calls
``simple_evaluate``; the compact result is written to one fixed path, whatever file names
lm-eval would pick.  With ``backend: vllm`` the harness's own vLLM model runs instead, under
the same guarantees (:mod:`stylemerge.generation.vllm`).

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
import math
import os
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from stylemerge.core.files import write_json
from stylemerge.core.job import JobSettings, resolve_device
from stylemerge.core.tracking import tracked
from stylemerge.data.tokenizer import THINK_TOKENS
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


def _number(value: Any) -> Any:
    """JSON-safe metric value: floats stay floats, non-finite values and "N/A" become None."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else None
    try:  # numpy scalars
        return _number(value.item())
    except AttributeError:
        return None if value == "N/A" else str(value)


def _metrics(entry: Mapping) -> tuple[dict, dict]:
    """lm-eval's ``{"acc,none": x, "acc_stderr,none": s}`` as ``{metric: {filter: x}}`` and
    ``{metric: {filter: s}}``."""
    values: dict[str, dict] = {}
    stderr: dict[str, dict] = {}
    for key, value in entry.items():
        if "," not in key:
            continue  # alias, sample_len, ...
        metric, filter_name = key.split(",", 1)
        if metric.endswith("_stderr"):
            stderr.setdefault(metric.removesuffix("_stderr"), {})[filter_name] = _number(value)
        else:
            values.setdefault(metric, {})[filter_name] = _number(value)
    return values, stderr


def _jsonable(value: Any, root: str | Path | None = None) -> Any:
    """``value`` as JSON; strings naming a path under ``root`` become relative to it."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v, root) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v, root) for v in value]
    if isinstance(value, str):
        prefix = f"{root}/" if root is not None else None
        return value.removeprefix(prefix) if prefix and value.startswith(prefix) else value
    if isinstance(value, bool | int | float) or value is None:
        return _number(value) if isinstance(value, float) else value
    return str(value)


def _dataset(config: Mapping, include_path: str | Path | None) -> dict:
    """Where a task's documents came from; packaged tasks' data files relative to the task
    directory (a temporary one: ``task_data`` records each file's sha256)."""
    kwargs = {k: v for k, v in (config.get("dataset_kwargs") or {}).items() if k != "cache_dir"}
    return {
        "path": config.get("dataset_path"),
        "name": config.get("dataset_name"),
        "kwargs": _jsonable(kwargs, include_path),
    }


def _generations(samples: Sequence[Mapping], keep: int) -> list[dict]:
    """The first ``keep`` documents' generations: the raw text (think tags included), what
    each filter extracted and the metrics (lm-eval logs one sample per document and filter)."""
    by_doc: dict[int, dict] = {}
    for sample in samples:
        doc_id = sample["doc_id"]
        if doc_id not in by_doc:
            if len(by_doc) >= keep:
                continue
            by_doc[doc_id] = {
                "doc_id": doc_id,
                "doc": _jsonable(sample["doc"]),
                "target": _jsonable(sample["target"]),
                "generation": _jsonable(sample["resps"][0][0]),
                "filtered": {},
                "metrics": {},
            }
        filter_name = sample["filter"]
        by_doc[doc_id]["filtered"][filter_name] = _jsonable(sample["filtered_resps"][0])
        for metric in sample["metrics"]:
            by_doc[doc_id]["metrics"].setdefault(metric, {})[filter_name] = _number(sample[metric])
    return [by_doc[k] for k in sorted(by_doc)]


def _per_document(samples: Sequence[Mapping]) -> dict:
    """Every document's metric values, for intervals over documents (lm-eval logs one sample
    per document and filter): ``{"doc_id": [...], "document": [...], "values": {metric:
    {filter: [one value per document, in doc_id order]}}}``.  ``document`` is the source
    document each was cut from (the ``document`` field of the task's data, where it has one:
    the lambada mirror's passages), else the doc_id itself.  A loglikelihood task's
    ``perplexity`` value is the target's log-likelihood (the task's perplexity is
    ``exp(-mean)`` of them), a rolling task's values are ``[log-likelihood, words or
    bytes]``."""
    ids = sorted({sample["doc_id"] for sample in samples})
    where = {doc_id: i for i, doc_id in enumerate(ids)}
    documents: list = list(ids)
    values: dict[str, dict] = {}
    for sample in samples:
        doc = sample.get("doc")
        if isinstance(doc, Mapping) and doc.get("document") is not None:
            documents[where[sample["doc_id"]]] = doc["document"]
        for metric in sample["metrics"]:
            column = values.setdefault(metric, {}).setdefault(sample["filter"], [None] * len(ids))
            value = sample[metric]
            column[where[sample["doc_id"]]] = (
                [_number(v) for v in value] if isinstance(value, list | tuple) else _number(value)
            )
    return {"doc_id": ids, "document": documents, "values": values}


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
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    tasks, batch_size, limit = settings["tasks"], settings["batch_size"], settings["limit"]
    bootstrap_iters, seed = settings["bootstrap_iters"], job.seed

    if not tasks:
        raise ValueError("evaluate_lm: no tasks")
    if backend(settings) == "vllm":  # before minutes of task loading
        require_vllm("evaluate.lm_eval.backend: vllm")
    names = [spec["name"] for spec in tasks]
    local = [n for n in names if n.startswith(PREFIX)]
    if local and include_path is None:
        raise ValueError(f"tasks {local} are packaged tasks: prepare_task_data first")
    include_defaults = len(local) < len(names)
    job, model_ref = job.apply(), ModelReference.of(model_ref)
    started = time.monotonic()
    task_manager = TaskManager(include_path=include_path, include_defaults=include_defaults)
    objects = _load_tasks(task_manager, tasks)  # before the model: a bad name fails fast
    lm = make_lm(job, model_ref, settings)
    device = job.device if backend(settings) == "vllm" else str(lm.device)  # vLLM's is None
    log.info("lm-eval on %s: %s", model_ref, ", ".join(names))
    # the hf model's passes under the job's precision (vLLM's: its dtype, vllm_model_args)
    with lean_harness(), logged_progress(), job.autocast()():
        results = simple_evaluate(
            model=lm,
            tasks=objects,
            task_manager=task_manager,
            limit=limit,
            bootstrap_iters=bootstrap_iters,
            log_samples=True,  # per-document values, for intervals over documents
            random_seed=seed,
            numpy_random_seed=seed,
            torch_random_seed=seed,
            fewshot_random_seed=seed,
            batch_size=batch_size,
            device=device,
        )
    seconds = time.monotonic() - started

    configs = results.get("configs", {})
    task_results = {}
    for name in results["results"]:
        if name in results.get("groups", {}):
            continue
        values, stderr = _metrics(results["results"][name])
        config = configs.get(name, {})
        entry = {
            "alias": results["results"][name].get("alias", name),
            "metrics": values,
            "stderr": stderr,
            "higher_is_better": _jsonable(results.get("higher_is_better", {}).get(name, {})),
            "n_shot": results.get("n-shot", {}).get(name),
            "n_samples": _jsonable(results.get("n-samples", {}).get(name)),
            "version": _jsonable(results.get("versions", {}).get(name)),
            "output_type": config.get("output_type"),
            "dataset": _dataset(config, include_path),
        }
        logged = results.get("samples", {}).get(name, [])
        if config.get("output_type") == "generate_until":
            entry["generation_kwargs"] = _jsonable(config.get("generation_kwargs"))
            entry["generations"] = _generations(logged, settings["samples"])
        entry["per_document"] = _per_document(logged)
        task_results[name] = entry
    groups = {}
    for name, entry in results.get("groups", {}).items():
        values, stderr = _metrics(entry)
        groups[name] = {
            "alias": entry.get("alias", name),
            "metrics": values,
            "stderr": stderr,
            "tasks": list(results.get("group_subtasks", {}).get(name, [])),
        }
    model_info = results.get("config", {})
    result = {
        "model": model_ref.ref,
        "revision": model_ref.revision,
        "tasks": task_results,
        "groups": groups,
        "lm_eval": {
            "version": metadata.version("lm_eval"),
            "requested": [dict(spec) for spec in tasks],
            "include_path": str(include_path) if include_path is not None else None,
            "include_defaults": include_defaults,
            "backend": backend(settings),
            "device": device,
            "batch_size": batch_size,
            "max_length": lm.max_length,
            "limit": limit,
            "bootstrap_iters": bootstrap_iters,
            "seeds": {
                key: model_info.get(key)
                for key in ("random_seed", "numpy_seed", "torch_seed", "fewshot_seed")
            },
            "model_num_parameters": model_info.get("model_num_parameters"),
            "model_dtype": _jsonable(model_info.get("model_dtype")),
            "threads": job.threads,
            "precision": job.precision,
            "seconds": round(seconds, 2),
        },
        # the packaged tasks' data files (paths relative to the temporary task directory)
        "task_data": _jsonable(task_data["tasks"], include_path) if task_data else None,
        "provenance": dict(job.provenance),
    }
    write_json(out_json, result)
    return result


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
