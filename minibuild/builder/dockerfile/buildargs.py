"""Build arguments: which `--build-arg`s a Dockerfile may use, and which it never used
(moby builder/dockerfile/buildargs.go).

Three sources meet here: the `buildargs` of the request (`args_from_options`), the ARGs declared
before the first FROM (meta args, usable in FROM lines and inherited by an `ARG NAME` without a
default inside a stage) and the ARGs declared in the current stage (`allowed_build_args`). A value
given on the command line always wins over a Dockerfile default. The proxy variables are allowed
without a declaration, and stay out of the image history unless the Dockerfile declares them.
"""

from collections.abc import Iterable, Mapping

from minibuild.api.streamformatter import StreamWriter

BUILTIN_ALLOWED_BUILD_ARGS = (
    "HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY", "ftp_proxy",
    "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy",
)  # fmt: skip
# Read by the builder itself (reproducible builds, as BuildKit accepts it), so never "not consumed".
CONSUMED_BY_BUILDER = ("SOURCE_DATE_EPOCH",)


class BuildArgs:
    """The state of build arguments for one build, cloned into each stage."""

    def __init__(self, args_from_options: Mapping[str, str | None]) -> None:
        self.allowed_build_args: dict[str, str | None] = {}  # usable by instructions of this stage
        self.allowed_meta_args: dict[str, str | None] = {}  # declared before the first FROM
        self.referenced_args: set[str] = set()  # declared anywhere in the Dockerfile
        self.args_from_options: dict[str, str | None] = dict(args_from_options)

    def clone(self) -> "BuildArgs":
        result = BuildArgs(self.args_from_options)
        result.allowed_build_args = dict(self.allowed_build_args)
        result.allowed_meta_args = dict(self.allowed_meta_args)
        result.referenced_args = set(self.referenced_args)
        return result

    def merge_referenced_args(self, other: "BuildArgs") -> None:
        """Remember what a finished stage declared, for the warning at the end."""
        self.referenced_args |= other.referenced_args

    def warn_on_unused_build_args(self, out: StreamWriter) -> None:
        """Docker's warning for `--build-arg`s nothing declared (proxies are never reported)."""
        leftover = [
            arg
            for arg in self.args_from_options
            if arg not in self.referenced_args
            and arg not in BUILTIN_ALLOWED_BUILD_ARGS
            and arg not in CONSUMED_BY_BUILDER
        ]
        if leftover:
            out.write(f"[Warning] One or more build-args [{' '.join(leftover)}] were not consumed\n")

    def reset_allowed(self) -> None:
        """A new stage starts with no ARGs of its own."""
        self.allowed_build_args = {}

    def add_meta_arg(self, key: str, value: str | None) -> None:
        self.allowed_meta_args[key] = value

    def add_arg(self, key: str, value: str | None) -> None:
        self.allowed_build_args[key] = value
        self.referenced_args.add(key)

    def is_referenced_or_not_builtin(self, key: str) -> bool:
        """Proxy args stay out of the RUN history line unless the Dockerfile declared them."""
        return key in self.allowed_build_args or key not in BUILTIN_ALLOWED_BUILD_ARGS

    def get_all_allowed(self) -> dict[str, str]:
        return self._get_all_from_mapping(self.allowed_build_args)

    def get_all_meta(self) -> dict[str, str]:
        return self._get_all_from_mapping(self.allowed_meta_args)

    def filter_allowed(self, env: Iterable[str]) -> list[str]:
        """`KEY=value` for every allowed arg the environment `env` does not already set (sorted)."""
        configured = {entry.partition("=")[0] for entry in env}
        return sorted(f"{k}={v}" for k, v in self.get_all_allowed().items() if k not in configured)

    def _get_all_from_mapping(self, source: Mapping[str, str | None]) -> dict[str, str]:
        out: dict[str, str] = {}
        for key in [*source, *BUILTIN_ALLOWED_BUILD_ARGS]:
            value, found = self._get_build_arg(key, source)
            if found:
                out[key] = value
        return out

    def _get_build_arg(self, key: str, mapping: Mapping[str, str | None]) -> tuple[str, bool]:
        """The value of `key`: the command line's, else the declared default, else the meta arg's."""
        default = mapping.get(key)
        from_options = self.args_from_options.get(key)
        if from_options is not None:
            return from_options, True
        if default is None:
            meta = self.allowed_meta_args.get(key)
            return (meta, True) if meta is not None else ("", False)
        return default, key in mapping
