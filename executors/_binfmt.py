"""What this machine can run: native platforms, QEMU through binfmt_misc, or nothing.

A RUN step for a foreign platform runs its binaries through QEMU user-mode emulation: the
kernel hands an ELF file whose header matches a binfmt_misc entry to that entry's
interpreter.  For that to work inside the sandbox's own root the entry needs the ``F``
(fix-binary) flag, which makes the kernel open the interpreter when it is registered rather
than look its path up in the sandbox when a binary starts.

Knowing this costs nothing per build: the host's platform is answered without reading
anything; /proc/sys/fs/binfmt_misc is read only when a foreign platform is asked about, and the
emulator is tested (a tiny static binary for that architecture that exits 0, run in an empty
root, as BuildKit's util/archutil does) only then, its answer cached in memory and in a small
file keyed by the binfmt entry and the interpreter's stat.

``install_handlers``/``uninstall_handlers`` register and remove the handlers of Debian's
``qemu-user-static`` (magic and mask from its /usr/lib/binfmt.d files), under names of their
own (``pybuild-qemu-aarch64``) so that uninstalling never touches the system's own entries.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import platform as _platform
import shutil
import struct
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pybuild.errors import PybuildError, UsageError

from ._userns import host_uid

BINFMT_MISC = Path("/proc/sys/fs/binfmt_misc")
# Where qemu-user-static describes its handlers: systemd's format, then binfmt-support's.
HANDLER_DIRS = (Path("/usr/lib/binfmt.d"), Path("/usr/share/binfmts"))
HANDLER_PREFIX = "pybuild-"  # the names pybuild registers, and alone removes
PACKAGE = "qemu-user-static"
HINT = f"install Debian's {PACKAGE} package and run 'pybuild binfmt --install' (as root)"
TEST_TIMEOUT = 10.0


class EmulationError(PybuildError):
    """binfmt_misc could not be read or changed (not root, not mounted, no qemu)."""

    reference = "emulation"


@dataclass(frozen=True)
class EmulationStatus:
    """How this machine runs one platform's binaries."""

    platform: str
    runnable: bool
    how: str  # "native" | "emulated" | "unavailable"
    interpreter: str = ""
    reason: str = ""
    hint: str = ""


# --- the tiny static binaries: ELF header, one PT_LOAD, exit(0) -------------------------------

_BASE = 0x400000


def _elf(machine: int, code: bytes, *, bits: int = 64, big_endian: bool = False, flags: int = 0) -> bytes:
    """A static ELF executable of ``code`` alone, loaded whole at _BASE and entered after its headers."""
    order = ">" if big_endian else "<"
    ehsize, phsize = (64, 56) if bits == 64 else (52, 32)
    entry = _BASE + ehsize + phsize
    total = ehsize + phsize + len(code)
    ident = b"\x7fELF" + bytes((2 if bits == 64 else 1, 2 if big_endian else 1, 1, 0)) + bytes(8)
    address = "Q" if bits == 64 else "I"
    header = ident + struct.pack(
        f"{order}HHI{address * 3}IHHHHHH", 2, machine, 1, entry, ehsize, 0, flags, ehsize, phsize, 1, 0, 0, 0
    )
    if bits == 64:  # type, flags, offset, vaddr, paddr, filesz, memsz, align
        program = struct.pack(f"{order}IIQQQQQQ", 1, 5, 0, _BASE, _BASE, total, total, 0x1000)
    else:  # type, offset, vaddr, paddr, filesz, memsz, flags, align
        program = struct.pack(f"{order}IIIIIIII", 1, 0, _BASE, _BASE, total, total, 5, 0x1000)
    return header + program + code


def _words(*words: int, order: str = "<") -> bytes:
    return struct.pack(f"{order}{len(words)}I", *words)


@dataclass(frozen=True)
class _Arch:
    machine: str  # uname -m of a host of this platform (and QEMU's name for it)
    qemu: str  # the qemu-user binary's suffix
    binary: bytes  # a static executable that exits 0


