"""`--progress plain|tty`: BuildKit's progress displays (buildkit util/progress/progressui: printer.go,
display.go).

Both read the same thing: StatusResponses decoded from `moby.buildkit.trace` messages.

* `PlainPrinter` writes a log, as `--progress plain` does: `#5 [2/3] COPY hello.txt /hello.txt`, the
  step's output lines with their time since it started (`#6 0.245 hello`), sub-steps
  (`#7 exporting layers 0.1s done`), then `#5 DONE 0.1s`, `#4 CACHED`, `#6 ERROR: …` or `#6 CANCELED`;
  a failed step's last lines are repeated at the end between `------` rules.
* `TTYDisplay` redraws a live view on a terminal: `[+] Building 1.2s (7/9)`, one line per step with its
  time, the last lines of output of running steps under them.

`minibuild build` (minibuild.cli.progress) picks one by `--progress`.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

from minibuild.builder.next.progress import CANCELED, StatusResponse, Vertex, VertexStatus

_TAIL = 6  # log lines a failed (or, on a terminal, running) step shows


@dataclass
class _Step:
    """What a display knows about one vertex."""

    vertex: Vertex
    index: int = 0
    statuses: dict[str, VertexStatus] = field(default_factory=dict)
    status_order: list[str] = field(default_factory=list)
    lines: list[tuple[float, str]] = field(default_factory=list)  # (timestamp, complete line)
    partial: bytes = b""
    partial_time: float = 0.0


class _Trace:
    """The build so far: steps by digest, in order of first appearance."""

    def __init__(self) -> None:
        self.steps: dict[str, _Step] = {}

    def step(self, digest: str) -> _Step:
        if digest not in self.steps:
            self.steps[digest] = _Step(Vertex(digest))
        return self.steps[digest]

    def update(self, sr: StatusResponse) -> list[tuple[str, str, object]]:
        """Apply a message; the events in it, in order: ("vertex"|"status"|"log", digest, detail)."""
        events: list[tuple[str, str, object]] = []
        for v in sr.vertexes:
            step = self.step(v.digest)
            step.vertex = v
            events.append(("vertex", v.digest, v))
        for s in sr.statuses:
            step = self.step(s.vertex)
            if s.id not in step.statuses:
                step.status_order.append(s.id)
            step.statuses[s.id] = s
            events.append(("status", s.vertex, s))
        for log in sr.logs:
            step = self.step(log.vertex)
            data = step.partial + log.data
            *complete, step.partial = data.split(b"\n")
            if step.partial and not complete:
                step.partial_time = step.partial_time or (log.timestamp or 0.0)
            new = [(log.timestamp or 0.0, line.decode("utf-8", "replace")) for line in complete]
            step.lines += new
            events += [("log", log.vertex, line) for line in new]
        return events


def _amount(s: VertexStatus) -> str:
    """A sub-step's byte counts as BuildKit prints them: ` 1.05MB / 2.15MB` (nothing when it has none)."""
    current = f" {_bytes(s.current)}" if s.current or s.total else ""
    return current + (f" / {_bytes(s.total)}" if s.total else "")


def _bytes(n: int) -> str:
    """tonistiigi/units Bytes with %.2f: decimal units, whole bytes below 1000 (`0B`, `512B`, `2.15MB`)."""
    if n < 1000:
        return f"{n}B"
    value, units = n / 1000, ["kB", "MB", "GB", "TB", "PB", "EB"]
    while value >= 1000 and len(units) > 1:
        value /= 1000
        units.pop(0)
    return f"{value:.2f}{units[0]}"


