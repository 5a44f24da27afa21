"""What a person sees on a terminal (issue 16): ``send``'s progress and ``preview --explain``'s tables.

Every test runs the real command with one stream on a real pseudo-terminal (the stdlib
``pty``) of a known width and reads what it draws from the other side, as a terminal
would; the other streams are pipes, so the JSON a tool reads can be checked beside it.
No test measures time: a run is made long enough to draw by pacing it (``--rate``),
and "while it runs" is shown by what is drawn, not by a stopwatch.
"""

from __future__ import annotations

import fcntl
import gzip
import io
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
import threading
import tty
from pathlib import Path
from typing import Any, Callable

import orjson
import pytest

from destinations.metronome.emulator import Faults, MetronomeEmulator
from engine.cli.terminal import ExplainTables
from engine.pipeline import Outcome
from tests.conftest import REPO, Receiver, track_events
from tests.test_connections import TOKEN, WEBHOOK_SECRET, environment, events_file, metronome_file, webhook_file

Start = Callable[..., MetronomeEmulator]
COLUMNS = 240
_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_HUNG = 300.0
"""Seconds after which a wait fails as a hung test (never reached by a run that works)."""


class Terminal:
    """A pseudo-terminal ``COLUMNS`` wide; what is drawn on it is read as it comes (a full one would block the writer)."""

    def __init__(self, raw: bool = False) -> None:
        self.leader, self.follower = pty.openpty()
        fcntl.ioctl(self.follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, COLUMNS, 0, 0))
        if raw:  # no translation of "\n" into "\r\n": bytes arrive as written
            tty.setraw(self.follower)
        self.drawn = bytearray()
        self.closed = False
        self.changed = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)

    def run(self, *args: str | Path, on: tuple[str, ...] | str, env: dict[str, str] | None = None,
            stdin: int | None = subprocess.DEVNULL) -> subprocess.Popen[bytes]:
        """``actionmap ARGS`` with its ``on`` streams ("stdout", "stderr") on this terminal, the others pipes."""
        streams: dict[str, Any] = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
        streams.update(dict.fromkeys((on,) if isinstance(on, str) else on, self.follower))
        env = {key: value for key, value in (env or environment()).items() if key not in ("COLUMNS", "LINES", "FORCE_COLOR")}
        process = subprocess.Popen([sys.executable, "-m", "engine.cli", *map(str, args)], cwd=REPO, stdin=stdin,
                                   env={**env, "TERM": "xterm-256color"}, **streams)
        os.close(self.follower)  # the child holds it now: once it exits, reading ends
        self.reader.start()
        return process

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.leader, 1 << 16)
            except OSError:  # EIO: every writer has closed its side
                chunk = b""
            with self.changed:
                self.drawn += chunk
                self.closed = not chunk
                self.changed.notify_all()
            if not chunk:
                return

    def wait_for(self, pattern: str) -> None:
        """Until ``pattern`` (a regular expression) is among what was drawn, escapes left out; fails if drawing ends first."""
        with self.changed:
            found = self.changed.wait_for(lambda: re.search(pattern, self.text) or self.closed, timeout=_HUNG)
        assert found and re.search(pattern, self.text), f"never drawn: {pattern!r} in {self.text!r}"

    def finish(self) -> None:
        self.reader.join(_HUNG)
        os.close(self.leader)

    @property
    def text(self) -> str:
        return _ESCAPE.sub("", self.drawn.decode("utf-8", "replace"))

    @property
    def frames(self) -> list[str]:
        """Each line drawn, as it was drawn: a redraw in place starts with a carriage return."""
        return [frame.strip() for frame in re.split(r"[\r\n]+", self.text) if frame.strip()]


def ended(process: subprocess.Popen[bytes], terminal: Terminal, rest: bytes | None = None) -> tuple[int, bytes, str]:
    """The exit status, stdout and the text drawn once the process has ended (given ``rest`` as the end of stdin).

    No secret may be in any of them.
    """
    out, err = process.communicate(rest, timeout=_HUNG)
    terminal.finish()
    seen = (out or b"").decode() + (err or b"").decode() + terminal.text
    assert TOKEN not in seen and WEBHOOK_SECRET not in seen, "a secret reached a terminal"
    return process.returncode, out or b"", terminal.text


