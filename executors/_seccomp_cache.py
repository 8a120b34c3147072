"""Compiled seccomp programs kept between pybuild processes (root only).

Every build with a RUN step needs the BPF program of Docker's default
profile: importing pyseccomp (whose ``find_library`` runs ``ldconfig -p``
twice) and compiling took 60-80 ms of CPU at the start of each build, on the
trio thread, while the zygote starts on the other core.  The program only
depends on the profile's text, the capabilities, the machine, the kernel's
version (``minKernel`` rules) and libseccomp, so it is kept in
``/run/pybuild/seccomp`` (tmpfs: gone at reboot) under a key of all of these.

libseccomp is identified by the stat signature of the library file the
compiling process had mapped (recorded with the program, checked on every
use) and of ``/etc/ld.so.cache`` and pyseccomp's module (in the key): an
upgrade replaces the file and runs ldconfig, so a program compiled by an
older libseccomp is not used.  A program is a security boundary: the
directory is used only when it is root's own and writable by nobody else,
and records are written whole (rename) and checked for their shape.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import platform
import stat

CACHE_DIR = "/run/pybuild/seccomp"
_FORMAT = 1
_BPF_INSTRUCTION = 8  # struct sock_filter


def load(text: str, capabilities: int) -> bytes | None:
    """The program recorded for this profile and capabilities, or None (compile it)."""
    directory = _usable_dir(create=False)
    key = _key(text, capabilities) if directory else None
    if directory is None or key is None:
        return None
    try:
        with open(os.path.join(directory, key), "rb") as f:
            data = f.read()
        header, _, program = data.partition(b"\n")
        meta = json.loads(header)
        if meta.get("format") != _FORMAT or meta.get("library") is None:
            return None
        if _signature(meta["library"]) != meta.get("signature") or not _well_formed(program):
            return None
    except (OSError, ValueError, TypeError, AttributeError):
        return None
    return program


def store(text: str, capabilities: int, program: bytes) -> None:
    """Record a program this process compiled (nothing when the directory or library cannot be vouched for)."""
    library = _loaded_libseccomp()
    directory = _usable_dir(create=True)
    key = _key(text, capabilities) if directory else None
    signature = _signature(library) if library else None
    if directory is None or key is None or library is None or signature is None or not _well_formed(program):
        return
    header = json.dumps({"format": _FORMAT, "library": library, "signature": signature}).encode()
    import tempfile  # only when compiling: costly to import at start-up

    try:
        fd, temporary = tempfile.mkstemp(dir=directory, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(header + b"\n" + program)
            os.rename(temporary, os.path.join(directory, key))
        except BaseException:
            os.unlink(temporary)
            raise
    except OSError:
        pass  # a cache: the next build compiles again


def _well_formed(program: bytes) -> bool:
    return 0 < len(program) and len(program) % _BPF_INSTRUCTION == 0


def _usable_dir(*, create: bool) -> str | None:
    """CACHE_DIR if it is root's, a real directory, and writable by root alone (made when ``create``)."""
    if os.geteuid() != 0:
        return None
    try:
        if create:
            os.makedirs(CACHE_DIR, 0o700, exist_ok=True)
        info = os.lstat(CACHE_DIR)
        parent = os.lstat(os.path.dirname(CACHE_DIR))
    except OSError:
        return None
    for entry in (info, parent):
        if not stat.S_ISDIR(entry.st_mode) or entry.st_uid != 0 or entry.st_mode & 0o022:
            return None
    return CACHE_DIR


def _key(text: str, capabilities: int) -> str | None:
    """What the program depends on, hashed; None when pyseccomp cannot be found."""
    spec = importlib.util.find_spec("pyseccomp")
    binding = _signature(spec.origin) if spec is not None and spec.origin else None
    if binding is None:
        return None
    parts = [
        str(_FORMAT), text, str(capabilities), platform.machine(), os.uname().release,
        json.dumps(binding), json.dumps(_signature("/etc/ld.so.cache")),
    ]
    return hashlib.sha256("\0".join(parts).encode("utf-8", "surrogateescape")).hexdigest()


def _signature(path: str) -> list[int] | None:
    """The file's identity and version: device, inode, size, mtime and ctime in ns (None: missing)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _loaded_libseccomp() -> str | None:
    """The libseccomp file this process has mapped (after pyseccomp loaded it)."""
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                fields = line.split(maxsplit=5)
                path = fields[5].strip() if len(fields) == 6 else ""
                if os.path.basename(path).startswith("libseccomp.so"):
                    return path
    except OSError:
        return None
    return None