_ARM = _Arch("armv7l", "arm", _elf(40, _words(0xE3A00000, 0xE3A07001, 0xEF000000), bits=32, flags=0x05000000))
# platform -> architecture, in BuildKit's order (archutil.SupportedPlatforms)
ARCHES: dict[str, _Arch] = {
    # xor edi,edi; mov eax,60 (exit); syscall
    "linux/amd64": _Arch("x86_64", "x86_64", _elf(62, bytes.fromhex("31ffb83c0000000f05"))),
    # mov x0,#0; mov x8,#93 (exit); svc #0
    "linux/arm64": _Arch("aarch64", "aarch64", _elf(183, _words(0xD2800000, 0xD2800BA8, 0xD4000001))),
    # li a0,0; li a7,93 (exit); ecall
    "linux/riscv64": _Arch("riscv64", "riscv64", _elf(243, _words(0x00000513, 0x05D00893, 0x00000073))),
    # li r0,1 (exit); li r3,0; sc -- ELFv2 (e_flags 2): the entry is code, not a descriptor
    "linux/ppc64le": _Arch("ppc64le", "ppc64le", _elf(21, _words(0x38000001, 0x38600000, 0x44000002), flags=2)),
    # lghi %r2,0; svc 1 (exit)
    "linux/s390x": _Arch("s390x", "s390x", _elf(22, bytes.fromhex("a72900000a01"), big_endian=True)),
    # xor ebx,ebx; mov eax,1 (exit); int 0x80
    "linux/386": _Arch("i686", "i386", _elf(3, bytes.fromhex("31dbb801000000cd80"), bits=32)),
    # mov r0,#0; mov r7,#1 (exit); svc #0 -- EABI5
    "linux/arm/v7": _ARM,
    "linux/arm/v6": _Arch("armv6l", "arm", _ARM.binary),
}
# What a kernel of one architecture runs without emulation besides its own (its 32-bit
# compat mode); each is tested like an emulator, since a kernel may be built without it.
_COMPANIONS = {"linux/amd64": ("linux/386",), "linux/arm64": ("linux/arm/v7", "linux/arm/v6"), "linux/arm/v7": ("linux/arm/v6",)}
_MACHINES = {"x86_64": "linux/amd64", "aarch64": "linux/arm64", "armv7l": "linux/arm/v7", "armv6l": "linux/arm/v6",
             "i686": "linux/386", "i386": "linux/386", "riscv64": "linux/riscv64", "ppc64le": "linux/ppc64le",
             "s390x": "linux/s390x"}


def host_platform() -> str:
    machine = _platform.machine().lower()
    return _MACHINES.get(machine, f"linux/{machine}")


def normalize_platform(text: str) -> str:
    """``linux/arm64/v8`` -> ``linux/arm64``, ``linux/arm`` -> ``linux/arm/v7``, ``arm64`` -> ``linux/arm64``."""
    parts = text.strip().lower().split("/")
    if len(parts) == 1:
        parts = ["linux", *parts]
    name = "/".join(parts)
    aliases = {"linux/arm64/v8": "linux/arm64", "linux/aarch64": "linux/arm64", "linux/arm": "linux/arm/v7",
               "linux/x86_64": "linux/amd64", "linux/amd64/v1": "linux/amd64", "linux/i386": "linux/386"}
    return aliases.get(name, name)


# --- binfmt_misc entries -------------------------------------------------------------------------


@dataclass(frozen=True)
class BinfmtEntry:
    """One registered handler, as /proc/sys/fs/binfmt_misc/NAME shows it."""

    name: str
    enabled: bool
    interpreter: str
    flags: str
    offset: int
    magic: bytes
    mask: bytes
    text: str  # as read: part of the cache key

    def matches(self, binary: bytes) -> bool:
        head = binary[self.offset : self.offset + len(self.magic)]
        if len(head) != len(self.magic) or not self.magic:
            return False
        mask = self.mask or b"\xff" * len(self.magic)
        return all(b & m == magic & m for b, m, magic in zip(head, mask, self.magic))


