"""``actionmap send``: events in, delivered to every connection, one summary out.

Each connection is a *lane*, a thread that feeds its own :class:`~engine.delivery.batcher.Batcher`,
so a destination that is down, slow or refusing its credential never holds up
another. From a file, every lane reads the file itself (memory stays flat
however far apart the lanes are); from a pipe, one reader hands each event to
every lane through a bounded buffer (``LANE_BUFFER`` events), so a lane that
falls that far behind holds the reader.

Every event counts once per connection in exactly one of: delivered, filtered,
invalid, dead-lettered or kept (not sent: a refused credential, a dry run, a
stop); the totals add the connections' counts.
"""

from __future__ import annotations

import io
import math
import os
import queue
import stat
import sys
import threading
from contextlib import AbstractContextManager, ExitStack, contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence

import orjson

from engine.config.mappingfile import MappingFile
from engine.delivery.deadletters import DeadLetterFile, json_text
from engine.delivery import Sender
from engine.delivery.accounting import Fate, Summary, Tally
from engine.delivery.batcher import Batcher
from engine.events import BadInput, Event, Item
from engine.limits import event_problem

if TYPE_CHECKING:
    from rich.progress import Progress as RichProgress

LANE_BUFFER = 10_000
"""Events a lane may fall behind the reader of a pipe before the reader waits for it."""
PROGRESS_EVERY = 0.25
"""Seconds between redraws of the progress (and between looks at whether the lanes are done)."""

Feed = Callable[[], AbstractContextManager[Iterable[Item]]]
"""Opens the input once more: every lane of a file reads it for itself."""


class Progress:
    """``send``'s progress on stderr, drawn by rich while it runs, erased at the end (the caller then says the summary).

    A bar with its rate and time remaining when the input's size is known (a file:
    how far its slowest reader is, in bytes, out of its size), a counter otherwise (a
    pipe, a replay); nothing at all when stderr is not a terminal, so a log or a pipe
    gets the summary line alone. Counts are the slowest connection's, as the bar is.
    Only the thread that runs :func:`deliver` calls it; stdout is never touched.
    """

    def __init__(self, stream: IO[str] | None = None, wanted: bool = True) -> None:
        self.stream = stream or sys.stderr  # read when made, not at import: a test's captured stderr may be gone by then
        self.enabled = wanted and self.stream.isatty()
        self._size: int | None = None
        self._read: list[int] = []  # bytes read so far by each reading of the file
        self._open: dict[int, int] = {}  # the file descriptor of each reading still open, by its place in _read
        self._display: RichProgress | None = None

    @contextmanager
    def reading(self, stream: IO[Any]) -> Iterator[None]:
        """While ``stream`` (a lane's reading of the input) is open, its position in the file is the bar's progress."""
        fd = _regular_file(stream) if self.enabled else None
        if fd is None:
            yield
            return
        self._size = os.fstat(fd).st_size
        place = len(self._read)
        self._read.append(0)
        self._open[place] = fd
        try:
            yield
        finally:  # the last position is kept: the descriptor is about to be closed, and may be reused
            self._read[place] = os.lseek(fd, 0, os.SEEK_CUR)
            del self._open[place]

    def show(self, summary: Summary, final: bool = False) -> None:
        """The progress so far, redrawn in place; the final call erases it."""
        if not self.enabled or (final and self._display is None):
            return
        if self._display is None:
            self._display = _display(self.stream, self._size)
            self._display.start()
        self._update(summary)
        if final:
            self._display.stop()
            self._display = None
        else:
            self._display.refresh()

    def _update(self, summary: Summary) -> None:
        assert self._display is not None
        for place, fd in self._open.items():
            self._read[place] = os.lseek(fd, 0, os.SEEK_CUR)  # the kernel's place in the file: the reader is not disturbed
        slowest = min(summary.connections.values(), key=lambda tally: tally.events, default=Tally())
        trouble = {"invalid": slowest.invalid, "dead-lettered": slowest.dead_lettered, "kept": slowest.kept}
        fates = ", ".join(f"{n:,} {name}" for name, n in trouble.items() if n)  # what did not go through, as it happens
        completed = min(self._read, default=0) if self._size is not None else slowest.events
        self._display.update(self._display.task_ids[0], completed=completed, events=slowest.events, fates=fates)


