"""Image manifests and manifest lists, Docker schema 2 and OCI (docker/distribution manifest/schema2,
manifest/ocischema, manifest/manifestlist; moby distribution/pull_v2*.go filterManifests; containerd
platforms Only/Less).

A manifest names an image config and its compressed layers by digest; a manifest list (OCI: index)
names one manifest per platform. Docker writes manifests with Go's `json.MarshalIndent(m, "", "   ")`,
so `build_schema2_manifest` does too: the bytes, hence the digest, are the ones `docker push` would send
for the same config and layers.
"""

import json
from dataclasses import dataclass

from minibuild.api.platforms import Platform, host_arch
from minibuild.distribution.client import Descriptor
from minibuild.distribution.errors import InvalidManifestError

MEDIA_TYPE_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MEDIA_TYPE_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MEDIA_TYPE_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_TYPE_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_TYPE_SCHEMA1 = (
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
    "application/vnd.docker.distribution.manifest.v1+json",
)
MEDIA_TYPE_IMAGE_CONFIG = "application/vnd.docker.container.image.v1+json"
MEDIA_TYPE_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_TYPE_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
MEDIA_TYPE_FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

# What a pull asks for, in order (distribution.ManifestMediaTypes without schema 1, which minibuild refuses).
ACCEPT_MEDIA_TYPES = [
    MEDIA_TYPE_MANIFEST,
    MEDIA_TYPE_MANIFEST_LIST,
    MEDIA_TYPE_OCI_MANIFEST,
    MEDIA_TYPE_OCI_INDEX,
]
IMAGE_CONFIG_TYPES = (MEDIA_TYPE_IMAGE_CONFIG, MEDIA_TYPE_OCI_CONFIG)
_CONFIG_CLASSES = {
    "application/vnd.docker.plugin.v1+json": "plugin",
    "application/vnd.cncf.helm.config.v1+json": "Helm Chart",
    "application/vnd.in-toto+json": "in-toto",
}
# Layer media types whose content minibuild can turn into a diff tar (gzip or plain tar).
_LAYER_TYPES = {
    MEDIA_TYPE_LAYER,
    MEDIA_TYPE_FOREIGN_LAYER,
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
}


def default_platform() -> Platform:
    """platforms.DefaultSpec: this daemon's platform (`linux/arm64/v8` names arm64 hosts in messages)."""
    arch = host_arch()
    return Platform("linux", arch, "v8" if arch == "arm64" else "")


def _platform_vector(p: Platform) -> list[Platform]:
    """Only(): the platform, then what it can also run (arm/v7 also runs v6 and v5; arm64 runs arm)."""
    vector = [p]
    if p.architecture == "arm" and p.variant[1:].isdigit():
        vector += [Platform(p.os, "arm", f"v{v}") for v in range(int(p.variant[1:]) - 1, 4, -1)]
    elif p.architecture == "arm64":
        vector += _platform_vector(Platform(p.os, "arm", "v8"))
    return vector


@dataclass(frozen=True)
class PlatformManifest:
    """One entry of a manifest list."""

    descriptor: Descriptor
    platform: Platform


@dataclass(frozen=True)
class Manifest:
    """A schema 2 or OCI image manifest."""

    media_type: str
    config: Descriptor
    layers: list[Descriptor]
    raw: bytes


@dataclass(frozen=True)
class ManifestList:
    """A manifest list or OCI index."""

    media_type: str
    manifests: list[PlatformManifest]
    raw: bytes

    def filter(self, wanted: Platform) -> list[PlatformManifest]:
        """filterManifests: entries this platform can run, best match first."""
        vector = [p.normalize() for p in _platform_vector(wanted.normalize())]
        ranked = []
        for entry in self.manifests:
            candidate = entry.platform.normalize()
            if candidate in vector:
                ranked.append((vector.index(candidate), entry))
        return [entry for _, entry in sorted(ranked, key=lambda pair: pair[0])]


def _descriptor(doc: object, what: str) -> Descriptor:
    if not isinstance(doc, dict):
        raise InvalidManifestError(f"invalid manifest: {what} is not an object")
    digest, size = doc.get("digest"), doc.get("size")
    if not isinstance(digest, str) or not digest.startswith("sha256:") or len(digest) != 71:
        raise InvalidManifestError(f"invalid manifest: {what} has an invalid digest {digest!r}")
    if not isinstance(size, int) or size < 0:
        raise InvalidManifestError(f"invalid manifest: {what} has an invalid size")
    try:
        int(digest[7:], 16)
    except ValueError:
        raise InvalidManifestError(f"invalid manifest: {what} has an invalid digest {digest!r}") from None
    return Descriptor(str(doc.get("mediaType") or ""), digest, size)