def parse_entry(name: str, text: str) -> BinfmtEntry | None:
    """The entry file's fields; None for an extension (not magic) entry."""
    fields: dict[str, str] = {}
    enabled = False
    for line in text.splitlines():
        if line in ("enabled", "disabled"):
            enabled = line == "enabled"
            continue
        key, _, value = line.partition(" ")
        fields[key.rstrip(":")] = value.strip()
    if "magic" not in fields:
        return None
    try:
        return BinfmtEntry(
            name, enabled, fields.get("interpreter", ""), fields.get("flags", ""), int(fields.get("offset", "0")),
            bytes.fromhex(fields["magic"]), bytes.fromhex(fields.get("mask", "")), text,
        )
    except ValueError:
        return None


def read_entries(binfmt_dir: Path) -> tuple[BinfmtEntry, ...] | None:
    """Every magic handler registered; None when binfmt_misc is not mounted there."""
    if not (binfmt_dir / "register").exists():
        return None
    entries = []
    for path in sorted(binfmt_dir.iterdir()):
        if path.name in ("register", "status"):
            continue
        try:
            entry = parse_entry(path.name, path.read_text())
        except OSError:  # removed meanwhile
            continue
        if entry is not None:
            entries.append(entry)
    return tuple(entries)


def _globally_enabled(binfmt_dir: Path) -> bool:
    try:
        return (binfmt_dir / "status").read_text().strip() != "disabled"
    except OSError:
        return True


# --- the emulator test ---------------------------------------------------------------------------


def run_test_binary(binary: bytes) -> str:
    """Run ``binary`` (chrooted into an empty directory when root, as BuildKit's archutil does,
    so that a handler without F fails here as it would in the sandbox); "" if it exited 0, else why not."""
    chroot = shutil.which("chroot") if os.geteuid() == 0 else None
    with tempfile.TemporaryDirectory(prefix="pybuild-binfmt-") as work:
        path = os.path.join(work, "check")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o700)
        try:
            os.write(fd, binary)
        finally:
            os.close(fd)
        # chroot(8) rather than a preexec_fn: a build asks from a process with threads
        argv = [chroot, work, "/check"] if chroot else [path]
        for attempt in range(3):  # ETXTBSY: another thread forked while the file was open
            try:
                result = subprocess.run(argv, env={}, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, timeout=TEST_TIMEOUT)
            except subprocess.TimeoutExpired:
                return f"a test binary did not exit within {TEST_TIMEOUT:g}s"
            except OSError as error:
                if error.errno == errno.ETXTBSY and attempt < 2:
                    continue
                return f"a test binary cannot start: {error.strerror}"
            detail = result.stderr.decode(errors="replace").strip().splitlines()
            if result.returncode != 0:
                return f"a test binary exited with status {result.returncode}" + (f": {detail[-1]}" if detail else "")
            return ""
    return "a test binary cannot start"  # unreachable: the loop returns


# --- the answers, cached -------------------------------------------------------------------------


def _default_cache_file() -> Path:
    # the host's uid: a rootless pybuild is 0 inside, and must not share real root's file
    return Path(tempfile.gettempdir()) / f"pybuild-emulation-{host_uid()}.json"


