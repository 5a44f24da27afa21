"""The usage-billing plugins as one family (issue 15, SPEC 3.2): alike where they can be, each a declaration with an emulator.

Per platform the deep tests live in ``tests/test_<slug>.py`` (the official SDK as the emulator's oracle, 5,000
events with faults and poison). Here: the conventions an operator relies on when moving between them, the
emulator's command line, the docs page, and that the engine itself names none of them.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys

import pytest

from engine.config.definitions import Catalog
from tests.conftest import REPO

PLATFORMS = {
    "orb": ("https://api.withorb.com", ["send_event"]),
    "lago": ("https://api.getlago.com", ["send_event"]),
    "openmeter": ("https://openmeter.cloud", ["send_event"]),
    "stripe": ("https://api.stripe.com", ["send_event", "send_event_stream"]),
}
NAMES = re.compile(r"\b(orb|lago|openmeter|stripe)\b", re.IGNORECASE)


@pytest.mark.parametrize("slug", PLATFORMS)
def test_each_platform_follows_the_family_conventions(slug: str) -> None:
    destination = Catalog().get(slug)
    base_url, actions = PLATFORMS[slug]
    key = destination.settings["api_key"]
    assert key.secret and key.required and key.type == "string"
    assert destination.settings["base_url"].default == base_url
    assert list(destination.actions) == actions
    assert destination.name.endswith(" (Actions)") and destination.credential_check is not None
    for action in destination.actions.values():
        assert action.checks.required, f"{slug} {action.slug} declares its required fields"
    if slug == "stripe":
        assert destination.settings["meter_events_base_url"].default == "https://meter-events.stripe.com"
        assert destination.session is not None and destination.actions["send_event_stream"].request.session


@pytest.mark.parametrize("slug", PLATFORMS)
def test_each_platform_has_a_docs_page_a_valid_folder_and_a_mapping_file(slug: str) -> None:
    run = subprocess.run([sys.executable, "-m", "engine.cli", "docs", slug], capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 0, run.stderr
    assert "api_key" in run.stdout and "base_url" in run.stdout and "send_event" in run.stdout
    for command in (["validate", f"destinations/{slug}"], ["test", f"destinations/{slug}"]):
        checked = subprocess.run([sys.executable, "-m", "engine.cli", *command], capture_output=True, text=True, cwd=REPO)
        assert checked.returncode == 0, checked.stdout + checked.stderr
    env = {"PATH": "/usr/bin:/bin", f"{slug.upper()}_API_KEY": "k-" + "0" * 20}
    mapping = subprocess.run([sys.executable, "-m", "engine.cli", "validate", f"mappings/{slug}.yaml"], capture_output=True,
                             text=True, cwd=REPO, env=env)
    assert mapping.returncode == 0, mapping.stdout + mapping.stderr


@pytest.mark.parametrize("slug", PLATFORMS)
def test_each_emulator_starts_from_the_command_line_and_says_what_it_stored(slug: str) -> None:
    token = "emulator-token-" + "9" * 12
    process = subprocess.Popen([sys.executable, "-m", "engine.cli", "emulator", slug, "--port", "0", "--token", token],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url), url
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["requests"] == 0 and summary["stored"] == 0
    assert token not in out + err


def test_no_engine_module_names_a_platform() -> None:
    """The engine is generic: everything a platform needs is declared in its plugin folder."""
    named = [f"{path.relative_to(REPO)}:{number}" for path in sorted((REPO / "engine").rglob("*.py"))
             for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if NAMES.search(line)]
    assert named == []


def test_the_readme_tells_how_to_point_each_emulator_and_sdk_at_each_other() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    table = readme[readme.index("| platform |"):]
    table = table[:table.index("\n\n")]
    for slug in PLATFORMS:
        row = next((line for line in table.splitlines() if line.startswith(f"| {slug} ")), "")
        assert f"actionmap emulator {slug}" in row, f"README's platform table has no row for {slug}"