def _regular_file(stream: IO[Any]) -> int | None:
    """The file descriptor under ``stream`` (through gzip too) when it is a regular file of known size; None for a pipe."""
    try:
        fd = stream.fileno()
        info = os.fstat(fd)
    except (OSError, ValueError, io.UnsupportedOperation):
        return None
    return fd if stat.S_ISREG(info.st_mode) and info.st_size > 0 else None


def _display(stream: IO[str], size: int | None) -> RichProgress:
    """rich's progress display on one line: bar, percentage, events and their rate, time remaining (size known); else a counter."""
    from rich.console import Console
    from rich.progress import (BarColumn, Progress as Rich, ProgressColumn, SpinnerColumn, Task, TaskProgressColumn, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)
    from rich.table import Column
    from rich.text import Text

    line = Column(no_wrap=True, overflow="ellipsis")  # one line however narrow the terminal: a wrapped line is not redrawn cleanly

    class Events(ProgressColumn):
        """Events settled and their rate since delivery began (the bar counts bytes; a person counts events)."""

        def render(self, task: Task) -> Text:
            events = task.fields["events"]
            rate = f"{events / task.elapsed:,.0f}" if task.elapsed else "-"
            return Text(f"{events:,} events, {rate}/s", style="progress.data.speed")

    fates = TextColumn("{task.fields[fates]}", style="yellow", table_column=line)
    if size is None:
        columns: tuple[ProgressColumn, ...] = (SpinnerColumn(table_column=line), Events(table_column=line),
                                               TimeElapsedColumn(table_column=line), fates)
    else:
        columns = (BarColumn(bar_width=24, table_column=line), TaskProgressColumn(table_column=line), Events(table_column=line),
                   TextColumn("eta", table_column=line), TimeRemainingColumn(table_column=line), fates)
    display = Rich(*columns, console=Console(file=stream), auto_refresh=False, transient=True,
                   redirect_stdout=False, redirect_stderr=False)  # stdout is the JSON summary's: nothing is redirected
    display.add_task("send", total=size, events=0, fates="")
    return display


_END = object()
_QUIET = object()


class _Lane(threading.Thread):
    """One connection's thread: takes events, feeds the batcher, counts and dead-letters each fate."""

    def __init__(self, batcher: Batcher, take: Callable[[], Any], dead: DeadLetterFile, tally: Tally,
                 writes_unreadable: bool, stop: threading.Event) -> None:
        super().__init__(name=f"actionmap-lane-{batcher.connection}", daemon=True)
        self.batcher, self.take, self.dead, self.tally = batcher, take, dead, tally
        self.writes_unreadable = writes_unreadable
        self.stop = stop
        self.error: BaseException | None = None
        self.done = threading.Event()  # awaited instead of join(): a Ctrl-C inside Thread.join can leave it returning early

    def run(self) -> None:
        try:
            self._run()
        except BaseException as error:  # reading failed (bad gzip, I/O): raised again where the lanes are awaited
            self.error = error
        finally:
            self.done.set()

    def _run(self) -> None:
        batcher = self.batcher
        while not self.stop.is_set():
            item = self.take()
            if item is _END:
                break
            if item is _QUIET:  # the pipe went quiet: what waits leaves now
                self._settle(batcher.flush())
                continue
            if isinstance(item, BadInput):
                fate = batcher.unreadable(item.position, f"input line {item.line}: {item.message}", item.raw)
                self.tally.count(fate)
                if self.writes_unreadable:
                    self.dead.write(fate.letters[0])
                continue
            self._settle(batcher.add(item.position, item.value))
        self._settle(batcher.flush())

    def _settle(self, fates: list[Fate]) -> None:
        for fate in fates:
            self.tally.count(fate)
            for letter in [*fate.letters, *fate.waiting.values()]:
                self.dead.write(letter)
        self.tally.requests = self.batcher.requests


def _from(items: Iterator[Item]) -> Callable[[], Any]:
    return lambda: next(items, _END)


def _fan_out(items: Iterable[Item], lanes: int, linger: float | None) -> list[Callable[[], Any]]:
    """One reader thread handing every item to each lane's bounded buffer; a lane's take gives _QUIET after ``linger`` of quiet."""
    buffers: list[queue.Queue[Any]] = [queue.Queue(maxsize=LANE_BUFFER) for _ in range(lanes)]

    def read() -> None:
        try:
            for item in items:
                for buffer in buffers:
                    buffer.put(item)
            end: Any = _END
        except BaseException as error:
            end = error
        for buffer in buffers:
            buffer.put(end)

    threading.Thread(target=read, name="actionmap-reader", daemon=True).start()

    def taker(buffer: queue.Queue[Any]) -> Callable[[], Any]:
        def take() -> Any:
            try:
                item = buffer.get(timeout=linger)
            except queue.Empty:
                return _QUIET
            if isinstance(item, BaseException):
                raise item
            return item
        return take

    return [taker(buffer) for buffer in buffers]


