"""The tar format as image layers use it: header encoding and a streaming reader.

Writing: one ustar header per entry, preceded by a PAX extended header only
when a value does not fit ustar (long or non-ASCII names, big ids or sizes,
xattrs as ``SCHILY.xattr.*``).  Numbers are zero-padded octal, ``uname`` and
``gname`` are empty and there is no atime/ctime, so equal metadata gives
equal bytes.

Reading: ``TarReader`` parses ustar, PAX (local and global), GNU long names
and old v7 headers from a forward-only stream, and counts every byte and
entry against a budget, so a decompression bomb stops early.  Metadata blocks
(PAX headers, long names) are capped: a reader never buffers more than
``MAX_META_BYTES`` for one of them.  Names stay ``bytes`` from end to end.
"""

from __future__ import annotations

import os
from decimal import Decimal, InvalidOperation
from typing import BinaryIO

from pybuild.errors import ImageError

BLOCK = 512
END_OF_ARCHIVE = b"\0" * (2 * BLOCK)
MAX_META_BYTES = 1 << 20

REGULAR = b"0"
HARDLINK = b"1"
SYMLINK = b"2"
CHARDEV = b"3"
BLOCKDEV = b"4"
DIRECTORY = b"5"
FIFO = b"6"
_CONTIGUOUS = b"7"


class TarKind:
    """The typeflags above under one name, for extractors outside this package."""

    REGULAR = REGULAR
    HARDLINK = HARDLINK
    SYMLINK = SYMLINK
    CHARDEV = CHARDEV
    BLOCKDEV = BLOCKDEV
    DIRECTORY = DIRECTORY
    FIFO = FIFO


_PAX_LOCAL = b"x"
_PAX_GLOBAL = b"g"
_GNU_LONGNAME = b"L"
_GNU_LONGLINK = b"K"

_ZERO_BLOCK = b"\0" * BLOCK
_USTAR_MAGIC = b"ustar\x00"
_GNU_MAGIC = b"ustar "
_XATTR_PREFIX = b"SCHILY.xattr."
_PAX_HEADER_NAME = b"././@PaxHeader"


def padding(size: int) -> int:
    """Zero bytes that follow ``size`` bytes of entry data."""
    return -size % BLOCK


# --- writing ---------------------------------------------------------------


def _octal(value: int, width: int) -> bytes | None:
    digits = width - 1
    if 0 <= value < 8**digits:
        return b"%0*o\x00" % (digits, value)
    return None


def _octal_or_pax(value: int, width: int, pax: list[tuple[bytes, bytes]], key: bytes) -> bytes:
    """``value`` as an octal field; one octal cannot hold goes into a PAX record ``key`` and the field reads 0."""
    digits = width - 1
    if 0 <= value < 8**digits:
        return b"%0*o\x00" % (digits, value)
    pax.append((key, b"%d" % value))
    return b"%0*o\x00" % (digits, 0)


def _base256(value: int, width: int) -> bytes:
    # GNU's binary form for numbers that octal cannot hold (device numbers).
    return bytes([0x80]) + value.to_bytes(width - 1, "big")


def _pax_record(key: bytes, value: bytes) -> bytes:
    body = b" %s=%s\n" % (key, value)
    length = len(body) + 1
    while len(b"%d" % length) + len(body) != length:
        length = len(b"%d" % length) + len(body)
    return b"%d%s" % (length, body)


def _ustar_header(
    name: bytes,
    mode: int,
    uid: bytes,
    gid: bytes,
    size: bytes,
    mtime: bytes,
    typeflag: bytes,
    linkname: bytes,
    devmajor: bytes,
    devminor: bytes,
) -> bytes:
    name, linkname = name[:100], linkname[:100]
    fields = b"%07o\x00%s%s%s%s" % (mode, uid, gid, size, mtime)
    devices = devmajor + devminor
    # the checksum of the whole block: its zero padding adds nothing, the rest is constant
    checksum = sum(name) + sum(fields) + typeflag[0] + sum(linkname) + sum(devices) + _CONSTANT_SUM
    return b"".join(
        (
            name.ljust(100, b"\0"),
            fields,
            b"%06o\x00 " % checksum,
            typeflag,
            linkname.ljust(100, b"\0"),
            _USTAR_MAGIC,
            b"00",
            b"\0" * 64,  # uname, gname: numeric ids only
            devices,
            b"\0" * 167,  # prefix (unused: long names go to PAX) and padding
        )
    )


_CONSTANT_SUM = sum(b"        ") + sum(_USTAR_MAGIC) + sum(b"00")  # the checksum field counts as spaces


_ZERO8 = b"0000000\x00"
_ZERO12 = b"00000000000\x00"


