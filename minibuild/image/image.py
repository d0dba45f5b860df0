"""Image configs in Docker's JSON format (moby image/image.go, api/types/container/config.go).

An image is its config: a JSON document whose sha256 is the image ID. The bytes matter, so configs
are written the way moby writes them: Go's encoding/json (compact, `<>&` escaped), the top-level keys
sorted (image.MarshalJSON sorts them), nested structs in Go field order, Go maps with sorted keys.

    {"architecture":"amd64","config":{...},"container_config":{...},"created":"2024-01-01T00:00:00Z",
     "docker_version":"...","history":[{"created":...,"created_by":...}],"os":"linux",
     "rootfs":{"type":"layers","diff_ids":["sha256:..."]}}
"""

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from minibuild import gojson
from minibuild.layer import chain_id_of

# container.Config, in Go field order; the second value says whether the field is omitempty.
CONTAINER_CONFIG_FIELDS: tuple[tuple[str, bool], ...] = (
    ("Hostname", False), ("Domainname", False), ("User", False), ("AttachStdin", False),
    ("AttachStdout", False), ("AttachStderr", False), ("ExposedPorts", True), ("Tty", False),
    ("OpenStdin", False), ("StdinOnce", False), ("Env", False), ("Cmd", False), ("Healthcheck", True),
    ("ArgsEscaped", True), ("Image", False), ("Volumes", False), ("WorkingDir", False),
    ("Entrypoint", False), ("NetworkDisabled", True), ("MacAddress", True), ("OnBuild", False),
    ("Labels", False), ("StopSignal", True), ("StopTimeout", True), ("Shell", True),
)  # fmt: skip
_GO_MAPS = ("ExposedPorts", "Volumes", "Labels")
HEALTHCHECK_FIELDS = ("Test", "Interval", "Timeout", "StartPeriod", "StartInterval", "Retries")
HISTORY_FIELDS: tuple[tuple[str, bool], ...] = (
    ("created", False),
    ("author", True),
    ("created_by", True),
    ("comment", True),
    ("empty_layer", True),
)
# image.Image's JSON keys (V1Image + Image); MarshalJSON writes them sorted.
IMAGE_KEYS = frozenset({"id", "parent", "comment", "created", "container", "container_config",
                        "docker_version", "author", "config", "architecture", "variant", "os", "size",
                        "rootfs", "history", "os.version", "os.features"})  # fmt: skip
_IMAGE_OMITEMPTY = IMAGE_KEYS - {"created", "container_config"}
GO_ZERO_TIME = "0001-01-01T00:00:00Z"  # a time.Time never set


class InvalidImageConfig(ValueError):
    """A config that is not an image config Docker would accept."""


def _is_empty(value: Any) -> bool:
    """Go's omitempty: false, 0, "", nil, empty slice or map."""
    return value is None or value is False or value == 0 or value == "" or value == [] or value == {}


def empty_container_config() -> dict[str, Any]:
    """A zero container.Config, as Go marshals it (omitempty fields left out)."""
    zero = {"Env": None, "Cmd": None, "Volumes": None, "Entrypoint": None, "OnBuild": None, "Labels": None}
    return {
        name: zero.get(name, False if name.startswith(("Attach", "Tty", "OpenStdin", "StdinOnce")) else "")
        for name, omitempty in CONTAINER_CONFIG_FIELDS
        if not omitempty
    }


def ordered_container_config(config: dict[str, Any] | None, *, strict: bool = True) -> dict[str, Any] | None:
    """A container config as Go marshals container.Config: field order, zero values, omitempty.

    Unknown fields raise when `strict` (a builder's typo); otherwise they are dropped, as Go's
    unmarshal-then-marshal drops them.
    """
    if config is None:
        return None
    known = {name for name, _ in CONTAINER_CONFIG_FIELDS}
    unknown = set(config) - known
    if unknown and strict:
        raise InvalidImageConfig(f"unknown container config fields: {sorted(unknown)}")
    ordered: dict[str, Any] = {}
    base = empty_container_config()
    for name, omitempty in CONTAINER_CONFIG_FIELDS:
        value = config.get(name, base.get(name))
        if omitempty and _is_empty(value):
            continue
        if name in _GO_MAPS and value is not None:
            value = dict(sorted(value.items()))
        if name == "Healthcheck":
            value = {k: value[k] for k in HEALTHCHECK_FIELDS if not _is_empty(value.get(k))}
        ordered[name] = value
    return ordered


