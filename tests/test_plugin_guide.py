"""The plugin developer's guide, tried as written; and a plugin folder used uninstalled by every command.

The first test reads the README's walkthrough and runs it in an empty folder: its `sh`
blocks as commands and its other blocks as the files their first lines name, with
the real `actionmap` command, a real offline `pip install` and a real HTTP receiver.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import orjson
import pytest

from tests.conftest import REPO, WEBHOOK_SECRET, Receiver

README = REPO / "README.md"
WALKTHROUGH = "### From an empty folder to events delivered"
GUIDE_PORT = "http://127.0.0.1:8089"
"""The local receiver the guide's mapping file names; the test's receiver takes its place."""

OFFLINE_PIP = """\
pip() {  # the guide's `pip install`, made offline: build with the hatchling at hand, install into $SITE (on PYTHONPATH)
  if [ "$1" = install ]; then shift; python -m pip install -q --no-deps --no-build-isolation --target "$SITE" "$@"
  else python -m pip "$@"; fi
}
"""


def walkthrough_script(readme: str) -> str:
    """The guide's walkthrough as one shell script: each `sh` block as it is, each other block written to its file."""
    section = readme[readme.index(WALKTHROUGH):]
    section = section[: section.index("\n### ", 1)]
    parts = []
    for language, body in re.findall(r"^```(\w*)\n(.*?)^```$", section, flags=re.S | re.M):
        if language == "sh":
            parts.append(body)
            continue
        first = body.splitlines()[0]
        name = re.fullmatch(r"# (\S+)", first)
        assert name, f"a {language} block of the walkthrough must name its file in its first line, not {first!r}"
        parts.append(f"cat > {name.group(1)} <<'END_OF_GUIDE_FILE'\n{body}END_OF_GUIDE_FILE\n")
    assert len(parts) >= 5, "the walkthrough lost its steps"
    return "".join(parts)


def _bin_with_actionmap(tmp_path: Path) -> Path:
    """The folder of this environment's `actionmap` command (a shim running this interpreter when it has none)."""
    here = Path(sys.executable).parent
    if (here / "actionmap").is_file():
        return here
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "actionmap").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m engine.cli "$@"\n')
    (shim / "actionmap").chmod(0o755)
    (shim / "python").symlink_to(sys.executable)
    return shim


