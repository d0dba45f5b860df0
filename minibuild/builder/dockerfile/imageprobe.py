"""The classic build cache (moby builder/dockerfile/imageprobe.go; image/cache/cache.go, compare.go).

The cache is the image store itself: a step is a hit when the current image has a child image that was
committed with the same container config for that step (its `#(nop)` comment or RUN command line
carries what the step did; for COPY/ADD also the content hash of the sources). Once a step misses,
every later step of the stage misses too (`cache_busted`), as in Docker.

With `cachefrom`, only images related to the given ones count, and steps can also be matched against
the history of an image that has no local parent chain (one loaded from an archive or pulled): the
intermediate images are then re-created from its layers (`restore_cached_image`).
"""

from typing import Any, Protocol

from minibuild import errdefs
from minibuild.image.image import Image, format_time, parse_time
from minibuild.image.service import DOCKER_VERSION, ImageService


class ImageCache(Protocol):
    def get_cache(self, parent_id: str, config: dict[str, Any]) -> str: ...


def compare(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    """Whether two container configs are the same step (moby image/cache/compare.go).

    As in Docker, Image and Hostname are ignored, and so are fields the `#(nop)` comment already
    covers (WorkingDir, Healthcheck, Shell, ...).
    """
    if a is None or b is None or a.get("OpenStdin") or b.get("OpenStdin"):
        return False
    if any(bool(a.get(k)) != bool(b.get(k)) for k in ("AttachStdout", "AttachStderr", "Tty")):
        return False
    if (a.get("User") or "") != (b.get("User") or ""):
        return False
    for key in ("Cmd", "Env", "Entrypoint"):
        if list(a.get(key) or []) != list(b.get(key) or []):
            return False
    labels_a, labels_b = a.get("Labels") or {}, b.get("Labels") or {}
    if len(labels_a) != len(labels_b) or any(labels_b.get(k) != v for k, v in labels_a.items()):
        return False
    for key in ("ExposedPorts", "Volumes"):
        set_a, set_b = a.get(key) or {}, b.get(key) or {}
        if len(set_a) != len(set_b) or any(k not in set_b for k in set_a):
            return False
    return True


class LocalImageCache:
    """Children of the parent image with the same step config; the newest wins (cache.LocalImageCache)."""

    def __init__(self, service: ImageService) -> None:
        self.service = service

    def get_cache(self, parent_id: str, config: dict[str, Any]) -> str:
        store = self.service.image_store
        if parent_id == "":  # FROM scratch: every image without a parent is a candidate
            siblings = [i for i in store.images() if store.get_parent(i) is None]
        else:
            store.get(parent_id)
            siblings = store.children(parent_id)
        match: Image | None = None
        for image_id in siblings:
            image = store.get(image_id)
            newer = match is None or parse_time(match.created) < parse_time(image.created)
            if newer and compare(image.config.get("container_config"), config):
                match = image
        return match.id if match is not None else ""


class CacheFromImageCache:
    """The cache restricted to, and extended by, the `cachefrom` images (cache.ImageCache)."""

    def __init__(self, service: ImageService, sources: list[Image]) -> None:
        self.service = service
        self.local = LocalImageCache(service)
        self.sources = sources

    def get_cache(self, parent_id: str, config: dict[str, Any]) -> str:
        image_id = self.local.get_cache(parent_id, config)
        if image_id and any(self._is_parent(s.id, image_id) for s in self.sources):
            return image_id
        store = self.service.image_store
        parent: Image | None = None
        len_history = 0
        if parent_id:
            parent = store.get(parent_id)
            len_history = len(parent.history)
        for target in self.sources:
            if not _is_valid_parent(target, parent):
                continue
            if not _is_valid_config(config, target.history[len_history]):
                continue
            if len(target.history) - 1 == len_history:  # the target itself is this step
                if parent is not None:
                    store.set_parent(target.id, parent.id)
                return target.id
            restored = self._restore_cached_image(parent, target, config)
            self.sources = [target]  # follow this one target from now on
            return restored
        return ""

    def _is_parent(self, image_id: str, parent_id: str) -> bool:
        """Whether `parent_id` is an ancestor of `image_id`."""
        store = self.service.image_store
        current = store.get_parent(image_id)
        while current is not None:
            if current == parent_id:
                return True
            current = store.get_parent(current) if current in store else None
        return False

    def _restore_cached_image(self, parent: Image | None, target: Image, config: dict[str, Any]) -> str:
        """Re-create the intermediate image of `target` one step above `parent` (restoreCachedImage)."""
        history = parent.history if parent is not None else []
        diff_ids = parent.diff_ids if parent is not None else []
        entry = target.history[len(history)]
        layer = _layer_for_history_index(target, len(history))
        new_config: dict[str, Any] = {
            "docker_version": DOCKER_VERSION,
            "config": config,
            "architecture": target.config.get("architecture", ""),
            "os": target.os,
            "author": target.config.get("author", ""),
            "created": entry.get("created") or format_time(0),
            "rootfs": {"type": "layers", "diff_ids": diff_ids + ([layer] if layer else [])},
            "history": [*history, entry],
        }
        for key in ("os.version", "os.features"):
            if target.config.get(key):
                new_config[key] = target.config[key]
        return self.service.create_image(new_config, parent_id=parent.id if parent is not None else None)


def _is_valid_parent(image: Image, parent: Image | None) -> bool:
    if not image.history:
        return False
    if parent is None or (not parent.history and not parent.diff_ids):
        return True
    if len(parent.history) >= len(image.history) or len(parent.diff_ids) > len(image.diff_ids):
        return False
    return (
        parent.history == image.history[: len(parent.history)]
        and parent.diff_ids == image.diff_ids[: len(parent.diff_ids)]
    )


def _is_valid_config(config: dict[str, Any], entry: dict[str, Any]) -> bool:
    return " ".join(config.get("Cmd") or []) == entry.get("created_by", "")


def _layer_for_history_index(image: Image, index: int) -> str:
    """The diff ID the history entry `index` added, or "" for an empty-layer entry."""
    layer_index = 0
    for i, entry in enumerate(image.history):
        if i == index:
            if entry.get("empty_layer"):
                return ""
            break
        if not entry.get("empty_layer"):
            layer_index += 1
    return image.diff_ids[layer_index]


def make_image_cache(service: ImageService, cache_from: list[str]) -> ImageCache:
    """MakeImageCache: the local cache, or the cache-from one when images are given."""
    if not cache_from:
        return LocalImageCache(service)
    sources = []
    for ref in cache_from:
        try:
            sources.append(service.get_image(ref))
        except errdefs.DockerError:
            continue  # Docker logs "Could not look up ... for cache resolution, skipping"
    return CacheFromImageCache(service, sources)


class ImageProber:
    """Probes the cache step by step; a miss busts it for the rest of the stage (imageProber)."""

    def __init__(self, service: ImageService, cache_from: list[str], no_cache: bool) -> None:
        self.service = service
        self.cache_from = cache_from
        self.no_cache = no_cache
        self.cache = make_image_cache(service, cache_from)
        self.cache_busted = no_cache

    def reset(self) -> None:
        """Each stage starts with a fresh cache (called at every FROM)."""
        self.cache = make_image_cache(self.service, self.cache_from)
        self.cache_busted = self.no_cache

    def probe(self, parent_id: str, run_config: dict[str, Any]) -> str:
        """The cached image ID for this step, or "" on a miss."""
        if self.cache_busted:
            return ""
        cache_id = self.cache.get_cache(parent_id, run_config)
        if not cache_id:
            self.cache_busted = True
        return cache_id