def _ordered_history(entry: dict[str, Any]) -> dict[str, Any]:
    unknown = set(entry) - {name for name, _ in HISTORY_FIELDS}
    if unknown:
        raise InvalidImageConfig(f"unknown history fields: {sorted(unknown)}")
    return {
        name: entry.get(name, "")
        for name, omitempty in HISTORY_FIELDS
        if not (omitempty and _is_empty(entry.get(name)))
    }


def marshal_image_config(config: dict[str, Any]) -> bytes:
    """Serialize an image config exactly as moby's image.MarshalJSON does; its sha256 is the image ID."""
    unknown = set(config) - IMAGE_KEYS
    if unknown:
        raise InvalidImageConfig(f"unknown image config fields: {sorted(unknown)}")
    if not isinstance(config.get("rootfs"), dict):
        raise InvalidImageConfig("invalid image JSON, no RootFS key")
    out: dict[str, Any] = {}
    for key in sorted(config):
        value = config[key]
        if key in ("config", "container_config"):
            value = ordered_container_config(value)
        elif key == "history":
            value = [_ordered_history(entry) for entry in value or []]
        elif key == "rootfs":
            value = {"type": value.get("type", "layers"), "diff_ids": value.get("diff_ids") or []}
            if not value["diff_ids"]:
                del value["diff_ids"]
        if key in _IMAGE_OMITEMPTY and _is_empty(value):
            continue
        out[key] = value
    out.setdefault("container_config", ordered_container_config({}))
    out.setdefault("created", GO_ZERO_TIME)
    return gojson.dumpb(dict(sorted(out.items())))


def image_id_of(config_bytes: bytes) -> str:
    return "sha256:" + hashlib.sha256(config_bytes).hexdigest()


_RFC3339 = re.compile(r"(\d{4})-(\d\d)-(\d\d)[Tt](\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?([Zz]|[+-]\d\d:\d\d)")


def format_time(ns: int) -> str:
    """Go's time.Time in JSON: RFC 3339 with nanoseconds, trailing zeros trimmed, in UTC."""
    seconds, frac = divmod(ns, 1_000_000_000)
    text = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if frac:
        text += "." + f"{frac:09d}".rstrip("0")
    return text + "Z"


def parse_time(text: str) -> int:
    """RFC 3339 (with up to nanoseconds) as Unix nanoseconds; Go's zero time when empty."""
    match = _RFC3339.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise InvalidImageConfig(f"invalid time {text!r}")
    year, month, day, hour, minute, second, frac, zone = match.groups()
    when = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), tzinfo=UTC)
    offset = 0
    if zone not in ("Z", "z"):
        sign = 1 if zone[0] == "+" else -1
        offset = sign * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60)
    whole = int((when - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds()) - offset
    return whole * 1_000_000_000 + int((frac or "0").ljust(9, "0"))


@dataclass(frozen=True)
class Image:
    """An image: its ID, the exact config bytes, and the parsed config."""

    id: str
    raw: bytes
    config: dict[str, Any] = field(compare=False, repr=False)

    @classmethod
    def from_json(cls, raw: bytes) -> "Image":
        """moby's image.NewFromJSON: a JSON object with a rootfs."""
        try:
            config = json.loads(raw)
        except (UnicodeDecodeError, ValueError) as err:
            raise InvalidImageConfig(str(err)) from err
        if not isinstance(config, dict):
            raise InvalidImageConfig("json: cannot unmarshal into Go value of type image.Image")
        if not isinstance(config.get("rootfs"), dict):
            raise InvalidImageConfig("invalid image JSON, no RootFS key")
        history = config.get("history") or []
        if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
            raise InvalidImageConfig("json: cannot unmarshal history into Go value of type []image.History")
        for created in [config.get("created"), *(h.get("created") for h in history)]:
            if created is not None:
                parse_time(created)  # Go refuses a config whose times do not parse
        return cls(image_id_of(raw), raw, config)

    @property
    def diff_ids(self) -> list[str]:
        return list(self.config["rootfs"].get("diff_ids") or [])

    @property
    def chain_id(self) -> str | None:
        return chain_id_of(self.diff_ids)

    @property
    def history(self) -> list[dict[str, Any]]:
        return list(self.config.get("history") or [])

    @property
    def created(self) -> str:
        return self.config.get("created") or GO_ZERO_TIME

    @property
    def os(self) -> str:
        return self.config.get("os") or "linux"

    @property
    def container_config(self) -> dict[str, Any]:
        return self.config.get("config") or {}
