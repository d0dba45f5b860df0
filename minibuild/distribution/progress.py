"""Progress reports of pulls and pushes (moby pkg/progress/progress.go, progressreader.go).

Pull and push describe what they do as `Progress` records sent to an `Output`: a plain message
(`Pulling from library/busybox`, id `latest`), an action on a layer (`Pulling fs layer`, id = 12 hex
of its digest) or a transfer's progress (`Downloading`, current/total bytes). The daemon's JSON progress
writer (moby's streamformatter, minibuild.api.streamformatter, where the record type lives) turns each
record into a stream message; `MessageCollector` here turns them into the same JSON message dicts for
callers that want them as data.
"""

import time
from collections.abc import Callable
from typing import Any, Protocol

from minibuild.api.streamformatter import Progress, progress_message


class Output(Protocol):
    """progress.Output: where updates go (the daemon's JSON stream writer in production)."""

    def write_progress(self, prog: Progress) -> None: ...


def message(out: Output, id: str, text: str) -> None:
    """progress.Message: `{"status":"Digest: sha256:…"}`, `{"status":"Pulling from x","id":"latest"}`."""
    out.write_progress(Progress(id=id, message=text))


def update(out: Output, id: str, action: str) -> None:
    """progress.Update: an action without counts: `{"status":"Pulling fs layer","progressDetail":{},…}`."""
    out.write_progress(Progress(id=id, action=action))


def transfer(out: Output, id: str, action: str, current: int, total: int, last: bool = False) -> None:
    """A progress reader's update: `Downloading`/`Pushing` with byte counts."""
    out.write_progress(Progress(id=id, action=action, current=current, total=total, last_update=last))


def aux(out: Output, data: Any) -> None:
    """progress.Aux: out-of-band data (a push reports `{"Tag","Digest","Size"}` this way)."""
    out.write_progress(Progress(aux=data))


class MessageCollector:
    """An Output that keeps JSON message dicts in order (and optionally hands each to a callback)."""

    def __init__(self, callback: Callable[[dict], None] | None = None) -> None:
        self.messages: list[dict] = []
        self.callback = callback

    def write_progress(self, prog: Progress) -> None:
        msg = progress_message(prog).to_dict()  # the stream's message, as a dict (Go's key order)
        self.messages.append(msg)
        if self.callback is not None:
            self.callback(msg)

    def statuses(self) -> list[tuple[str, str]]:
        """(id, status) of every message: what tests and transcripts compare."""
        return [(m.get("id", ""), m.get("status", "")) for m in self.messages]


class NullOutput:
    """Discards progress (a caller that only wants the result)."""

    def write_progress(self, prog: Progress) -> None:
        return None


class ProgressReader:
    """progress.NewProgressReader: counts bytes as they pass and reports at most every 100 ms,
    always on the last byte, like Docker does for `Downloading` and `Pushing`."""

    def __init__(self, out: Output, id: str, action: str, total: int) -> None:
        self.out, self.id, self.action, self.total = out, id, action, total
        self.current = 0
        self._last_report = 0.0

    def advance(self, n: int) -> None:
        self.current += n
        now = time.monotonic()
        done = self.total > 0 and self.current >= self.total
        if done or now - self._last_report >= 0.1:
            self._last_report = now
            transfer(self.out, self.id, self.action, self.current, self.total, last=done)
