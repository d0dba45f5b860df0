"""What walkthrough tracing costs: a marked function with tracing off and on, beside an unmarked one.

    .venv/bin/python bench/trace_overhead.py

Prints nanoseconds per call. Off, a marked call pays one extra Python call and a flag check; on, it
binds its arguments, formats a summary and takes a lock: only while a notebook records a trace.
"""

import asyncio
import time

from minibuild import trace

CALLS = 200_000


def plain(x: int) -> int:
    return x + 1


@trace.traced
def marked(x: int) -> int:
    return x + 1


async def plain_async(x: int) -> int:
    return x + 1


@trace.traced
async def marked_async(x: int) -> int:
    return x + 1


def per_call(fn, calls: int = CALLS) -> float:
    start = time.perf_counter()
    for i in range(calls):
        fn(i)
    return (time.perf_counter() - start) / calls * 1e9


def per_call_async(fn, calls: int = CALLS) -> float:
    async def loop() -> float:
        start = time.perf_counter()
        for i in range(calls):
            await fn(i)
        return (time.perf_counter() - start) / calls * 1e9

    return asyncio.run(loop())


def main() -> None:
    rows = [
        ("sync, unmarked", per_call(plain)),
        ("sync, marked, tracing off", per_call(marked)),
        ("async, unmarked", per_call_async(plain_async)),
        ("async, marked, tracing off", per_call_async(marked_async)),
    ]
    with trace.recording():
        rows.append(("sync, marked, tracing on", per_call(marked, CALLS // 10)))
    for name, ns in rows:
        print(f"{name:<30} {ns:8.0f} ns/call")


if __name__ == "__main__":
    main()