def deliver(
    batchers: Sequence[Batcher],
    dead: DeadLetterFile,
    *,
    feed: Feed | None = None,
    items: Iterable[Item] | None = None,
    linger: float | None = None,
    progress: Progress | None = None,
    stop: threading.Event | None = None,
) -> Summary:
    """Run every connection's lane over the input until it ends (or ``stop`` is set) and return the summary.

    Give ``feed`` for input that can be opened again (a file: each lane reads it)
    or ``items`` for input read once (a pipe, library mode). ``linger`` sends the
    open batches once the input has been quiet that long. ``stop`` (Ctrl-C) ends
    reading; what waits is sent if it can go at once and kept otherwise.
    """
    stop = stop or threading.Event()
    summary = Summary({b.connection: Tally() for b in batchers})
    try:
        with ExitStack() as readings:
            if feed is not None:
                takes = [_from(iter(readings.enter_context(feed()))) for _ in batchers]
            elif len(batchers) == 1 and linger is None:
                takes = [_from(iter(items or ()))]
            else:
                takes = _fan_out(items or (), len(batchers), linger)
            lanes = [_Lane(b, take, dead, summary.connections[b.connection], i == 0, stop)
                     for i, (b, take) in enumerate(zip(batchers, takes))]
            for lane in lanes:
                lane.start()
            try:
                if progress:
                    progress.show(summary)  # drawn from the start: its clock (the rate) starts with delivery
                for lane in lanes:
                    while not lane.done.wait(PROGRESS_EVERY):
                        if progress:
                            progress.show(summary)
            except KeyboardInterrupt:
                stop.set()
                summary.interrupted = True
                for lane in lanes:
                    lane.done.wait()
    finally:  # the display is erased (and the cursor shown again) however delivery ended
        if progress:
            progress.show(summary, final=True)
    summary.refused = {lane.batcher.connection: lane.batcher.refused for lane in lanes if lane.batcher.refused}
    errors = [lane.error for lane in lanes if lane.error is not None]
    if errors:
        raise errors[0]
    return summary


def _checked(position: int, value: Any) -> Item:
    """A value given in library mode, held to the same limits as events read from text, and kept as text when refused.

    Its orjson text makes the common case one count, as for events read from text;
    only a value orjson refuses (or one with many brackets, or a null that may be a
    NaN or infinity orjson wrote as null) is walked.
    """
    try:
        text = orjson.dumps(value)
        problem = event_problem(value, text) or (_non_finite(value) if b"null" in text else None)
    except TypeError:  # a lone surrogate, an integer past 64 bits, 255+ levels
        problem = event_problem(value) or "the event cannot be encoded as JSON (a lone surrogate in a string?)"
    if problem is None:
        return Event(position, position + 1, value)
    return BadInput(position, position + 1, problem, json_text(value))


def _non_finite(value: Any) -> str | None:
    """Why a value cannot be sent as it is: JSON has no NaN or infinity (orjson would write null, changing the data)."""
    stack = [value]
    while stack:
        one = stack.pop()
        if type(one) is float and not math.isfinite(one):
            return f"the event holds {one!r}, which JSON cannot write (it would become null): send a number or null"
        if type(one) is dict:
            stack.extend(one.values())
        elif type(one) is list:
            stack.extend(one)
    return None


def send_events(
    mapping_file: MappingFile,
    events: Iterable[Any],
    *,
    dead_letters: str | Path | None = None,
    sender: Sender | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
    linger: float | None = None,
) -> Summary:
    """Library mode: map and deliver ``events`` (parsed JSON values, or :class:`Event` s) to one connection.

    Dead letters are appended to ``dead_letters`` when a path is given; a ``sender``
    may be passed to choose its retry policy, pace or HTTP client (it is not closed).
    """
    own = sender is None
    sender = sender or Sender(mapping_file)
    items = (e if isinstance(e, (Event, BadInput)) else _checked(i, e) for i, e in enumerate(events))
    try:
        with DeadLetterFile(dead_letters, mapping_file.settings) as dead:
            return deliver([Batcher(mapping_file, sender, now=now)], dead, items=items, linger=linger)
    finally:
        if own:
            sender.close()

