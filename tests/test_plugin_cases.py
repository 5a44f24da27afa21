"""Every installed plugin's data-only tests (tests/<action>.yaml) run under pytest too."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from engine.config.definitions import Catalog, plugin_folders
from engine.tools.plugintests import run_plugin_tests
from tests.conftest import REPO

CASES = [
    (slug, result)
    for slug, (folder, _) in sorted(plugin_folders().items())
    for result in run_plugin_tests(folder, Catalog())
]


@pytest.mark.parametrize("slug, result", CASES, ids=[f"{slug}: {r.name}" for slug, r in CASES])
def test_plugin_case(slug: str, result) -> None:
    assert result.passed, f"{result.where}: " + "\n".join(result.failures)


def test_metronome_has_plugin_cases() -> None:
    assert sum(1 for slug, _ in CASES if slug == "metronome") >= 3


def test_a_wrong_expected_request_fails_with_a_diff(tmp_path: Path) -> None:
    folder = tmp_path / "metronome"
    shutil.copytree(REPO / "destinations" / "metronome", folder)
    cases = folder / "tests" / "send_event.yaml"
    cases.write_text(cases.read_text().replace("customer_id: cust-9", "customer_id: cust-8"))
    results = run_plugin_tests(folder, Catalog())
    (failed,) = [r for r in results if not r.passed]
    assert failed.where.startswith(f"{cases}:5:")
    assert "body differs" in failed.failures[0] and '-    "customer_id": "cust-8",' in failed.failures[0]


def test_the_secret_is_masked_in_the_request_a_case_sees(tmp_path: Path) -> None:
    folder = tmp_path / "metronome"
    shutil.copytree(REPO / "destinations" / "metronome", folder)
    cases = folder / "tests" / "send_event.yaml"
    cases.write_text(cases.read_text().replace("Authorization: Bearer ********", "Authorization: Bearer tok-for-tests-only"))
    failed = [r for r in run_plugin_tests(folder, Catalog()) if not r.passed]
    assert failed and "header authorization: expected 'Bearer tok-for-tests-only', got 'Bearer ********'" in failed[0].failures
