"""USER resolution from an image's own passwd/group texts (runc's GetExecUser rules)."""

from __future__ import annotations

import pytest

from pybuild.executors._passwd import ResolvedUser, UnknownUserError, parse_group, parse_passwd, resolve_user

PASSWD = """\
root:x:0:0:root:/root:/bin/sh
# a comment
daemon:x:1:1:daemon:/usr/sbin:/bin/false
app:x:1000:1000:app user:/home/app:/bin/sh
broken line without fields
weird:x:notanumber:5::/:/bin/sh
short:x:1001:1001
"""
GROUP = """\
root:x:0:
app:x:1000:
extra:x:2000:app,other
more:x:3000:other, app
nogroup:x:65534:
"""


def test_parse_passwd_skips_malformed_lines() -> None:
    names = [e.name for e in parse_passwd(PASSWD)]
    assert names == ["root", "daemon", "app", "short"]
    short = parse_passwd(PASSWD)[-1]
    assert (short.uid, short.gid, short.home) == (1001, 1001, "")


def test_parse_group_members() -> None:
    groups = {g.name: g for g in parse_group(GROUP)}
    assert groups["extra"].members == ("app", "other")
    assert groups["more"].members == ("other", "app")
    assert groups["root"].members == ()


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("", ResolvedUser(0, 0, (), "/root", "root")),
        ("root", ResolvedUser(0, 0, (), "/root", "root")),
        ("app", ResolvedUser(1000, 1000, (2000, 3000), "/home/app", "app")),
        ("1000", ResolvedUser(1000, 1000, (2000, 3000), "/home/app", "app")),
        # An explicit group replaces the primary one and drops supplementary groups.
        ("app:extra", ResolvedUser(1000, 2000, (), "/home/app", "app")),
        ("1000:1000", ResolvedUser(1000, 1000, (), "/home/app", "app")),
        ("app:4242", ResolvedUser(1000, 4242, (), "/home/app", "app")),
        # Numbers without entries are taken as they are, gid 0 and home / by default.
        ("4242", ResolvedUser(4242, 0, (), "/", "")),
        ("4242:4343", ResolvedUser(4242, 4343, (), "/", "")),
        ("short", ResolvedUser(1001, 1001, (), "/", "short")),
    ],
)
def test_resolve_user(spec: str, expected: ResolvedUser) -> None:
    assert resolve_user(spec, PASSWD, GROUP) == expected


def test_unknown_user_message_is_dockers() -> None:
    with pytest.raises(UnknownUserError) as info:
        resolve_user("nobody-here", PASSWD, GROUP)
    assert str(info.value) == "unable to find user nobody-here: no matching entries in passwd file"


def test_unknown_group_message() -> None:
    with pytest.raises(UnknownUserError) as info:
        resolve_user("app:nogroup-here", PASSWD, GROUP)
    assert str(info.value) == "unable to find group nogroup-here: no matching entries in group file"


def test_missing_files_allow_numbers_only() -> None:
    assert resolve_user("1000:1000", None, None) == ResolvedUser(1000, 1000, (), "/", "")
    assert resolve_user("", None, None).uid == 0
    with pytest.raises(UnknownUserError):
        resolve_user("app", None, None)
