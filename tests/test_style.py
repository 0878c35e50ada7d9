"""The tree passes the linter and formatter configured in pyproject.toml (ruff)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RUFF = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")


@pytest.mark.parametrize("command", [["check", "--output-format", "concise"], ["format", "--check"]])
def test_ruff_passes(command):
    assert RUFF, "ruff is not installed: pip install -e .[test] (the README's set-up does it)"
    result = subprocess.run([RUFF, *command, "."], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-1000:]
