"""Type hints are part of the interface: the engine and the built-in plugins type-check with mypy."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO


def test_engine_and_plugins_type_check() -> None:
    """Every function is annotated (``disallow_untyped_defs``) and the annotations agree with the code."""
    run = subprocess.run([sys.executable, "-m", "mypy", "--no-incremental"], cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "no issues found" in run.stdout