def test_the_guide_from_an_empty_folder_to_events_received(tmp_path: Path, receiver: Receiver) -> None:
    script = walkthrough_script(README.read_text(encoding="utf-8"))
    assert GUIDE_PORT in script and "pip install ." in script
    script = script.replace(GUIDE_PORT, receiver.url.removesuffix("/hook"))
    work, site = tmp_path / "work", tmp_path / "site"
    work.mkdir()
    env = {**os.environ, "PATH": f"{_bin_with_actionmap(tmp_path)}{os.pathsep}{os.environ['PATH']}", "SITE": str(site),
           "PYTHONPATH": str(site)}
    run = subprocess.run(["bash", "-c", "set -euo pipefail\n" + OFFLINE_PIP + script], cwd=work, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "Traceback" not in run.stderr, run.stderr
    folder = work / "actionmap-acme"
    out = run.stdout
    assert "actionmap_acme: ok (destination acme, actions: send)" in out
    assert "1 passed, 0 failed" in out
    assert re.search(r"acme\.yaml:4:12: \$\{ACME_API_KEY\} for settings\.api_key: not read \(--no-env\)", out), out
    assert re.search(r"^acme +Acme \(Actions\) +send +entry point acme = actionmap_acme of actionmap-acme$", out, re.M), out
    assert (site / "actionmap_acme" / "actions" / "send.yaml").is_file(), "pip installed the package with its YAML"
    assert (folder / "acme.md").read_text().startswith("# Acme (Actions)")
    summaries = [orjson.loads(line) for line in out.splitlines() if line.startswith('{"events"')]
    assert [(s["events"], s["delivered"]) for s in summaries] == [(1, 1), (1, 1)], "once uninstalled, once installed"
    assert receiver.items() == [{"id": "m-1", "name": "Signed Up", "user": "42"}] * 2
    assert "key-1" not in out + run.stderr and "key-2" not in out + run.stderr


# -- a plugin folder that is never installed --------------------------------------------------------------


def _hookbin(parent: Path) -> Path:
    """The Webhook plugin copied to a folder named hookbin, with slug hookbin and its hooks module from the folder."""
    folder = parent / "hookbin"
    shutil.copytree(REPO / "destinations" / "webhook", folder, ignore=shutil.ignore_patterns("__pycache__"))
    path = folder / "destination.yaml"
    text = path.read_text(encoding="utf-8")
    assert "slug: webhook" in text and "hooks: destinations.webhook.hooks" in text
    path.write_text(text.replace("slug: webhook", "slug: hookbin").replace("hooks: destinations.webhook.hooks", "hooks: hookbin.hooks"))
    cases = folder / "tests" / "send.yaml"
    cases.write_text(cases.read_text(encoding="utf-8").replace("webhook", "hookbin"))
    return folder


@pytest.fixture(autouse=True)
def _forget_hookbin() -> Iterator[None]:
    """Each test imports the folder's hooks afresh (in-process runs share sys.modules)."""
    yield
    for name in [name for name in sys.modules if name == "hookbin" or name.startswith("hookbin.")]:
        del sys.modules[name]


def _mapping(path: Path, destination: str, receiver: Receiver) -> Path:
    path.write_text(f"""destination: {destination}
settings:
  url: {receiver.url}
  signing_secret: ${{HOOK_SECRET}}
subscriptions:
  - name: Every event
    action: send
""")
    return path


def test_a_plugin_folder_works_uninstalled_with_validate_test_docs_and_send(tmp_path: Path, receiver: Receiver, cli: Any,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    plugins = tmp_path / "plugins"
    folder = _hookbin(plugins)
    (tmp_path / "deploy").mkdir()
    by_path = _mapping(tmp_path / "deploy" / "hook.yaml", "../plugins/hookbin", receiver)  # relative to the mapping file
    by_slug = _mapping(tmp_path / "deploy" / "hook-slug.yaml", "hookbin", receiver)
    events = tmp_path / "events.ndjson"
    events.write_text('{"type": "track", "messageId": "m-1", "event": "Signed Up"}\n')
    monkeypatch.setenv("HOOK_SECRET", WEBHOOK_SECRET)
    monkeypatch.chdir(tmp_path / "deploy")  # nowhere near the plugin: it is neither installed nor importable
    assert importlib.util.find_spec("hookbin") is None

    runs = {
        "validate DIR": cli("validate", folder),
        "test DIR": cli("test", folder),
        "docs DIR": cli("docs", folder),
        "validate by path": cli("validate", by_path),
        "validate --plugins": cli("validate", "--plugins", plugins, by_slug),
        "test --plugins": cli("test", "--plugins", folder, folder),
        "docs --plugins": cli("docs", "hookbin", "--plugins", plugins),
        "send by path": cli("send", "-m", by_path, events),
        "send --plugins": cli("send", "--plugins", plugins, "-m", by_slug, events),
        "preview --plugins": cli("preview", "-m", by_slug, "--plugins", folder, events),
    }
    for name, run in runs.items():
        assert run.code == 0 and "Traceback" not in run.err, (name, run.out, run.err)
    assert "ok (destination hookbin, actions: send)" in runs["validate DIR"].out
    assert "ok (1 subscriptions to hookbin" in runs["validate by path"].out
    assert "ok (1 subscriptions to hookbin" in runs["validate --plugins"].out
    assert re.search(r"^[1-9]\d* passed, 0 failed$", runs["test DIR"].out, re.M)
    assert runs["docs DIR"].out.startswith("# Webhook (Actions)") and runs["docs DIR"].out == runs["docs --plugins"].out
    assert orjson.loads(runs["preview --plugins"].out)["payload"]["data"]["messageId"] == "m-1"
    assert [orjson.loads(r.out.splitlines()[-1])["delivered"] for r in (runs["send by path"], runs["send --plugins"])] == [1, 1]
    received = [r for r in receiver.received if r["status"] == 200]
    assert len(received) == 2 and all(r["signed"] for r in received), "the folder's hooks.py signed each body"
    unknown = cli("send", "-m", by_slug, events)
    assert unknown.code == 1 and 'unknown destination "hookbin"' in unknown.err
    assert "destination: ./hookbin" in unknown.err and "--plugins DIR" in unknown.err, "the error says how to use a folder"


def test_a_folder_reference_that_is_no_plugin_and_two_folders_of_one_slug_are_errors(tmp_path: Path, receiver: Receiver,
                                                                                   cli: Any) -> None:
    missing = _mapping(tmp_path / "m.yaml", "./nowhere", receiver)
    run = cli("validate", missing)
    assert run.code == 1 and run.err.startswith(f"{missing}:1:14: {tmp_path / 'nowhere'} does not exist: a plugin folder holds")
    one, two = _hookbin(tmp_path / "a"), _hookbin(tmp_path / "b")
    run = cli("validate", "--plugins", one, "--plugins", two, missing)
    assert run.code == 1 and f'two plugin folders declare the slug "hookbin": {one} and {two}' in run.err
    for given, said in [(tmp_path / "m.yaml", "is a file, not a folder"), (tmp_path / "no", "does not exist"),
                        (tmp_path, "no plugin folder here (a plugin folder holds destination.yaml) nor in its folders")]:
        run = cli("validate", "--plugins", given, missing)
        assert run.code == 1 and run.err.startswith(f"--plugins {given}: {said}")