class Detector:
    """Answers ``emulation_status``; one per (binfmt_misc directory, cache file, host)."""

    def __init__(self, binfmt_dir: Path = BINFMT_MISC, cache_file: Path | None = None, host: str | None = None) -> None:
        self.binfmt_dir = binfmt_dir
        self.cache_file = cache_file if cache_file is not None else _default_cache_file()
        self.host = host if host is not None else host_platform()
        self._lock = threading.Lock()
        self._tested: dict[str, str] = {}  # cache key -> "" (ran) or why not

    def status(self, platform: str) -> EmulationStatus:
        name = normalize_platform(platform)
        if name == self.host or _microarchitecture_of(name) == self.host:
            return EmulationStatus(name, True, "native")
        arch = ARCHES.get(name)
        if arch is None:
            known = ", ".join(ARCHES)
            return self._unavailable(name, f"pybuild cannot run {name} binaries (it knows {known})")
        entries = read_entries(self.binfmt_dir)
        matching = [entry for entry in entries or () if entry.matches(arch.binary)]
        if not matching and name in _COMPANIONS.get(self.host, ()):
            why = self._tested_once(f"{name}\0native\0{os.uname().release}", arch.binary)
            if not why:
                return EmulationStatus(name, True, "native")
        if entries is None:
            return self._unavailable(name, f"binfmt_misc is not mounted at {self.binfmt_dir}")
        if not _globally_enabled(self.binfmt_dir):
            return self._unavailable(name, f"binfmt_misc is disabled ({self.binfmt_dir}/status)")
        if not matching:
            return self._unavailable(name, f"no binfmt_misc handler for {arch.qemu} binaries")
        entry = _best(matching)
        problem = _entry_problem(entry)
        if problem:
            return self._unavailable(name, problem, entry.interpreter)
        why = self._tested_once(_entry_key(name, entry), arch.binary)
        if why:
            return self._unavailable(name, f"handler {entry.name} ({entry.interpreter}): {why}", entry.interpreter)
        return EmulationStatus(name, True, "emulated", entry.interpreter)

    def all(self) -> tuple[EmulationStatus, ...]:
        names = [self.host, *(name for name in ARCHES if name != self.host)]
        return tuple(self.status(name) for name in names)

    def forget(self) -> None:
        """Drop what memory knows (after registering or removing handlers)."""
        with self._lock:
            self._tested.clear()

    def _unavailable(self, name: str, reason: str, interpreter: str = "") -> EmulationStatus:
        return EmulationStatus(name, False, "unavailable", interpreter, reason, HINT)

    def _tested_once(self, key: str, binary: bytes) -> str:
        with self._lock:
            if key in self._tested:
                return self._tested[key]
            stored = self._load().get(key)
            why = stored if isinstance(stored, str) else run_test_binary(binary)
            self._tested[key] = why
            if not isinstance(stored, str):
                self._store(key, why)
            return why

    def _load(self) -> dict[str, object]:
        try:
            fd = os.open(self.cache_file, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return {}
        with os.fdopen(fd, "rb") as file:
            if os.fstat(file.fileno()).st_uid != os.geteuid():  # someone else's file in /tmp: not ours to trust
                return {}
            try:
                data = json.loads(file.read(1 << 16))
            except ValueError:
                return {}
        return data if isinstance(data, dict) else {}

    def _store(self, key: str, why: str) -> None:
        data = self._load()
        data[key] = why
        try:
            fd, temp = tempfile.mkstemp(prefix=".pybuild-emulation-", dir=self.cache_file.parent)
            with os.fdopen(fd, "w") as file:
                json.dump(data, file)
            os.replace(temp, self.cache_file)
        except OSError:  # a cache that cannot be written only costs a test next time
            pass


def _microarchitecture_of(name: str) -> str:
    """``linux/amd64/v3`` -> ``linux/amd64``: the same kernel runs it (CPU features are the
    image's concern, as an amd64 host runs any variant); "" for anything else."""
    base, _, variant = name.rpartition("/")
    return base if base == "linux/amd64" and variant in ("v2", "v3", "v4") else ""


def _best(entries: Sequence[BinfmtEntry]) -> BinfmtEntry:
    """Of several handlers for one architecture, a usable one if any."""
    return min(entries, key=lambda entry: (bool(_entry_problem(entry)), entry.name))


def _entry_problem(entry: BinfmtEntry) -> str:
    if not entry.enabled:
        return f"handler {entry.name} is disabled"
    if not entry.interpreter or not os.path.exists(entry.interpreter):
        return f"handler {entry.name}'s interpreter {entry.interpreter or '(none)'} does not exist"
    if "F" not in entry.flags:
        return (f"handler {entry.name} lacks the F (fix-binary) flag: its interpreter {entry.interpreter} "
                "would be looked up inside the build's root")
    return ""


def _entry_key(platform: str, entry: BinfmtEntry) -> str:
    try:
        info = os.stat(entry.interpreter)
        stat = f"{info.st_dev}:{info.st_ino}:{info.st_size}:{info.st_mtime_ns}"
    except OSError:
        stat = "-"
    return hashlib.sha256(f"{platform}\0{entry.name}\0{entry.text}\0{stat}".encode()).hexdigest()


_DETECTOR: Detector | None = None


def _detector() -> Detector:
    global _DETECTOR
    if _DETECTOR is None:
        _DETECTOR = Detector()
    return _DETECTOR


def emulation_status(platform: str) -> EmulationStatus:
    """Whether this machine can run ``platform``'s binaries, and how (see the module's docstring)."""
    return _detector().status(platform)


def runnable_platforms() -> tuple[EmulationStatus, ...]:
    """Every platform pybuild knows, the host's first, with how each runs (tests each emulator once)."""
    return _detector().all()


# --- registering qemu-user-static's handlers ------------------------------------------------------


@dataclass(frozen=True)
class Handler:
    """A handler as qemu-user-static describes it: the register line's fields."""

    name: str  # qemu-aarch64
    offset: str
    magic: str  # as written, with \\xNN escapes: written to the kernel as is
    mask: str
    interpreter: str
    flags: str

    def magic_bytes(self) -> tuple[int, bytes, bytes]:
        return int(self.offset or "0"), _unescape(self.magic), _unescape(self.mask)

    def platforms(self) -> tuple[str, ...]:
        offset, magic, mask = self.magic_bytes()
        entry = BinfmtEntry(self.name, True, self.interpreter, self.flags, offset, magic, mask, "")
        return tuple(name for name, arch in ARCHES.items() if entry.matches(arch.binary))


def _unescape(text: str) -> bytes:
    """``\\x7fELF`` as written in a handler file -> its bytes."""
    return text.encode().decode("unicode_escape").encode("latin-1")


def available_handlers(dirs: Sequence[Path] = HANDLER_DIRS) -> tuple[Handler, ...]:
    """qemu-user-static's handlers, from the first of ``dirs`` that has any."""
    for directory in dirs:
        found = [h for path in sorted(directory.glob("qemu-*")) if (h := _read_handler(path)) is not None]
        if found:
            return tuple(found)
    return ()


def _read_handler(path: Path) -> Handler | None:
    try:
        text = path.read_text()
    except OSError:
        return None
    if path.suffix == ".conf":  # systemd binfmt.d: :name:type:offset:magic:mask:interpreter:flags
        for line in text.splitlines():
            fields = line.split(":")
            if len(fields) == 8 and fields[2] == "M":
                return Handler(fields[1], fields[3], fields[4], fields[5], fields[6], fields[7])
        return None
    values = dict(line.partition(" ")[::2] for line in text.splitlines())  # binfmt-support's format
    if "magic" not in values or "interpreter" not in values:
        return None
    flags = ("F" if values.get("fix_binary") == "yes" else "") + ("P" if values.get("preserve") == "yes" else "")
    flags += "C" if values.get("credentials") == "yes" else ""
    return Handler(path.name, values.get("offset", "0"), values["magic"], values.get("mask", ""), values["interpreter"], flags)


def _selected(handlers: Sequence[Handler], selection: Sequence[str] | None, host: str) -> list[Handler]:
    """The handlers named by ``selection`` (platforms, architectures or handler names; None: all),
    never one for what the host runs natively."""
    native = {host, *_COMPANIONS.get(host, ())}
    usable = [h for h in handlers if not native & set(h.platforms())]
    if selection is None:
        return usable
    chosen: list[Handler] = []
    for item in selection:
        platform = normalize_platform(item)
        match = [h for h in usable if platform in h.platforms() or h.name in (item, f"qemu-{item}")]
        if not match:
            if platform in native:
                continue  # nothing to install for the host's own platform
            names = ", ".join(sorted({p for h in usable for p in h.platforms()}))
            raise UsageError(f"no {PACKAGE} handler for {item!r}", hint=f"these can be installed: {names or 'none'}")
        chosen.extend(h for h in match if h not in chosen)
    return chosen


def _require_root(action: str) -> None:
    if os.geteuid() != 0:
        raise EmulationError(f"pybuild binfmt {action} needs root: it changes the kernel's binfmt_misc handlers",
                             hint="run it with sudo")


def _mount_binfmt_misc(binfmt_dir: Path) -> None:
    if (binfmt_dir / "register").exists():
        return
    from ._linux import mount

    try:
        mount("binfmt_misc", str(binfmt_dir), "binfmt_misc")
    except OSError as error:
        raise EmulationError(f"cannot mount binfmt_misc on {binfmt_dir}: {os.strerror(error.errno or 0)}",
                             hint="load the kernel module: modprobe binfmt_misc") from None


def install_handlers(selection: Sequence[str] | None = None, *, binfmt_dir: Path = BINFMT_MISC,
                     handler_dirs: Sequence[Path] = HANDLER_DIRS) -> tuple[str, ...]:
    """Register qemu-user-static's handlers (all, or those ``selection`` names) with the F flag;
    the names registered (``pybuild-qemu-aarch64``...), skipping any already there."""
    _require_root("--install")
    handlers = available_handlers(handler_dirs)
    if not handlers:
        raise EmulationError(f"no QEMU handlers in {' or '.join(map(str, handler_dirs))}",
                             hint=f"install Debian's {PACKAGE} package (apt-get install {PACKAGE})")
    chosen = _selected(handlers, selection, host_platform())
    _mount_binfmt_misc(binfmt_dir)
    registered = []
    for handler in chosen:
        name = HANDLER_PREFIX + handler.name
        if (binfmt_dir / name).exists():
            continue
        flags = handler.flags if "F" in handler.flags else handler.flags + "F"
        line = f":{name}:M:{handler.offset}:{handler.magic}:{handler.mask}:{handler.interpreter}:{flags}"
        try:
            (binfmt_dir / "register").write_text(line)
        except OSError as error:
            raise EmulationError(f"cannot register {name} ({handler.interpreter}): {os.strerror(error.errno or 0)}") from None
        registered.append(name)
    _detector().forget()
    return tuple(registered)


def _names_entry(item: str, entry: BinfmtEntry) -> bool:
    """Whether ``item`` (a platform, an architecture or a handler's name) designates ``entry``."""
    if entry.name in (item, HANDLER_PREFIX + item, f"{HANDLER_PREFIX}qemu-{item}"):
        return True
    arch = ARCHES.get(normalize_platform(item))
    return arch is not None and entry.matches(arch.binary)


def uninstall_handlers(selection: Sequence[str] | None = None, *, binfmt_dir: Path = BINFMT_MISC) -> tuple[str, ...]:
    """Remove the handlers pybuild registered (all, or those ``selection`` names); the names removed."""
    _require_root("--uninstall")
    entries = read_entries(binfmt_dir) or ()
    ours = [entry for entry in entries if entry.name.startswith(HANDLER_PREFIX)]
    if selection is not None:
        ours = [entry for entry in ours if any(_names_entry(item, entry) for item in selection)]
    removed = []
    for entry in ours:
        try:
            (binfmt_dir / entry.name).write_text("-1")
        except FileNotFoundError:
            continue
        except OSError as error:
            raise EmulationError(f"cannot remove {entry.name}: {os.strerror(error.errno or 0)}") from None
        removed.append(entry.name)
    _detector().forget()
    return tuple(removed)
