"""`actionmap validate`: the default mapping passes; each typical mistake is one located line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import REPO

DEFAULT = (REPO / "mappings" / "metronome.yaml").read_text(encoding="utf-8")


def test_default_mapping_is_valid(cli) -> None:
    run = cli("validate", str(REPO / "mappings" / "metronome.yaml"))
    assert run.code == 0, run.err
    assert "ok (1 subscriptions to metronome" in run.out


def test_plugin_folder_is_valid(cli) -> None:
    run = cli("validate", str(REPO / "destinations" / "metronome"))
    assert run.code == 0, run.err
    assert "destination metronome" in run.out


def _position(text: str, marker: str) -> tuple[int, int]:
    """1-based line and column of the first ``marker`` in ``text``."""
    index = text.index(marker)
    return text.count("\n", 0, index) + 1, index - text.rfind("\n", 0, index)


BASE_URL_LINE = "  api_token: ${METRONOME_API_TOKEN}\n"

# (name, edit of the default file, marker where the error must point, a fragment of the message)
MISTAKES = [
    ("misspelled key", ("subscriptions:", "subscriptons:"), "subscriptons", 'unknown key "subscriptons"; did you mean "subscriptions"?'),
    ("unknown action", ("action: send_event", "action: send_events"), "send_events", 'unknown action "send_events"'),
    ("duplicate key", ("subscriptions:", "destination: metronome\nsubscriptions:"), "destination: metronome\nsubscriptions", 'duplicate key "destination"'),
    ("python tag", ("api_token: ${METRONOME_API_TOKEN}", "api_token: !!python/object:os.system {}"), "!!python", "!!python/object:os.system is not allowed"),
    ("unset variable", ("${METRONOME_API_TOKEN}", "${METRONOME_TOKEN_UNSET_IN_TESTS}"), "${METRONOME_TOKEN", "METRONOME_TOKEN_UNSET_IN_TESTS is not set"),
    ("http to a remote host", (BASE_URL_LINE, BASE_URL_LINE + "  base_url: http://api.metronome.example\n"), "http://", "only allowed to a loopback host"),
    ("unknown setting", (BASE_URL_LINE, BASE_URL_LINE + "  api_tokn: x\n"), "api_tokn", 'unknown setting "api_tokn"'),
    ("unknown field", ("    action: send_event\n", "    action: send_event\n    mapping:\n      customer: $.userId\n"), "customer:", 'unknown field "customer"'),
    ("batch too big", ("    action: send_event\n", "    action: send_event\n    batch_size: 500\n"), "500", "over send_event's limit of 100"),
    ("bad trigger", ("    action: send_event\n", '    action: send_event\n    trigger: type = "track" and and event = "x"\n'), 'and event = "x"', "and"),
]


@pytest.mark.parametrize("name, edit, marker, fragment", MISTAKES, ids=[m[0] for m in MISTAKES])
def test_each_mistake_is_one_located_line(cli, tmp_path: Path, name: str, edit: tuple[str, str], marker: str, fragment: str) -> None:
    assert edit[0] in DEFAULT
    text = DEFAULT.replace(edit[0], edit[1], 1)
    line, column = _position(text, marker)
    path = tmp_path / "metronome.yaml"
    path.write_text(text, encoding="utf-8")
    run = cli("validate", str(path))
    assert run.code == 1
    lines = run.err.strip().splitlines()
    assert len(lines) == 1, run.err
    assert lines[0].startswith(f"{path}:{line}:{column}: "), (lines[0], line, column)
    assert fragment in lines[0]
    assert "test-token-not-secret" not in run.err + run.out


def test_several_files_report_each_and_fail_together(cli, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(DEFAULT.replace("subscriptions:", "subscriptons:"), encoding="utf-8")
    run = cli("validate", str(REPO / "mappings" / "metronome.yaml"), str(bad))
    assert run.code == 1
    assert "ok" in run.out and re.search(r"bad\.yaml:\d+:1: unknown key", run.err)


def test_missing_file_is_a_clear_error(cli, tmp_path: Path) -> None:
    run = cli("validate", str(tmp_path / "nope.yaml"))
    assert run.code == 1 and "cannot read the file" in run.err


def test_secret_values_are_never_echoed(cli, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("METRONOME_API_TOKEN", "tok-SECRET-VALUE")
    # a secret of the wrong type and a secret in a bad base_url position: the value stays unprinted
    path = tmp_path / "m.yaml"
    path.write_text(DEFAULT.replace("${METRONOME_API_TOKEN}", "[tok-SECRET-VALUE]"), encoding="utf-8")
    run = cli("validate", str(path))
    assert run.code == 1 and "tok-SECRET-VALUE" not in run.err + run.out


def test_loopback_http_is_allowed(cli, tmp_path: Path) -> None:
    for host in ("127.0.0.1:8089", "localhost", "[::1]:9000", "127.5.6.7"):
        path = tmp_path / "m.yaml"
        path.write_text(DEFAULT.replace(BASE_URL_LINE, BASE_URL_LINE + f"  base_url: http://{host}\n"), encoding="utf-8")
        run = cli("validate", str(path))
        assert run.code == 0, (host, run.err)


def test_a_missing_events_file_is_one_line_not_a_traceback(cli, tmp_path: Path) -> None:
    run = cli("preview", "-m", str(REPO / "mappings" / "metronome.yaml"), str(tmp_path / "absent.ndjson"))
    assert run.code == 1 and run.err.strip() == f"actionmap: No such file or directory: {tmp_path / 'absent.ndjson'}"
