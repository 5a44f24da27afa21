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


MANY_MISTAKES = """destination: metronome
settings:
  api_token: ${METRONOME_TOKEN_UNSET_IN_TESTS}
  base_url: http://api.metronome.example
  api_tokn: tok-SECRET-VALUE
write_keys: ["${INTAKE_KEY_UNSET_IN_TESTS}"]
subscriptions:
  - name: Usage events
    action: send_event
    trigger: type = "track" and and event = "x"
    batch_size: 500
    mapping:
      customer: $.userId
      event_type: $.event[
  - name: Usage events
    action: send_events
  - name: Typo
    action: send_event
    batch_sise: 5
tests:
  - name: t
    event: {type: track}
    expect:
      - subscription: Nobody
        status: filtered
"""
"""One file, twelve mistakes of every kind: the structure's, the environment's, the settings', the expressions', the names'."""

EVERY_MISTAKE = [  # (marker where the error must point, a fragment of its message), in file order
    ("${METRONOME_TOKEN", "the environment variable METRONOME_TOKEN_UNSET_IN_TESTS is not set"),
    ("http://api", "plain http:// is only allowed to a loopback host"),
    ("api_tokn", 'unknown setting "api_tokn"'),
    ("${INTAKE_KEY", "the environment variable INTAKE_KEY_UNSET_IN_TESTS is not set (needed by write_keys[0])"),
    ('and event = "x"', 'found "and"'),
    ("500", "batch_size 500 is over send_event's limit of 100"),
    ("customer:", 'unknown field "customer"'),
    ("\n  - name: Usage events\n    action: send_events", "invalid JSONPath '$.event['"),  # at the end of the text, where "]" is missing
    ("Usage events\n    action: send_events", 'two subscriptions are named "Usage events"'),
    ("send_events", 'unknown action "send_events"'),
    ("batch_sise", 'unknown key "batch_sise"; did you mean "batch_size"?'),
    ("Nobody", 'no subscription is named "Nobody"'),
]


def test_every_error_of_a_file_is_reported_at_once_each_located(cli, tmp_path: Path) -> None:
    """An unset ${VAR} hides nothing, nor does a structure error: each error of the file is its own FILE:LINE:COL line."""
    path = tmp_path / "many.yaml"
    path.write_text(MANY_MISTAKES, encoding="utf-8")
    run = cli("validate", str(path))
    assert run.code == 1 and run.out == ""
    lines = run.err.strip().splitlines()
    assert len(lines) == len(EVERY_MISTAKE), run.err
    for line, (marker, fragment) in zip(lines, EVERY_MISTAKE):
        row, column = _position(MANY_MISTAKES, marker)
        assert line.startswith(f"{path}:{row}:{column}: ") and fragment in line, (line, row, column, fragment)
    assert "tok-SECRET-VALUE" not in run.err


def test_errors_of_several_files_are_all_reported_in_one_run(cli, tmp_path: Path) -> None:
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text(MANY_MISTAKES, encoding="utf-8")
    second.write_text(DEFAULT.replace("action: send_event", "action: send_events").replace("subscriptions:", "subscriptons:"))
    run = cli("validate", str(first), str(second))
    assert run.code == 1
    assert run.err.count(f"{first}:") == len(EVERY_MISTAKE) and run.err.count(f"{second}:") == 1
    assert 'unknown key "subscriptons"' in run.err, "the structure's error of the second file, and nothing it would cause"


NO_ENV = DEFAULT.replace("subscriptions:", 'write_keys: ["${INTAKE_KEY}", "prefix-${INTAKE_KEY_2}"]\nsubscriptions:')


def test_no_env_checks_a_file_without_its_secrets_and_lists_each_reference(cli, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("METRONOME_API_TOKEN")
    path = tmp_path / "m.yaml"
    path.write_text(NO_ENV, encoding="utf-8")
    assert cli("validate", str(path)).code == 1, "without --no-env an unset variable is an error"
    run = cli("validate", "--no-env", str(path))
    assert run.code == 0 and run.err == "", run.err
    token, key, key2 = (_position(NO_ENV, marker) for marker in ("${METRONOME_API_TOKEN}", "${INTAKE_KEY}", "${INTAKE_KEY_2}"))
    assert run.out.splitlines() == [
        f"{path}: ok (1 subscriptions to metronome, 6 tests)",
        f"{path}:{token[0]}:{token[1]}: ${{METRONOME_API_TOKEN}} for settings.api_token: not read (--no-env)",
        f"{path}:{key[0]}:{key[1]}: ${{INTAKE_KEY}} for write_keys[0]: not read (--no-env)",
        f"{path}:{key2[0]}:{key2[1]}: ${{INTAKE_KEY_2}} for write_keys[1]: not read (--no-env)",
    ]


def test_no_env_reads_nothing_even_when_set_and_still_reports_every_other_error(cli, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("METRONOME_API_TOKEN", "tok-SECRET-VALUE")
    monkeypatch.setenv("INTAKE_KEY", "")  # read, an empty write key is an error; not read, it is only a reference
    monkeypatch.setenv("INTAKE_KEY_2", "x")
    path = tmp_path / "m.yaml"
    path.write_text(NO_ENV, encoding="utf-8")
    assert "write_keys[0] is empty once the environment is read" in cli("validate", str(path)).err
    run = cli("validate", "--no-env", str(path))
    assert run.code == 0 and "tok-SECRET-VALUE" not in run.out + run.err
    path.write_text(MANY_MISTAKES, encoding="utf-8")
    run = cli("validate", "--no-env", str(path))
    assert run.code == 1
    lines = run.err.strip().splitlines()
    assert len(lines) == len(EVERY_MISTAKE) - 2 and "environment variable" not in run.err, run.err
