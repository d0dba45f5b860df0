"""Resolve a Dockerfile USER against the image's /etc/passwd and /etc/group (runc libcontainer/user/user.go).

`user`, `uid`, `user:group`, `uid:gid`, `user:gid`, `uid:group`, or empty for root. Names are looked up
in the files; numbers are taken as ids even without an entry. A user found by name (or by uid) also
gets the groups that list it as a member (supplementary groups), unless a group was given explicitly.
"""

from dataclasses import dataclass, field
from pathlib import Path

MIN_ID = 0
MAX_ID = (1 << 31) - 1  # runc's limit, for 32-bit systems compatibility
ERR_NO_PASSWD_ENTRIES = "no matching entries in passwd file"
ERR_NO_GROUP_ENTRIES = "no matching entries in group file"
ERR_RANGE = f"uids and gids must be in range {MIN_ID}-{MAX_ID}"


class UserLookupError(Exception):
    """The USER cannot be resolved; the message is runc's (`unable to find user x: ...`)."""


@dataclass
class ExecUser:
    uid: int = 0
    gid: int = 0
    sgids: list[int] = field(default_factory=list)
    home: str = "/"  # runc's default when the user has no passwd entry


def _atoi(text: str) -> int | None:
    """Go's strconv.Atoi: optional sign and decimal digits only."""
    body = text[1:] if text[:1] in "+-" else text
    return int(text) if body.isascii() and body.isdigit() else None


def _fields(line: str, count: int) -> list[str]:
    parts = line.split(":")
    return parts[:count] + [""] * (count - len(parts))


def _parse_passwd(text: str | None) -> list[tuple[str, int, int, str]]:
    """(name, uid, gid, home) per entry; malformed numbers read as 0, as runc's parseLine does."""
    users = []
    for raw in (text or "").splitlines():
        line = raw.strip()
        if line:
            name, _pw, uid, gid, _gecos, home, _shell = _fields(line, 7)
            users.append((name, _atoi(uid) or 0, _atoi(gid) or 0, home))
    return users


def _parse_group(text: str | None) -> list[tuple[str, int, list[str]]]:
    """(name, gid, members) per entry."""
    groups = []
    for line in (text or "").splitlines():
        if line:
            name, _pw, gid, members = _fields(line, 4)
            groups.append((name, _atoi(gid) or 0, members.split(",") if members else []))
    return groups


def get_exec_user(user_spec: str, passwd: str | None, group: str | None) -> ExecUser:
    """runc's GetExecUser: `passwd`/`group` are the files' text, or None when a file is missing."""
    user = ExecUser()
    user_arg, _, group_arg = user_spec.partition(":")
    group_arg = group_arg.split(":", 1)[0]
    uid_arg, gid_arg = _atoi(user_arg), _atoi(group_arg)

    def user_matches(name: str, uid: int) -> bool:
        if user_arg == "":
            return uid == user.uid
        return uid == uid_arg if uid_arg is not None else name == user_arg

    users = [u for u in _parse_passwd(passwd) if user_matches(u[0], u[1])]
    matched_name = ""
    if users:
        matched_name, user.uid, user.gid, user.home = users[0]  # first match wins
    elif user_arg != "":
        if uid_arg is None:
            raise UserLookupError(f"unable to find user {user_arg}: {ERR_NO_PASSWD_ENTRIES}")
        if not MIN_ID <= uid_arg <= MAX_ID:
            raise UserLookupError(ERR_RANGE)
        user.uid = uid_arg

    if group_arg == "" and not matched_name:
        return user

    def group_matches(name: str, gid: int, members: list[str]) -> bool:
        if group_arg == "":
            return matched_name in members
        return gid == gid_arg if gid_arg is not None else name == group_arg

    groups = [g for g in _parse_group(group) if group_matches(*g)]
    if group_arg != "":
        if groups:
            user.gid = groups[0][1]
        elif gid_arg is None:
            raise UserLookupError(f"unable to find group {group_arg}: {ERR_NO_GROUP_ENTRIES}")
        elif not MIN_ID <= gid_arg <= MAX_ID:
            raise UserLookupError(ERR_RANGE)
        else:
            user.gid = gid_arg
    elif groups:
        user.sgids = [g[1] for g in groups]  # supplementary groups only in the implicit form
    return user


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="surrogateescape")
    except OSError:
        return None  # runc ignores files it cannot open


def get_exec_user_path(user_spec: str, root: Path = Path("/")) -> ExecUser:
    """GetExecUserPath: read `root`/etc/passwd and `root`/etc/group (the container's, after pivot_root)."""
    return get_exec_user(user_spec, _read(root / "etc/passwd"), _read(root / "etc/group"))
