"""UI tests: each bad `.dl` file in tests/ui/ beside the exact stderr it must produce.

`dslc check` and `dslc compile` exit 1 with the rendered diagnostics, print
no traceback and write no file. The files in tests/ui/warnings/ check with
warnings only: exit 0, the warnings on stderr, and `compile` writes its file.
Refresh expected output with --update-goldens and review the diff like code.
"""
from __future__ import annotations

import pathlib

import pytest
from click.testing import CliRunner
from conftest import golden

from dslc.cli import main

UI = pathlib.Path(__file__).parent / "ui"
CASES = sorted(p.name for p in UI.glob("*.dl"))
WARNINGS = sorted(p.name for p in (UI / "warnings").glob("*.dl"))


@pytest.fixture
def in_ui(monkeypatch):
    monkeypatch.chdir(UI)


@pytest.mark.parametrize("case", CASES)
def test_check_reports(case, in_ui, update_goldens):
    result = CliRunner().invoke(main, ["check", case])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    golden(UI / (case[:-3] + ".stderr"), result.stderr, update_goldens)


@pytest.mark.parametrize("case", CASES)
def test_compile_writes_nothing(case, in_ui, tmp_path):
    out = tmp_path / "out.py"
    result = CliRunner().invoke(main, ["compile", case, "-o", str(out)])
    assert result.exit_code == 1
    assert "Traceback" not in result.stderr
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("case", WARNINGS)
def test_warnings_stop_nothing(case, monkeypatch, tmp_path, update_goldens):
    monkeypatch.chdir(UI / "warnings")
    result = CliRunner().invoke(main, ["check", case])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"ok: {case}: ")
    assert "warning[W" in result.stderr and "error[" not in result.stderr
    golden(UI / "warnings" / (case[:-3] + ".stderr"), result.stderr, update_goldens)
    out = tmp_path / "out.py"
    compiled = CliRunner().invoke(main, ["compile", case, "-o", str(out)])
    assert compiled.exit_code == 0 and out.exists()
    assert compiled.stderr == result.stderr + f"wrote {out}\n"
