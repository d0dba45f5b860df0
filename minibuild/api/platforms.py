"""Platforms and their specifiers `os[/arch[/variant]]` (containerd platforms/platforms.go, database.go).

dockerd parses the `platform` build parameter with containerd's `platforms.Parse` and answers 400 with
its message (`"bogus": unknown operating system or architecture: invalid argument`). `parse` accepts and
normalises the same inputs (`x86_64` -> `amd64`, `aarch64` -> `arm64`, `armhf` -> `arm/v7`, ...).
`Platform` is also what image configs and manifest lists name (minibuild.distribution.manifest matches
them), and `host_arch` is the daemon's own architecture as Go names it.
"""

import platform as _host
import re
from dataclasses import dataclass

_SPECIFIER_RE = re.compile(r"^[A-Za-z0-9_-]+$")

_KNOWN_OS = frozenset(
    "aix android darwin dragonfly freebsd hurd illumos ios js linux nacl netbsd openbsd plan9 solaris "  # noqa: SIM905
    "windows zos".split()
)
_KNOWN_ARCH = frozenset(
    "386 amd64 amd64p32 arm armbe arm64 arm64be ppc64 ppc64le loong64 mips mipsle mips64 mips64le "  # noqa: SIM905
    "mips64p32 mips64p32le ppc riscv riscv64 s390 s390x sparc sparc64 wasm".split()
)


class PlatformError(ValueError):
    """An invalid platform specifier; str() is containerd's message (an InvalidArgument)."""


# uname's machine names that Go (runtime.GOARCH) spells differently.
_GO_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "armv6l": "arm", "i686": "386",
            "i386": "386"}  # fmt: skip


@dataclass(frozen=True)
class Platform:
    """An OCI specs.Platform."""

    os: str
    architecture: str
    variant: str = ""

    def format(self) -> str:
        """platforms.Format: `os/arch[/variant]`."""
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)

    def normalize(self) -> "Platform":
        """platforms.Normalize: canonical names, as containerd compares platforms."""
        return Platform(normalize_os(self.os), *normalize_arch(self.architecture, self.variant))


def normalize_os(os_name: str) -> str:
    os_name = os_name.lower()
    return "darwin" if os_name == "macos" else os_name


def normalize_arch(arch: str, variant: str) -> tuple[str, str]:
    """containerd's normalizeArch: the canonical (architecture, variant) pair."""
    arch, variant = arch.lower(), variant.lower()
    if arch in ("i386",):
        return "386", ""
    if arch in ("x86_64", "x86-64", "amd64"):
        return "amd64", "" if variant in ("v1", "") else variant
    if arch in ("aarch64", "arm64"):
        return "arm64", "" if variant in ("8", "v8") else variant
    if arch == "armhf":
        return "arm", "v7"
    if arch == "armel":
        return "arm", "v6"
    if arch == "arm":
        if variant in ("", "7"):
            return "arm", "v7"
        if variant in ("5", "6", "8"):
            return "arm", "v" + variant
    return arch, variant


def host_arch() -> str:
    """The host's architecture in Go's naming, runtime.GOARCH (`amd64`, `arm64`, `arm`, `386`, ...)."""
    machine = _host.machine()
    return _GO_ARCH.get(machine, machine)


def parse(specifier: str) -> Platform:
    """platforms.Parse; raises PlatformError with containerd's wording."""
    if "*" in specifier:
        raise PlatformError(f'"{specifier}": wildcards not yet supported: invalid argument')
    parts = specifier.split("/")
    for part in parts:
        if not _SPECIFIER_RE.match(part):
            raise PlatformError(
                f'"{part}" is an invalid component of "{specifier}": platform specifier component must '
                f'match "{_SPECIFIER_RE.pattern}": invalid argument'
            )
    if len(parts) == 1:
        # Either an OS (the host's architecture is implied) or an architecture (linux is implied).
        os_name = normalize_os(parts[0])
        if os_name in _KNOWN_OS:
            return Platform(os_name, host_arch())
        arch, variant = normalize_arch(parts[0], "")
        if arch == "arm" and variant == "v7":
            variant = ""
        if arch in _KNOWN_ARCH:
            return Platform("linux", arch, variant)
        raise PlatformError(f'"{specifier}": unknown operating system or architecture: invalid argument')
    if len(parts) == 2:
        arch, variant = normalize_arch(parts[1], "")
        if arch == "arm" and variant == "v7":
            variant = ""
        return Platform(normalize_os(parts[0]), arch, variant)
    if len(parts) == 3:
        arch, variant = normalize_arch(parts[1], parts[2])
        if arch == "arm64" and variant == "":
            variant = "v8"
        return Platform(normalize_os(parts[0]), arch, variant)
    raise PlatformError(f'"{specifier}": cannot parse platform specifier: invalid argument')