def encode_header(
    name: bytes,
    typeflag: bytes,
    *,
    mode: int,
    uid: int = 0,
    gid: int = 0,
    size: int = 0,
    mtime: int = 0,
    linkname: bytes = b"",
    devmajor: int = 0,
    devminor: int = 0,
    xattrs: list[tuple[bytes, bytes]] | None = None,
) -> bytes:
    """The header block(s) for one entry: an optional PAX header, then ustar.

    ``xattrs`` must be sorted by name (the caller sorts once, deterministically).
    """
    pax: list[tuple[bytes, bytes]] = []
    if len(name) > 100 or not name.isascii():
        pax.append((b"path", name))
    if len(linkname) > 100 or not linkname.isascii():
        pax.append((b"linkpath", linkname))
    uid_field = _octal_or_pax(uid, 8, pax, b"uid")
    gid_field = _octal_or_pax(gid, 8, pax, b"gid")
    size_field = _octal_or_pax(size, 12, pax, b"size")
    mtime_field = _octal_or_pax(mtime, 12, pax, b"mtime")
    if xattrs:
        pax.extend((_XATTR_PREFIX + key, value) for key, value in xattrs)
    header = _ustar_header(
        name,
        mode & 0o7777,
        uid_field,
        gid_field,
        size_field,
        mtime_field,
        typeflag,
        linkname,
        _octal(devmajor, 8) or _base256(devmajor, 8),
        _octal(devminor, 8) or _base256(devminor, 8),
    )
    if not pax:
        return header
    pax.sort()
    records = b"".join(_pax_record(k, v) for k, v in pax)
    records_size = _octal(len(records), 12)
    assert records_size is not None  # records are small: names and xattrs
    pax_header = _ustar_header(
        _PAX_HEADER_NAME, 0, _ZERO8, _ZERO8, records_size, _ZERO12, _PAX_LOCAL, b"", _ZERO8, _ZERO8
    )
    return b"".join((pax_header, records, b"\0" * padding(len(records)), header))


# --- reading ---------------------------------------------------------------


class TarEntry:
    """One member of a tar stream (after PAX/GNU metadata has been merged)."""

    __slots__ = (
        "name",
        "typeflag",
        "mode",
        "uid",
        "gid",
        "size",
        "mtime_ns",
        "linkname",
        "devmajor",
        "devminor",
        "xattrs",
        "offset",
    )

    name: bytes
    typeflag: bytes
    mode: int
    uid: int
    gid: int
    size: int
    mtime_ns: int
    linkname: bytes
    devmajor: int
    devminor: int
    xattrs: dict[bytes, bytes]
    offset: int  # of the entry's data in the uncompressed stream

    def display_name(self) -> str:
        return os.fsdecode(self.name)


def _field(raw: bytes) -> bytes:
    return raw.split(b"\0", 1)[0]


def _number(raw: bytes, what: str, where: int) -> int:
    if raw and raw[0] & 0x80:
        value = int.from_bytes(raw[1:], "big")
        if raw[0] & 0x40:  # negative base-256
            value -= 1 << (8 * len(raw) - 2)
        return value
    text = raw.split(b"\0", 1)[0].strip(b" ")
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise ImageError(
            f"corrupt tar header at offset {where}: {what} field {text!r} is not a number",
            hint="the layer or archive is damaged or not a tar stream",
        ) from None


def _checksum_ok(block: bytes) -> bool:
    stored = _number(block[148:156], "checksum", 0)
    unsigned = sum(block[:148]) + 256 + sum(block[156:])
    if stored == unsigned:
        return True
    signed = sum(b - 256 if b > 127 else b for b in block[:148] + block[156:]) + 256
    return stored == signed


def _decimal_ns(value: bytes, key: bytes, name: bytes) -> int:
    try:
        return int(Decimal(value.decode("ascii")) * 1_000_000_000)
    except (InvalidOperation, UnicodeDecodeError, ValueError):
        raise ImageError(
            f"tar entry {os.fsdecode(name)!r}: bad PAX {key.decode()} value {value!r}",
            hint="the layer or archive is damaged",
        ) from None


def _pax_int(pax: dict[bytes, bytes], key: bytes, name: bytes) -> int:
    try:
        return int(pax[key])
    except ValueError:
        raise ImageError(
            f"tar entry {os.fsdecode(name)!r}: bad PAX {key.decode()} value {pax[key]!r}",
            hint="the layer or archive is damaged",
        ) from None


