"""Retrying a layer transfer (moby distribution/xfer/download.go and upload.go: the managers' retry loop).

Both transfer managers run a layer's transfer the same way: an attempt that fails is tried again unless
retryOnError marked its error DoNotRetry or the attempts are used up; before the next attempt the layer's
line shows `Retrying in N seconds`, N starting at 5 x the number of failures so far and counted down one
tick (a second in dockerd) at a time. A download resumes where the cut one stopped; an upload starts a
new upload session. Which of the two is the caller's attempt to decide.
"""

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from minibuild.distribution import progress
from minibuild.distribution.errors import DistributionError, DoNotRetry, RegistryError, retry_on_error

T = TypeVar("T")


async def retry_transfer(
    attempt: Callable[[], Awaitable[T]], out: progress.Output, id: str, max_attempts: int, tick: float
) -> T:
    """Run `attempt` until it succeeds, at most `max_attempts` times (the first included).

    The final failure is raised as retryOnError decided it: wrapped in DoNotRetry when trying again could
    not help (refused credentials, an answer that is not the registry's, ...), else the error itself.
    A cancellation is never retried (it is not an Exception).
    """
    failures = 0
    while True:
        try:
            return await attempt()
        except (RegistryError, DistributionError, OSError) as err:
            decided = retry_on_error(err)
            failures += 1
            if isinstance(decided, DoNotRetry) or failures >= max_attempts:
                raise decided
        await count_down(out, id, failures * 5, tick)


async def count_down(out: progress.Output, id: str, delay: int, tick: float) -> None:
    """The retry delay: `Retrying in N seconds`, one message per tick, N counting down to 1."""
    while delay > 0:
        progress.update(out, id, f"Retrying in {delay} second{'s' if delay != 1 else ''}")
        await asyncio.sleep(tick)
        delay -= 1