def summary_of(out: bytes) -> dict[str, Any]:
    last: dict[str, Any] = orjson.loads(out.decode().strip().splitlines()[-1])
    return last


# -- send: the progress bar, the counter, and nothing ------------------------------------------------------------

BAR = r"━"
PERCENT = r"(\d{1,3})%"
EVENTS_RATE = r"[\d,]+ events, [\d,]+/s"
ETA = r"eta (\d+:\d\d:\d\d)"


@pytest.mark.parametrize("compressed", [False, True], ids=["ndjson", "gzip"])
def test_send_from_a_file_draws_a_bar_with_rate_and_time_remaining_then_says_its_summary(
    tmp_path: Path, receiver: Receiver, compressed: bool
) -> None:
    """The bar counts the bytes read out of the file's size (of a gzip file, the compressed bytes: its size on disk)."""
    events = events_file(tmp_path, track_events(1_200, seed=21, prefix="bar"))
    if compressed:
        events = events.rename(tmp_path / "events.ndjson.gz")
        events.write_bytes(gzip.compress(events.read_bytes()))
    terminal = Terminal()
    process = terminal.run("send", "-m", webhook_file(tmp_path, receiver), events, "--rate", "300", on="stderr")
    code, out, drawn = ended(process, terminal)
    assert code == 0, drawn
    bars = [m for frame in terminal.frames if (m := re.search(f"{BAR}+.* {PERCENT} {EVENTS_RATE} {ETA}", frame))]
    assert bars, f"no bar with a rate and an ETA in {terminal.frames}"
    percents = [int(m.group(1)) for m in bars]
    assert percents == sorted(percents) and percents[-1] == 100, f"the bar went backwards or never filled: {percents}"
    under_way = [m for m in bars if int(m.group(1)) < 100 and m.group(2) != "-:--:--"]
    assert under_way, "no frame drawn mid-way with a time remaining (the ETA was never estimated)"
    assert terminal.frames[-1] == ("actionmap: 1,200 events: 1,200 delivered, 0 filtered, 0 invalid, 0 dead-lettered, "
                                   "0 kept, in 12 requests"), "the summary is said last, once the bar is erased"
    assert b"\x1b" not in out and summary_of(out)["delivered"] == 1_200, "stdout holds the JSON alone, nothing drawn"


def test_send_from_a_pipe_draws_a_counter_of_events_and_their_rate(tmp_path: Path, receiver: Receiver) -> None:
    """Input of unknown size: a counter that moves as events arrive (no bar, no percentage, no ETA)."""
    events = [orjson.dumps(e) + b"\n" for e in track_events(100, seed=22, prefix="counter")]
    terminal = Terminal()
    process = terminal.run("send", "-m", webhook_file(tmp_path, receiver), on="stderr", stdin=subprocess.PIPE)
    assert process.stdin is not None
    process.stdin.write(b"".join(events[:40]))
    process.stdin.flush()
    terminal.wait_for(r"\b40 events, [\d,]+/s")  # the pipe went quiet: the open batch was sent, and the count shows it
    code, out, drawn = ended(process, terminal, rest=b"".join(events[40:]))
    assert code == 0, drawn
    counters = [frame for frame in terminal.frames if re.search(f"{EVENTS_RATE} \\d+:\\d\\d:\\d\\d", frame)]
    assert counters and any(frame.startswith("100 events") or " 100 events," in frame for frame in counters), counters
    assert not any(BAR in frame or "%" in frame or "eta" in frame for frame in terminal.frames), terminal.frames
    assert "actionmap: 100 events: 100 delivered" in terminal.frames[-1]
    assert summary_of(out)["delivered"] == 100