def _parse_pax(data: bytes, where: int) -> dict[bytes, bytes]:
    records: dict[bytes, bytes] = {}
    pos = 0
    while pos < len(data):
        if data[pos] == 0:  # some writers pad the records with NULs
            break
        space = data.find(b" ", pos)
        try:
            length = int(data[pos:space]) if space > pos else -1
        except ValueError:
            length = -1
        end = pos + length
        if length <= 0 or end > len(data) or data[end - 1] != 0x0A or space >= end:
            raise ImageError(
                f"corrupt PAX header at offset {where}",
                hint="the layer or archive is damaged",
            )
        key, sep, value = data[space + 1 : end - 1].partition(b"=")
        if not sep:
            raise ImageError(f"corrupt PAX record at offset {where}", hint="the layer or archive is damaged")
        records[key] = value
        pos = end
    return records


class TarReader:
    """Forward-only reader of a tar stream with a byte and an entry budget.

    ``next()`` returns the next entry (or None at the end); its data is read
    with ``read_data()`` or skipped by the following ``next()``.
    """

    def __init__(
        self,
        stream: BinaryIO,
        *,
        byte_budget: int | None = None,
        entry_budget: int | None = None,
        seekable: bool = False,
    ) -> None:
        self._stream = stream
        self._byte_budget = byte_budget
        self._entry_budget = entry_budget
        self._seekable = seekable
        self.position = 0
        self.entries = 0
        self._data_left = 0
        self._pad_left = 0
        self._global: dict[bytes, bytes] = {}
        self.finished = False

    # -- raw input, counted --

    def _count(self, n: int) -> None:
        self.position += n
        if self._byte_budget is not None and self.position > self._byte_budget:
            raise ImageError(
                f"tar stream exceeds the size budget of {self._byte_budget} bytes",
                hint="the layer is larger than allowed (a decompression bomb?); raise the budget if it is genuine",
            )

    def _read_exact(self, n: int, what: str) -> bytes:
        if self._byte_budget is not None and self.position + n > self._byte_budget:
            self._count(n)
        chunks = []
        left = n
        while left:
            chunk = self._stream.read(left)
            if not chunk:
                raise ImageError(
                    f"tar stream ends early at offset {self.position + n - left} (inside {what})",
                    hint="the layer or archive is truncated",
                )
            chunks.append(chunk)
            left -= len(chunk)
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self._count(n)
        return data

    def _skip(self, n: int, what: str) -> None:
        if n and self._seekable:
            self._count(n)
            self._stream.seek(n, os.SEEK_CUR)
            return
        while n:
            step = min(n, 1 << 20)
            self._read_exact(step, what)
            n -= step

    # -- data of the current entry --

    def read_data(self, limit: int = 1 << 20) -> bytes:
        """Up to ``limit`` bytes of the current entry's data; b"" at its end."""
        if not self._data_left:
            return b""
        n = min(limit, self._data_left)
        if self._byte_budget is not None and self.position + n > self._byte_budget:
            self._count(n)
        chunk = self._stream.read(n)
        if not chunk:
            raise ImageError(
                f"tar stream ends early at offset {self.position} (inside file data)",
                hint="the layer or archive is truncated",
            )
        self._count(len(chunk))
        self._data_left -= len(chunk)
        return chunk

    def _finish_entry(self) -> None:
        if self._data_left or self._pad_left:
            self._skip(self._data_left + self._pad_left, "file data")
            self._data_left = self._pad_left = 0

    def drain(self) -> None:
        """Read the rest of the stream (padding after the end marker), counted."""
        while True:
            if self._byte_budget is not None and self.position >= self._byte_budget:
                # One more byte would be over budget; check whether there is one.
                if self._stream.read(1):
                    self._count(1)
                return
            limit = 1 << 20
            if self._byte_budget is not None:
                limit = min(limit, self._byte_budget - self.position)
            chunk = self._stream.read(limit)
            if not chunk:
                return
            self._count(len(chunk))

    # -- headers --

    def _meta_block(self, size: int, where: int, what: str) -> bytes:
        if size > MAX_META_BYTES:
            raise ImageError(
                f"tar {what} at offset {where} is {size} bytes (limit {MAX_META_BYTES})",
                hint="the layer or archive is damaged or hostile",
            )
        data = self._read_exact(size, what)
        self._skip(padding(size), what)
        return data

    def next(self) -> TarEntry | None:
        self._finish_entry()
        if self.finished:
            return None
        pax: dict[bytes, bytes] = {}
        long_name: bytes | None = None
        long_link: bytes | None = None
        while True:
            where = self.position
            block = self._stream.read(BLOCK)
            if len(block) < BLOCK:
                if block:
                    rest = self._read_exact(BLOCK - len(block), "a header")
                    self._count(len(block))
                    block += rest
                else:
                    # A clean end without the two zero blocks: accepted, like Go's reader.
                    self.finished = True
                    if pax or long_name is not None or long_link is not None:
                        raise ImageError("tar stream ends after a metadata header", hint="the layer is truncated")
                    return None
            else:
                self._count(BLOCK)
            if block == _ZERO_BLOCK:
                self.finished = True
                return None
            if not _checksum_ok(block):
                raise ImageError(
                    f"corrupt tar header at offset {where} (bad checksum)",
                    hint="the data is damaged or not a tar stream",
                )
            typeflag = block[156:157]
            size = _number(block[124:136], "size", where)
            if size < 0:
                raise ImageError(f"corrupt tar header at offset {where}: negative size", hint="the data is damaged")
            if typeflag == _PAX_LOCAL:
                pax.update(_parse_pax(self._meta_block(size, where, "PAX header"), where))
                continue
            if typeflag == _PAX_GLOBAL:
                self._global.update(_parse_pax(self._meta_block(size, where, "PAX global header"), where))
                continue
            if typeflag == _GNU_LONGNAME:
                long_name = _field(self._meta_block(size, where, "GNU long name"))
                continue
            if typeflag == _GNU_LONGLINK:
                long_link = _field(self._meta_block(size, where, "GNU long link name"))
                continue
            return self._entry(block, typeflag, size, where, pax, long_name, long_link)

    def _entry(
        self,
        block: bytes,
        typeflag: bytes,
        size: int,
        where: int,
        local: dict[bytes, bytes],
        long_name: bytes | None,
        long_link: bytes | None,
    ) -> TarEntry:
        self.entries += 1
        if self._entry_budget is not None and self.entries > self._entry_budget:
            raise ImageError(
                f"tar stream has more than {self._entry_budget} entries",
                hint="the layer has more files than allowed (a hostile archive?); raise the budget if it is genuine",
            )
        pax = {**self._global, **local} if self._global else local
        magic = block[257:263]
        name = _field(block[0:100])
        if magic == _USTAR_MAGIC:
            prefix = _field(block[345:500])
            if prefix:
                name = prefix + b"/" + name
        if long_name is not None:
            name = long_name
        if b"path" in pax:
            name = pax[b"path"]
        linkname = long_link if long_link is not None else _field(block[157:257])
        if b"linkpath" in pax:
            linkname = pax[b"linkpath"]
        if typeflag in (b"\0", _CONTIGUOUS, b""):
            typeflag = DIRECTORY if typeflag == b"\0" and name.endswith(b"/") else REGULAR
        if typeflag not in (REGULAR, HARDLINK, SYMLINK, CHARDEV, BLOCKDEV, DIRECTORY, FIFO):
            raise ImageError(
                f"tar entry {os.fsdecode(name)!r} has unsupported type {typeflag!r}",
                hint="layers may hold files, directories, links, devices and fifos only (no sparse or multi-volume entries)",
            )
        if any(key.startswith(b"GNU.sparse.") for key in pax):
            raise ImageError(
                f"tar entry {os.fsdecode(name)!r} is a sparse file",
                hint="sparse tar entries are not supported in layers",
            )
        entry = TarEntry()
        entry.name = name
        entry.typeflag = typeflag
        entry.mode = _number(block[100:108], "mode", where) & 0o7777
        entry.uid = _pax_int(pax, b"uid", name) if b"uid" in pax else _number(block[108:116], "uid", where)
        entry.gid = _pax_int(pax, b"gid", name) if b"gid" in pax else _number(block[116:124], "gid", where)
        if b"size" in pax:
            size = _pax_int(pax, b"size", name)
        if b"mtime" in pax:
            entry.mtime_ns = _decimal_ns(pax[b"mtime"], b"mtime", name)
        else:
            entry.mtime_ns = _number(block[136:148], "mtime", where) * 1_000_000_000
        entry.linkname = linkname
        if typeflag in (CHARDEV, BLOCKDEV):
            entry.devmajor = _number(block[329:337], "devmajor", where)
            entry.devminor = _number(block[337:345], "devminor", where)
        else:
            entry.devmajor = entry.devminor = 0
        entry.xattrs = {k[len(_XATTR_PREFIX) :]: v for k, v in pax.items() if k.startswith(_XATTR_PREFIX)}
        if typeflag != REGULAR:
            size = 0  # header-only types carry no data, whatever the size field says (as Go reads them)
        if size < 0 or entry.uid < 0 or entry.gid < 0:
            raise ImageError(f"tar entry {os.fsdecode(name)!r} has a negative size or id", hint="the data is damaged")
        entry.size = size
        entry.offset = self.position
        self._data_left = size
        self._pad_left = padding(size)
        return entry
