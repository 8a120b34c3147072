"""USER resolution from an image's own ``/etc/passwd`` and ``/etc/group``.

The files are read as plain text from the sandbox's root (never through the
host's NSS), with the rules Docker and BuildKit use (runc's ``GetExecUser``):

- ``USER name`` or ``USER uid``: the passwd entry matching the name, or the uid,
  gives uid, primary gid and home.  A number with no entry is taken as is, with
  gid 0 and home ``/``; a name with no entry is an error.
- ``USER x:group``: the group is a name from ``/etc/group`` or a number; an
  explicit group replaces the primary gid and disables supplementary groups.
- Without an explicit group, every ``/etc/group`` entry listing the user's name
  as a member adds a supplementary gid.

Stdlib only (imported by the zygote, see ``_zygote.py``).
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing's: the zygote and the shim do not import typing
if TYPE_CHECKING:
    from collections.abc import Iterator

if __package__:
    from ._values import value
else:  # loaded by the zygote or the shim as a top-level module
    from _values import value


@value
class ResolvedUser:
    uid: int
    gid: int
    supplementary_gids: tuple[int, ...]
    home: str
    name: str = ""


class UnknownUserError(LookupError):
    """The USER names a user or group the image does not define (message as Docker's)."""


@value
class PasswdEntry:
    name: str
    uid: int
    gid: int
    home: str


@value
class GroupEntry:
    name: str
    gid: int
    members: tuple[str, ...]


def _fields(text: str, minimum: int) -> Iterator[list[str]]:
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        if len(parts) < minimum:
            continue
        yield parts


def _number(text: str) -> int | None:
    text = text.strip()
    if not text.isdigit() or not text.isascii():
        return None
    value = int(text)
    return value if value <= 0xFFFFFFFF - 1 else None


def parse_passwd(text: str) -> list[PasswdEntry]:
    """Entries of a passwd file; malformed lines are skipped (like libc does)."""
    entries = []
    for parts in _fields(text, 4):
        uid, gid = _number(parts[2]), _number(parts[3])
        if uid is None or gid is None:
            continue
        home = parts[5] if len(parts) > 5 else ""
        entries.append(PasswdEntry(parts[0], uid, gid, home))
    return entries


def parse_group(text: str) -> list[GroupEntry]:
    """Entries of a group file; malformed lines are skipped."""
    entries = []
    for parts in _fields(text, 3):
        gid = _number(parts[2])
        if gid is None:
            continue
        members = tuple(m.strip() for m in parts[3].split(",") if m.strip()) if len(parts) > 3 else ()
        entries.append(GroupEntry(parts[0], gid, members))
    return entries


def resolve_user(spec: str, passwd_text: str | None, group_text: str | None) -> ResolvedUser:
    """Resolve a Dockerfile USER value against the image's passwd/group texts.

    ``None`` for a text means the file does not exist in the image.  Raises
    ``UnknownUserError`` for a name (user or group) with no entry.
    """
    user_part, _, group_part = spec.partition(":")
    user_part = user_part or "0"
    uid_number = _number(user_part)

    found: PasswdEntry | None = None
    for entry in parse_passwd(passwd_text or ""):
        if entry.name == user_part or (uid_number is not None and entry.uid == uid_number):
            found = entry
            break
    if found is None:
        if uid_number is None:
            raise UnknownUserError(f"unable to find user {user_part}: no matching entries in passwd file")
        uid, gid, home, name = uid_number, 0, "/", ""
    else:
        uid, gid, home, name = found.uid, found.gid, found.home or "/", found.name

    groups = parse_group(group_text or "")
    supplementary: tuple[int, ...] = ()
    if group_part:
        gid_number = _number(group_part)
        match = next((g for g in groups if g.name == group_part or (gid_number is not None and g.gid == gid_number)), None)
        if match is not None:
            gid = match.gid
        elif gid_number is not None:
            gid = gid_number
        else:
            raise UnknownUserError(f"unable to find group {group_part}: no matching entries in group file")
    elif name:
        supplementary = tuple(dict.fromkeys(g.gid for g in groups if name in g.members))
    return ResolvedUser(uid=uid, gid=gid, supplementary_gids=supplementary, home=home, name=name)
