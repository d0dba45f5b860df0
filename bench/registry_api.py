"""Push and pull through the daemon's API (POST /images/{name}/push, /images/create?fromImage=) against a
local registry (Debian's docker-registry on 127.0.0.1), beside the same transfers made by calling the
registry service directly: the difference is what the API and its JSON progress stream cost.

    .venv/bin/python bench/registry_api.py [--size-mb 64]

The image has one large layer of random bytes (gzip cannot shrink them) and ten small ones. Prints wall
time, MB/s and how many progress messages each API call streamed.
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

from minibuild.api.daemon import embedded_daemon  # noqa: E402
from minibuild.client import APIClient  # noqa: E402
from minibuild.distribution import RegistryService  # noqa: E402
from minibuild.image.reference import parse_normalized_named  # noqa: E402
from minibuild.image.service import ImageService  # noqa: E402


def report(label: str, size: int, elapsed: float, messages: int | None = None) -> None:
    rate = f"{size / elapsed / 1e6:8.1f} MB/s" if size else " " * 13
    count = f"  {messages:5d} messages" if messages is not None else ""
    print(f"{label:<36} {elapsed:7.2f} s  {rate}{count}")


def through_api(call) -> tuple[float, int, dict]:
    """(seconds, messages, last message) of a streamed API call, read to its end."""
    start = time.perf_counter()
    with call() as response:
        messages = list(response.messages())
    elapsed = time.perf_counter() - start
    if "error" in messages[-1]:
        raise SystemExit(f"the daemon failed: {messages[-1]['error']}")
    return elapsed, len(messages), messages[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=64, help="size of the large layer (MB)")
    args = parser.parse_args()
    size = args.size_mb * 1_000_000
    layers = [{"big.bin": os.urandom(size)}] + [{f"small{i}": os.urandom(10_000)} for i in range(10)]
    total = size + 10 * 10_000
    with tempfile.TemporaryDirectory(prefix="minibuild-bench-") as tmp, run_registry("none") as registry:
        root = Path(tmp)
        print(f"image: {len(layers)} layers, {total / 1e6:.1f} MB of file content")

        # Directly through the registry service, as a baseline.
        service, images = RegistryService(root / "direct" / "distribution"), ImageService(root / "direct")
        image_id = make_image(images, layers)
        direct = f"{registry.host}/bench/direct:v1"
        images.add_reference(parse_normalized_named(direct), image_id)
        start = time.perf_counter()
        asyncio.run(service.push(images, direct))
        report("push, registry service", total, time.perf_counter() - start)
        service, images = RegistryService(root / "direct2" / "distribution"), ImageService(root / "direct2")
        start = time.perf_counter()
        asyncio.run(service.pull(images, direct))
        report("pull, registry service", total, time.perf_counter() - start)

        # The same through the API of a running daemon.
        name = f"{registry.host}/bench/api"
        with embedded_daemon(root / "source") as source, embedded_daemon(root / "fresh") as fresh:
            source_images = source.daemon.image_service
            api_image = make_image(source_images, layers)
            source_images.add_reference(parse_normalized_named(f"{name}:v1"), api_image)
            with APIClient(source.host) as client:
                elapsed, count, _ = through_api(lambda: client.image_push(f"{name}:v1"))
                report("push, POST /images/{name}/push", total, elapsed, count)
                elapsed, count, _ = through_api(lambda: client.image_push(f"{name}:v1"))
                report("push again (all layers exist)", 0, elapsed, count)
            with APIClient(fresh.host) as client:
                elapsed, count, _ = through_api(lambda: client.image_pull(f"{name}:v1"))
                report("pull, POST /images/create", total, elapsed, count)
                elapsed, count, _ = through_api(lambda: client.image_pull(f"{name}:v1"))
                report("pull again (image up to date)", 0, elapsed, count)
                assert client.image_inspect(f"{name}:v1")["Id"] == api_image == image_id, "not the same image"


if __name__ == "__main__":
    main()