@pytest.mark.parametrize("forced", [{}, {"FORCE_COLOR": "1"}], ids=["plain", "FORCE_COLOR"])
def test_send_draws_nothing_when_stderr_is_not_a_terminal(tmp_path: Path, receiver: Receiver, forced: dict[str, str]) -> None:
    """A log or a pipe gets the summary line alone, even when rich is told colour is wanted."""
    events = track_events(300, seed=23, prefix="quiet")
    process = subprocess.run([sys.executable, "-m", "engine.cli", "send", "-m", str(webhook_file(tmp_path, receiver)),
                              str(events_file(tmp_path, events)), "--rate", "300"],
                             cwd=REPO, env=environment(**forced), capture_output=True, timeout=_HUNG)
    assert process.returncode == 0, process.stderr
    assert process.stderr.decode() == ("actionmap: 300 events: 300 delivered, 0 filtered, 0 invalid, 0 dead-lettered, "
                                       "0 kept, in 3 requests\n")
    assert summary_of(process.stdout)["delivered"] == 300 and b"\x1b" not in process.stdout


def test_ctrl_c_while_the_bar_is_drawn_erases_it_and_says_the_summary(tmp_path: Path, emulators: Start, receiver: Receiver) -> None:
    """SIGINT during a send whose destination keeps failing: exit 130, no traceback, the cursor back, the summary said."""
    emulator = emulators(tokens={TOKEN}, faults=Faults(rate=1.0, kinds=["503"]))
    terminal = Terminal()
    process = terminal.run("send", "-m", metronome_file(tmp_path, emulator), "-m", webhook_file(tmp_path, receiver),
                           events_file(tmp_path, track_events(300, seed=24, prefix="stopped")), "--retry-for", "600", on="stderr")
    terminal.wait_for(f"{BAR}+.* {PERCENT} {EVENTS_RATE}")
    process.send_signal(signal.SIGINT)
    code, out, drawn = ended(process, terminal)
    assert code == 130 and "Traceback" not in drawn, drawn
    raw = terminal.drawn.decode()
    assert raw.rfind("\x1b[?25h") > raw.rfind("\x1b[?25l"), "the cursor was left hidden"
    metronome = summary_of(out)["connections"]["metronome"]
    assert metronome["kept"] == metronome["events"] > 0 and metronome["delivered"] == 0
    assert f"actionmap: metronome: {metronome['events']:,} events: 0 delivered" in drawn
    assert terminal.frames[-1].startswith("actionmap: interrupted")


def test_a_dry_run_printing_its_requests_on_the_terminal_draws_no_progress(tmp_path: Path, receiver: Receiver) -> None:
    """stdout and stderr one terminal: the requests are the output, and a bar redrawn among them would tangle them."""
    terminal = Terminal()
    process = terminal.run("send", "-m", webhook_file(tmp_path, receiver), "--dry-run",
                           events_file(tmp_path, track_events(600, seed=25, prefix="dry")), on=("stdout", "stderr"))
    code, _, drawn = ended(process, terminal)
    assert code == 0, drawn
    assert "dry-0" in drawn and "actionmap: 600 events:" in drawn and receiver.received == []
    assert not re.search(f"{BAR}|{EVENTS_RATE}", drawn), "progress was drawn among the requests"


# -- preview --explain: a table for a person, the JSON lines for tools ------------------------------------------

EXPLAINED = """destination: metronome
settings: {api_token: not-a-secret}
subscriptions:
  - name: Usage events
    action: send_event
    mapping:
      transaction_id: $.messageId
      customer_id: {"@if": {exists: $.userId, then: $.userId, else: $.anonymousId}}
      timestamp: $.timestamp
      event_type: {"@coalesce": [$.properties.kind, $.event]}
      properties: $.properties
"""
EVENTS = [
    {"type": "track", "messageId": "m-1", "anonymousId": "anon-7", "event": "api_call",
     "timestamp": "2026-11-26T10:00:00+01:00", "properties": {"tokens": 120, "note": "[bold]not markup[/bold]"}},
    {"type": "track", "messageId": "m-2", "userId": 1234, "event": "page_render", "timestamp": "2026-11-26T10:00:00Z",
     "properties": None},
]


def explained_files(tmp_path: Path) -> tuple[Path, Path]:
    mapping, events = tmp_path / "explained.yaml", tmp_path / "events.ndjson"
    mapping.write_text(EXPLAINED, encoding="utf-8")
    events.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in EVENTS))
    return mapping, events


