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

import math
import queue
import sys
import threading
from contextlib import AbstractContextManager, ExitStack
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator, Sequence

import orjson

from engine.config.mappingfile import MappingFile
from engine.delivery.deadletters import DeadLetterFile, json_text
from engine.delivery import Sender
from engine.delivery.accounting import Fate, Summary, Tally
from engine.delivery.batcher import Batcher
from engine.events import BadInput, Event, Item
from engine.limits import event_problem

LANE_BUFFER = 10_000
"""Events a lane may fall behind the reader of a pipe before the reader waits for it."""
PROGRESS_EVERY = 0.25

Feed = Callable[[], AbstractContextManager[Iterable[Item]]]
"""Opens the input once more: every lane of a file reads it for itself."""


class Progress:
    """A one-line progress display on a terminal; silent when output is piped."""

    def __init__(self, stream: IO[str] = sys.stderr) -> None:
        self.stream = stream
        self.enabled = stream.isatty()

    def show(self, summary: Summary, final: bool = False) -> None:
        """The summary so far, redrawn in place; the final call erases it (the caller says the summary once, for good)."""
        if not self.enabled:
            return
        self.stream.write("\r\x1b[K" if final else f"\r{summary.said()}\x1b[K")
        self.stream.flush()


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
            for lane in lanes:
                while not lane.done.wait(PROGRESS_EVERY):
                    if progress:
                        progress.show(summary)
        except KeyboardInterrupt:
            stop.set()
            summary.interrupted = True
            for lane in lanes:
                lane.done.wait()
    summary.refused = {lane.batcher.connection: lane.batcher.refused for lane in lanes if lane.batcher.refused}
    if progress:
        progress.show(summary, final=True)
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

