"""Push and pull throughput against a local registry (Debian's docker-registry on 127.0.0.1).

    .venv/bin/python bench/registry_transfer.py [--size-mb 64]

Makes an image of one large layer (random bytes: gzip cannot shrink them) plus ten small ones, pushes it
monolithically and in 5 MiB chunks, then pulls it into a fresh store, and prints wall time and MB/s for
each, with the figures for a second pull (nothing to fetch) and a second push (every layer already there).
"""

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from registry_fixture import make_image, run_registry  # noqa: E402

from minibuild.distribution import RegistryService  # noqa: E402
from minibuild.distribution.images import pull_image, push_image  # noqa: E402
from minibuild.image.reference import parse_normalized_named  # noqa: E402
from minibuild.image.service import ImageService  # noqa: E402


def timed(label: str, size: int, coro) -> object:
    start = time.perf_counter()
    result = asyncio.run(coro)
    elapsed = time.perf_counter() - start
    rate = f"{size / elapsed / 1e6:8.1f} MB/s" if size else " " * 13
    print(f"{label:<40} {elapsed:7.2f} s  {rate}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=64, help="size of the large layer (MB)")
    args = parser.parse_args()
    size = args.size_mb * 1_000_000
    with tempfile.TemporaryDirectory(prefix="minibuild-bench-") as tmp, run_registry("none") as registry:
        root = Path(tmp)
        src_service = RegistryService(root / "src" / "distribution")
        src = ImageService(root / "src")
        layers = [{"big.bin": os.urandom(size)}] + [{f"small{i}": os.urandom(10_000)} for i in range(10)]
        image_id = make_image(src, layers)
        total = size + 10 * 10_000
        print(f"image: {len(layers)} layers, {total / 1e6:.1f} MB of file content")
        for name, chunk in (("mono", None), ("chunked", 5 << 20)):
            ref = f"{registry.host}/bench/{name}:v1"
            src.add_reference(parse_normalized_named(ref), image_id)
            mode = "monolithic" if chunk is None else "chunked (5 MiB PATCHes)"
            timed(f"push, {mode}", total, push_image(src_service, src, ref, chunk_size=chunk))
        ref = f"{registry.host}/bench/mono:v1"
        timed("push again (all layers exist)", 0, push_image(src_service, src, ref))
        dst_service = RegistryService(root / "dst" / "distribution")
        dst = ImageService(root / "dst")
        pulled = timed("pull into an empty store", total, pull_image(dst_service, dst, ref))
        assert pulled == image_id, "the pulled image must be the pushed one"
        timed("pull again (image up to date)", 0, pull_image(dst_service, dst, ref))


if __name__ == "__main__":
    main()
