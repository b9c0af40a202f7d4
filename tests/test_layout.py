"""The library's layout (stylemerge.cli.layout): packages by stage, imports only downward,
no cycles, no module over 500 lines or function over 80."""

import textwrap

from stylemerge.cli import layout
from stylemerge.resources.memory import RULE_MODELS
from stylemerge.resources.rules import RULES


def test_the_library_keeps_its_layout(capsys):
    assert layout.main([]) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in printed] == list(layout.LAYERS)


def write(root, name, text):
    path = root / "stylemerge" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))


def test_the_check_names_an_upward_import_a_cycle_and_long_code(tmp_path):
    write(tmp_path, "__init__.py", "")
    write(tmp_path, "core/__init__.py", "")
    write(tmp_path, "report/__init__.py", "")
    # core reaching into report (inside a function: still an import)
    write(tmp_path, "core/files.py", "def f():\n    from stylemerge.report import tables\n")
    write(tmp_path, "report/tables.py", "from stylemerge.report.claims import x\n")
    write(tmp_path, "report/claims.py", "from stylemerge.report import tables\nx = 1\n")
    # every module of one from-import counts
    write(tmp_path, "core/io.py", "from stylemerge.report import claims, long\n")
    # another package's names that match ours are not ours
    write(tmp_path, "core/other.py", "from tokenizers import report\nfrom report import tables\n")
    body = "\n".join(f"    a{i} = {i}" for i in range(layout.MAX_FUNCTION_LINES))
    write(tmp_path, "report/long.py", f"def long():\n{body}\n" + "\n" * 420)
    write(tmp_path, "misc/__init__.py", "")
    found = layout.problems(layout.read_modules(tmp_path))
    assert "core.files: imports report.tables upward (core < report)" in found
    assert "import cycle: report.claims -> report.tables" in found
    assert f"report.long.long: {layout.MAX_FUNCTION_LINES + 1} lines (over 80)" in found
    assert any(line.startswith("report.long: ") and "over 500" in line for line in found)
    assert "misc: package 'misc' is not in LAYERS" in found
    assert "core.io: imports report.claims upward (core < report)" in found
    assert "core.io: imports report.long upward (core < report)" in found
    assert len(found) == 7, found


def test_every_rule_of_the_registry_has_a_memory_model():
    assert set(RULE_MODELS) == set(RULES)