def rows(text: str) -> list[list[str]]:
    """The body rows of the tables drawn: their cells, stripped (a row of a table is a line between │ and │)."""
    return [[cell.strip() for cell in line.strip().strip("│").split("│")] for line in text.splitlines()
            if line.strip().startswith("│")]


def test_preview_explain_on_a_terminal_draws_a_table_of_each_field_its_value_source_branch_and_coercion(tmp_path: Path) -> None:
    mapping, events = explained_files(tmp_path)
    terminal = Terminal()
    code, _, drawn = ended(terminal.run("preview", "-m", mapping, events, "--explain", on="stdout"), terminal)
    assert code == 0, drawn
    assert "event 0 · explained · Usage events (send_event): ok" in drawn and "event 1 · explained" in drawn
    headers = [line for line in drawn.splitlines() if line.startswith("┃")]
    assert [cell.strip() for cell in headers[0].strip("┃").split("┃")] == ["field", "value", "source", "branch", "coercion"]
    first, second = rows(drawn)[:5], rows(drawn)[5:]
    assert first == [
        ["transaction_id", '"m-1"', "$.messageId", "", ""],
        ["customer_id", '"anon-7"', "@if(exists $.userId, then $.userId, else $.anonymousId)", "else: $.userId is missing", ""],
        ["timestamp", '"2026-11-26T09:00:00.000Z"', "$.timestamp", "",
         'normalised datetime: "2026-11-26T10:00:00+01:00" → "2026-11-26T09:00:00.000Z"'],
        ["event_type", '"api_call"', "@coalesce($.properties.kind, $.event)", "option 2: $.event", ""],
        ["properties", '{"tokens":120,"note":"[bold]not markup[/bold]"}', "$.properties", "", ""],
    ]
    assert second[1] == ["customer_id", '"1234"', "@if(exists $.userId, then $.userId, else $.anonymousId)",
                         "then: $.userId exists (present and not null)", 'number_to_string: 1234 → "1234"']
    assert second[4] == ["properties", "(missing)", "$.properties", "", "null_to_missing: null → (missing)"]
    assert drawn.lstrip().startswith("event 0"), "no JSON line before the tables"


def test_preview_explain_json_on_a_terminal_is_byte_for_byte_what_a_pipe_gets(tmp_path: Path) -> None:
    mapping, events = explained_files(tmp_path)
    piped = subprocess.run([sys.executable, "-m", "engine.cli", "preview", "-m", str(mapping), str(events), "--explain"],
                           cwd=REPO, env=environment(), capture_output=True, timeout=_HUNG)
    assert piped.returncode == 0, piped.stderr
    lines = [orjson.loads(line) for line in piped.stdout.splitlines()]
    assert [line["explain"]["customer_id"]["taken"] for line in lines] == ["else", "then"], "the pipe gets the JSON lines"
    terminal = Terminal(raw=True)
    code, _, _ = ended(terminal.run("preview", "-m", mapping, events, "--explain", "--json", on="stdout"), terminal)
    assert code == 0
    assert bytes(terminal.drawn) == piped.stdout
    again = subprocess.run([sys.executable, "-m", "engine.cli", "preview", "-m", str(mapping), str(events), "--explain", "--json"],
                           cwd=REPO, env=environment(), capture_output=True, timeout=_HUNG)
    assert again.stdout == piped.stdout


def test_a_note_key_the_table_does_not_know_is_shown_under_notes() -> None:
    """The notes are read generically: a key added to them later (a template's missing placeholders, say) shows as it is."""
    note = {"from": '@template("{{event}}.{{properties.region}}")', "found": True, "missing": ["properties.region"],
            "parts": [{"from": "$.event", "found": True, "checked": {"rule": "maxLength 128"}}]}
    outcome = Outcome("Usage events", "send_event", "ok", {"event_type": "compute_seconds."}, explain={"event_type": note})
    out = io.StringIO()
    ExplainTables(out, width=COLUMNS).outcome(3, "metronome", outcome)
    drawn = rows(out.getvalue())
    assert drawn[0][:3] == ["event_type", '"compute_seconds."', '@template("{{event}}.{{properties.region}}")']
    assert [row[-1] for row in drawn] == ["missing: properties.region", '$.event: checked: {"rule":"maxLength 128"}']
