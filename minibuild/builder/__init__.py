"""The builders (moby builder/builder.go): the classic one in `minibuild.builder.dockerfile`, the context
they both read in `minibuild.builder.remotecontext`.

What a builder gets from the daemon is `BuildComponents` (moby passes a `builder.Backend`): the image
service (images, layers, references), the registry service (pulls of missing base images), a
snapshotter (a writable root for each step) and the runtime (RUN). What it hands back is a `Result`:
the image ID and the image the last stage started from (squash needs it).
"""

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from minibuild import errdefs
from minibuild.distribution import RegistryService
from minibuild.image.service import ImageService
from minibuild.runtime import Runtime
from minibuild.snapshot import Snapshotter

T = TypeVar("T")


@dataclass
class BuildComponents:
    """The daemon's services a build uses; `tmp_dir` holds contexts and diffs while a build runs."""

    image_service: ImageService
    registry: RegistryService
    snapshotter: Snapshotter
    runtime: Runtime
    tmp_dir: Path
    # Per-image cache of COPY --from path hashes, for the daemon's lifetime (moby's pathCache).
    path_cache: dict[str, str] = field(default_factory=dict)


@dataclass
class Result:
    """builder.Result: the built image and the image its last stage started from (None: scratch)."""

    image_id: str
    from_image: Any = None


async def run_in_thread(fn: Callable[..., T], *args: Any, discard: Callable[[T], Any] | None = None) -> T:
    """Run blocking work in a thread; if we are cancelled meanwhile, wait for it before re-raising.

    A thread cannot be interrupted: returning early would let cleanup race with work still writing
    into a snapshot. When the work made something its caller will now never get (a snapshot), it is
    handed to `discard`.
    """
    task = asyncio.ensure_future(asyncio.to_thread(fn, *args))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        while not task.done():
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError:
                continue
            except Exception:
                break
        if discard is not None and task.done() and not task.cancelled() and task.exception() is None:
            discard(task.result())
        raise


def source_date_epoch(build_args: dict[str, str | None], environ: dict[str, str] | None = None) -> int | None:
    """SOURCE_DATE_EPOCH from the build args, else from the daemon's environment (as BuildKit takes it)."""
    value = build_args.get("SOURCE_DATE_EPOCH")
    if value is None:
        value = (os.environ if environ is None else environ).get("SOURCE_DATE_EPOCH")
    if value is None or value == "":
        return None
    epoch = int(value) if value.isdigit() else -1
    if epoch < 0:
        raise errdefs.InvalidParameter(f'invalid SOURCE_DATE_EPOCH "{value}": expected Unix seconds')
    return epoch


def created_ns(epoch: int | None) -> int:
    """An image's created time: SOURCE_DATE_EPOCH when given (reproducible), else now."""
    return epoch * 1_000_000_000 if epoch is not None else time.time_ns()
