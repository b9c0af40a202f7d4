"""The Snakemake command lines the README and the configs' headers give are ones Snakemake
accepts: each is parsed by Snakemake's own argument parser, and the config files it names
exist (a target after ``--resources``, ``--sdm`` or ``--configfile`` is read as one of their
values: Snakemake stops, or looks for a config file named ``all``)."""

import re
import shlex

from snakemake.cli import get_argument_parser

from conftest import ROOT


def documented_snakemake_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"^```bash\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)
    lines = [line.split(" #")[0].strip() for block in blocks for line in block.splitlines()]
    for config in sorted((ROOT / "config").glob("*.yaml")):  # "#   snakemake ..." headers
        lines += [line.lstrip("# ") for line in config.read_text().splitlines()]
    return [line for line in lines if re.match(r"^(\S*/)?snakemake ", line)]


def test_every_documented_snakemake_command_parses():
    commands = documented_snakemake_commands()
    assert len(commands) >= 10  # the README's usage, smol, GPU and Slurm sections
    for command in commands:
        args = get_argument_parser().parse_args(shlex.split(command)[1:])  # raises if not
        assert args.targets or args.lint or args.unlock, command
        for configfile in args.configfile or []:
            assert (ROOT / configfile).is_file(), (command, configfile)


PAPER_COMMAND = "snakemake --profile slurm all --configfile config/paper.yaml"


def test_every_paper_scale_command_is_the_literal_one():
    """Wherever the docs tell a user how to run paper scale on the cluster (README code
    blocks and inline code, config/README.md, the configs' headers), it is the one command
    the Slurm tests check (its plan with -n): no variant that only works with extra flags."""
    commands = documented_snakemake_commands()
    for doc in (ROOT / "README.md", ROOT / "config" / "README.md"):
        commands += re.findall(r"`((?:\S*/)?snakemake [^`]*)`", doc.read_text())
    paper = [c for c in commands if "config/paper.yaml" in c and "--profile" in c]
    assert len(paper) >= 4, paper  # README: tier table, paper scale (plan, run), Slurm
    for command in paper:
        assert command.replace(" -n ", " ") == PAPER_COMMAND, command