class PlainPrinter:
    """`--progress plain` (printer.go's textMux)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.trace = _Trace()
        self.current = ""
        self.next_index = 1
        self.failed: list[_Step] = []

    def write_trace(self, data: bytes) -> None:
        self.write(StatusResponse.unmarshal(data))

    def write(self, sr: StatusResponse) -> None:
        """Print what changed, vertex by vertex (printVtx): header, sub-steps, output, then its end."""
        events = self.trace.update(sr)
        order: list[str] = []
        for _kind, digest, _detail in events:
            if digest not in order:
                order.append(digest)
        for digest in order:
            step = self.trace.steps[digest]
            mine = [(kind, detail) for kind, d, detail in events if d == digest]
            if not any(kind != "vertex" for kind, _ in mine) and step.vertex.started is None:
                continue  # announced only: shown once something happens to it
            self._header(step)
            for kind, detail in mine:
                if kind == "status":
                    self._status(step, detail)  # type: ignore[arg-type]
                elif kind == "log":
                    self._log(step, detail)  # type: ignore[arg-type]
            if any(kind == "vertex" for kind, _ in mine):
                self._end(step)
        self.out.flush()

    def _header(self, step: _Step) -> None:
        """Switch the log to `step`: `#N name`, preceded by a blank line (and `#M ...` for the one left)."""
        if step.index == 0:
            step.index = self.next_index
            self.next_index += 1
        if self.current == step.vertex.digest:
            return
        if self.current:
            left = self.trace.steps[self.current]
            if left.vertex.completed is None:
                self.out.write(f"#{left.index} ...\n")
        self.out.write(f"\n#{step.index} {step.vertex.name}\n")
        self.current = step.vertex.digest

    def _end(self, step: _Step) -> None:
        """`#N DONE 0.3s`, `#N CACHED`, `#N ERROR: …` or `#N CANCELED` once the vertex completed."""
        v = step.vertex
        if v.completed is None:
            return
        if v.error:
            if v.error.endswith(CANCELED):
                self.out.write(f"#{step.index} CANCELED\n")
            else:
                self.out.write(f"#{step.index} ERROR: {v.error}\n")
                self.failed.append(step)
        elif v.cached:
            self.out.write(f"#{step.index} CACHED\n")
        else:
            elapsed = v.completed - v.started if v.started is not None else 0.0
            self.out.write(f"#{step.index} DONE {elapsed:.1f}s\n")
        self.current = ""

    def _status(self, step: _Step, s: VertexStatus) -> None:
        amount = _amount(s)
        end = s.completed if s.completed is not None else s.timestamp
        took = ""
        if s.started is not None and end is not None and end - s.started > 0.01:
            took = f" {end - s.started:.1f}s"
        done = " done" if s.completed is not None else ""
        self.out.write(f"#{step.index} {s.id}{amount}{took}{done}\n")

    def _log(self, step: _Step, line: tuple[float, str]) -> None:
        started = step.vertex.started if step.vertex.started is not None else line[0]
        self.out.write(f"#{step.index} {max(line[0] - started, 0.0):.3f} {line[1]}\n")

    def close(self) -> None:
        """The summary of failed steps: their last lines of output between rules."""
        for step in self.failed:
            self.out.write("------\n")
            self.out.write(f" > {step.vertex.name}:\n")
            for _ts, text in step.lines[-_TAIL:]:
                self.out.write(f"#{step.index} {text}\n")
            self.out.write("------\n")
        self.out.flush()


class TTYDisplay:
    """`--progress tty` (display.go): the whole build redrawn in place, at most 10 frames a second, and
    every `tick` seconds even when nothing happens (the running steps' times move on)."""

    def __init__(
        self,
        out: TextIO,
        *,
        clock: Callable[[], float] = time.time,
        width: int | None = None,
        tick: float | None = 0.1,
    ) -> None:
        self.out = out
        self.clock = clock
        self.width = width or shutil.get_terminal_size((80, 24)).columns
        self.trace = _Trace()
        self.start = clock()
        self.lines_drawn = 0
        self.last_draw = 0.0
        self.done = False
        self._lock = threading.Lock()  # the ticker and the stream both draw
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        if tick is not None:
            self._ticker = threading.Thread(target=self._tick, args=(tick,), name="progress-tty", daemon=True)
            self._ticker.start()

    def _tick(self, interval: float) -> None:
        while not self._stop.wait(interval):
            with self._lock:
                self.draw()

    def write_trace(self, data: bytes) -> None:
        self.write(StatusResponse.unmarshal(data))

    def write(self, sr: StatusResponse) -> None:
        with self._lock:
            self.trace.update(sr)
            now = self.clock()
            if now - self.last_draw >= 0.1:
                self.draw()
                self.last_draw = now

    def close(self) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        with self._lock:
            self.done = True
            self.draw()

    def frame(self) -> list[str]:
        """The lines of one frame."""
        steps = [s for s in self.trace.steps.values() if s.vertex.started is not None or s.vertex.cached]
        finished = sum(1 for s in steps if s.vertex.completed is not None)
        total = sum(1 for s in self.trace.steps.values() if s.vertex.name)
        elapsed = self.clock() - self.start
        state = " FINISHED" if self.done and all(s.vertex.completed is not None for s in steps) else ""
        lines = [f"[+] Building {elapsed:.1f}s ({finished}/{total}){state}"]
        for step in steps:
            v = step.vertex
            end = v.completed if v.completed is not None else self.clock()
            took = f"{max(end - (v.started or end), 0.0):.1f}s"
            prefix = (
                "CACHED " if v.cached else ("ERROR " if v.error and not v.error.endswith(CANCELED) else "")
            )
            if v.error.endswith(CANCELED) and v.error:
                prefix = "CANCELED "
            lines.append(self._row(" => " + prefix + v.name, took))
            for sid in step.status_order:
                s = step.statuses[sid]
                s_end = s.completed if s.completed is not None else self.clock()
                took = f"{max(s_end - (s.started or s_end), 0.0):.1f}s"
                lines.append(self._row(" => => " + sid + _amount(s), took))
            if v.completed is None or (v.error and not v.error.endswith(CANCELED)):
                tail = [text for _ts, text in step.lines[-_TAIL:]]
                lines += [self._row(" => => # " + text, "") for text in tail]
        return lines

    def _row(self, text: str, right: str) -> str:
        room = self.width - len(right) - 1
        text = text if len(text) <= room else text[: max(room - 3, 0)] + "..."
        return text.ljust(room) + " " + right if right else text[: self.width]

    def draw(self) -> None:
        lines = self.frame()
        if self.lines_drawn:
            self.out.write(f"\x1b[{self.lines_drawn}A")  # back to the top of the last frame
        for line in lines:
            self.out.write("\x1b[K" + line + "\n")
        for _ in range(max(self.lines_drawn - len(lines), 0)):  # a shorter frame: clear what was below
            self.out.write("\x1b[K\n")
        self.lines_drawn = max(len(lines), self.lines_drawn)
        self.out.flush()
