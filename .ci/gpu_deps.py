"""The GPU pin set, constraints-gpu.txt, against what pip resolves (`make gpu-deps`).

`make gpu-deps` has pip resolve `.[gpu,tracking,slurm-jobstep]` with constraints-gpu.txt without installing
anything (`pip install --dry-run --report`); then

    python .ci/gpu_deps.py check REPORT

fails unless pip would install exactly the pinned set: every package at its pinned version,
none unpinned, no pin unused. So constraints-gpu.txt is complete, and a conflict or a
new unpinned dependency shows up in CI rather than on a GPU node.

    python .ci/gpu_deps.py write REPORT

writes constraints-gpu.txt from a resolve (how it was made: see its header). Standard library
only: it runs with any Python 3.11.
"""

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PINS = ROOT / "constraints-gpu.txt"
PROJECT = "stylemerge"
HEADER = """\
# The GPU pin set, Linux with CUDA: `make gpu-venv`, which is
# `pip install -c constraints-gpu.txt -e ".[gpu,tracking,slurm-jobstep]"`. Its own file
# because vLLM 0.30.0 needs numpy<2.4 (mistral_common) while snakemake-executor-plugin-slurm
# 2.8.0 needs numpy>=2.4.5: the slurm extra is not in it (its jobstep plugin is).
# Made by pip 26.3's resolver (--dry-run --use-feature=fast-deps --report; PyPI, whose Linux
# torch wheel is the CUDA build) for .[gpu,tracking,slurm-jobstep] with constraints.txt's
# pins, numpy unpinned, then `python .ci/gpu_deps.py write REPORT`. tests/test_envs.py checks
# that every version shared with constraints.txt agrees but numpy's; `make gpu-deps` (CI)
# that pip resolves exactly this set.
"""


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def resolved(report: Path) -> dict[str, str]:
    """name -> version of what pip would install, the project itself left out."""
    install = json.loads(report.read_text())["install"]
    pins = {normalize(i["metadata"]["name"]): i["metadata"]["version"] for i in install}
    pins.pop(PROJECT, None)
    return pins


def pinned(path: Path = PINS) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[normalize(name)] = version.strip()
    return pins


def differences(got: dict[str, str], want: dict[str, str]) -> list[str]:
    problems = []
    for name in sorted(got.keys() | want.keys()):
        if name not in want:
            problems.append(f"{name}=={got[name]} is resolved but not pinned")
        elif name not in got:
            problems.append(f"{name}=={want[name]} is pinned but not resolved")
        elif got[name] != want[name]:
            problems.append(f"{name}: resolved {got[name]}, pinned {want[name]}")
    return problems


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in {"check", "write"}:
        print(__doc__, file=sys.stderr)
        return 2
    got = resolved(Path(argv[1]))
    if argv[0] == "write":
        PINS.write_text(HEADER + "".join(f"{n}=={v}\n" for n, v in sorted(got.items())))
        print(f"wrote {len(got)} pins to {PINS.name}")
        return 0
    problems = differences(got, pinned())
    for problem in problems:
        print(f"{PINS.name}: {problem}", file=sys.stderr)
    if problems:
        return 1
    print(f"{PINS.name}: pip resolves exactly its {len(got)} pins")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