def parse_manifest(media_type: str, raw: bytes) -> Manifest | ManifestList:
    """Decode a manifest by its Content-Type (or its own mediaType field when the server sent none)."""
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as err:
        raise InvalidManifestError(f"invalid manifest: {err}") from None
    if not isinstance(doc, dict):
        raise InvalidManifestError("invalid manifest: not a JSON object")
    if media_type in ("", "application/json", "text/plain"):
        media_type = str(doc.get("mediaType") or "")
        if not media_type and doc.get("schemaVersion") == 1:
            media_type = MEDIA_TYPE_SCHEMA1[0]
        elif not media_type:
            media_type = MEDIA_TYPE_OCI_INDEX if "manifests" in doc else MEDIA_TYPE_OCI_MANIFEST
    if media_type in MEDIA_TYPE_SCHEMA1:
        # Deliberate: schema 1 (deprecated since 2015, disabled by default in later Docker) is refused.
        raise InvalidManifestError(
            "support for Docker Image Format v1 and Docker Image manifest version 2, schema 1 is not "
            "implemented: the image must be pushed again with a newer client"
        )
    if media_type in (MEDIA_TYPE_MANIFEST_LIST, MEDIA_TYPE_OCI_INDEX):
        entries = doc.get("manifests")
        if not isinstance(entries, list):
            raise InvalidManifestError("invalid manifest: manifests is not a list")
        manifests = []
        for i, entry in enumerate(entries):
            descriptor = _descriptor(entry, f"manifests[{i}]")
            spec = entry.get("platform") if isinstance(entry.get("platform"), dict) else {}
            plat = Platform(
                str(spec.get("os") or ""), str(spec.get("architecture") or ""), str(spec.get("variant") or "")
            )
            manifests.append(PlatformManifest(descriptor, plat))
        return ManifestList(media_type, manifests, raw)
    if media_type in (MEDIA_TYPE_MANIFEST, MEDIA_TYPE_OCI_MANIFEST):
        if doc.get("schemaVersion") != 2:
            raise InvalidManifestError(f"unsupported manifest schema version {doc.get('schemaVersion')!r}")
        config = _descriptor(doc.get("config"), "config")
        layers = doc.get("layers")
        if not isinstance(layers, list):
            raise InvalidManifestError("invalid manifest: layers is not a list")
        return Manifest(
            media_type, config, [_descriptor(d, f"layers[{i}]") for i, d in enumerate(layers)], raw
        )
    raise InvalidManifestError(f"unsupported manifest media type and no default available: {media_type}")


def check_config_media_type(media_type: str) -> None:
    """A pull of an image refuses plugins, Helm charts and other artifacts (invalidManifestClassError)."""
    if media_type and media_type not in IMAGE_CONFIG_TYPES:
        klass = _CONFIG_CLASSES.get(media_type, "unknown")
        raise InvalidManifestError(f'Encountered remote "{media_type}"({klass}) when fetching')


def check_layer_media_type(media_type: str) -> None:
    """checkSupportedMediaType, narrowed to what minibuild can decompress (zstd needs Python 3.14)."""
    if media_type and media_type not in _LAYER_TYPES:
        raise InvalidManifestError(f"unsupported media type {media_type}")


def _marshal_indent(doc: dict) -> bytes:
    """Go's json.MarshalIndent(doc, "", "   ") for these plain documents."""
    return json.dumps(doc, indent=3).encode()


def _descriptor_doc(d: Descriptor) -> dict:
    return {"mediaType": d.media_type, "size": d.size, "digest": d.digest}


def build_schema2_manifest(config: Descriptor, layers: list[Descriptor]) -> bytes:
    """schema2.FromStruct: the manifest bytes docker push uploads."""
    return _marshal_indent(
        {
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_MANIFEST,
            "config": _descriptor_doc(config),
            "layers": [_descriptor_doc(d) for d in layers],
        }
    )


def build_manifest_list(entries: list[PlatformManifest]) -> bytes:
    """manifestlist.FromDescriptors: a manifest list of schema 2 manifests, one per platform."""
    manifests = []
    for entry in entries:
        spec = {"architecture": entry.platform.architecture, "os": entry.platform.os}
        if entry.platform.variant:
            spec["variant"] = entry.platform.variant
        manifests.append({**_descriptor_doc(entry.descriptor), "platform": spec})
    return _marshal_indent(
        {"schemaVersion": 2, "mediaType": MEDIA_TYPE_MANIFEST_LIST, "manifests": manifests}
    )
