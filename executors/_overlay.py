"""Overlay mounts of snapshot chains, including chains longer than overlay allows.

Options keep the upper dir a faithful layer diff: ``redirect_dir=off`` (a
renamed directory is copied up whole instead of leaving a redirect xattr),
``metacopy=off`` (a chmod copies data too, so the upper file is complete) and
``index=off``.

Inside a user namespace (rootless) overlayfs may not use ``trusted.*``
xattrs: the mount takes ``userxattr`` (Linux >= 5.11), so opaque directories
carry ``user.overlay.opaque=y``, and ``redirect_dir=nofollow``, because
``userxattr`` refuses ``off`` (which still follows redirects).  Whiteouts
stay 0/0 character devices: unprivileged mknod allows that one (Linux >= 5.8).

Overlay stacks at most 500 lower layers (``lowerdir+`` of the new mount API,
Linux >= 6.8; older kernels take one ``lowerdir=a:b`` string of one page
through mount(2)).  Longer chains are split: the bottom part is *flattened*
into a plain directory (its merged view copied once with ``cp -a``) and used
as the lowest layer.  Only a bottom part can be flattened: a whiteout in a
flattened group would otherwise stop hiding files of the layers below it.
Flattened prefixes are cut at fixed positions from the bottom (multiples of
``FLATTEN_CHUNK``), so a chain that grows at the top reuses them.

When the kernel refuses overlayfs in the user namespace (older kernels,
distributions that forbid it), ``probe_overlay`` chooses ``fuse-overlayfs``
(Debian's package) for the process and its children (``PYBUILD_OVERLAY_DRIVER``),
as BuildKit's rootless mode does.  fuse-overlayfs marks an opaque directory
its own way (``user.fuseoverlayfs.opaque``, a ``.wh..wh..opq`` file and a
``.wh..opq`` whiteout in it); ``normalise_upper`` rewrites an upper dir it
wrote into the kernel's form, so snapshots and layers are the same either way.

Stdlib only (imported by the zygote, see ``_zygote.py``).
"""

from __future__ import annotations

import errno
import os
import stat

# hashlib, shutil, subprocess and tempfile are imported where used: the zygote loads this
# module at every build's start, and they serve the fuse driver, deep chains and the probe
# only (10-30 ms of its start here); ask_once() loads what the fuse driver needs per step.

if __package__:
    from . import _linux as linux
    from ._values import value
else:  # loaded by the zygote as a top-level module
    import _linux as linux
    from _values import value

MAX_LOWERS = 500  # the kernel's OVL_MAX_STACK
FLATTEN_CHUNK = 250
_PAGE = 4096

FAITHFUL_OPTIONS = (("redirect_dir", "off"), ("metacopy", "off"), ("index", "off"))
USERNS_OPTIONS = (("userxattr", None), ("redirect_dir", "nofollow"), ("metacopy", "off"), ("index", "off"))

_IN_USERNS: bool | None = None


def in_user_namespace() -> bool:
    """True in a user namespace other than the initial one (rootless pybuild), read once.

    Any map but the identity means ``trusted.*`` xattrs are out of reach and
    overlayfs needs ``userxattr``.  Cached: it is asked per directory of an upper.
    """
    global _IN_USERNS
    if _IN_USERNS is None:
        _IN_USERNS = linux.in_user_namespace()
    return _IN_USERNS


DRIVER_ENV = "PYBUILD_OVERLAY_DRIVER"
KERNEL, FUSE = "kernel", "fuse-overlayfs"
_FUSE_OPAQUE = "user.fuseoverlayfs.opaque"
_FUSE_OPAQUE_NAMES = (b".wh..wh..opq", b".wh..opq")  # fuse-overlayfs's marker file and whiteout
_WHITEOUT_PREFIX = b".wh."


@value
class OverlayDriver:
    """How layers are mounted in this process: ``kernel`` or ``fuse-overlayfs``, and why."""

    name: str
    reason: str = ""


def driver() -> str:
    """The overlay driver chosen for this process (``probe_overlay``): kernel unless told."""
    return FUSE if os.environ.get(DRIVER_ENV) == FUSE else KERNEL


def probe_overlay(directory: str) -> OverlayDriver:
    """Choose how to mount layers: try a kernel overlay mount in a user namespace.

    As root the kernel's overlayfs is always used.  Rootless, a refused trial
    mount (of empty layers made under ``directory``, on the store's file
    system) switches this process and the ones it starts to fuse-overlayfs
    when it is installed; ``reason`` says what the kernel answered.  Needs
    the private mount namespace a rootless pybuild enters.
    """
    if os.environ.get(DRIVER_ENV) == FUSE:
        return OverlayDriver(FUSE, f"layers mounted through fuse-overlayfs ({DRIVER_ENV}={FUSE})")
    if not in_user_namespace():
        return OverlayDriver(KERNEL)
    import shutil
    import tempfile

    os.makedirs(directory, exist_ok=True)
    trial = tempfile.mkdtemp(prefix="overlay-probe-", dir=directory)
    try:
        for name in ("lower", "upper", "work"):
            os.mkdir(os.path.join(trial, name))
        try:
            os.close(mount_overlay_fd((os.path.join(trial, "lower"),), os.path.join(trial, "upper"), os.path.join(trial, "work")))
            return OverlayDriver(KERNEL)
        except OSError as e:
            refused = e.strerror or str(e)
    finally:
        shutil.rmtree(trial, ignore_errors=True)
    if shutil.which("fuse-overlayfs") is None:
        return OverlayDriver(KERNEL, f"the kernel refused overlayfs in the user namespace ({refused}) and fuse-overlayfs is not installed")
    os.environ[DRIVER_ENV] = FUSE
    return OverlayDriver(FUSE, f"the kernel refused overlayfs in the user namespace ({refused}): using fuse-overlayfs")


def mount_fuse_overlay_at(target: str, lowers: tuple[str, ...], upper: str | None, work: str | None) -> None:
    """Mount ``lowers`` (top first) with ``upper`` at ``target`` through fuse-overlayfs.

    It daemonizes once the mount is ready and leaves when the mount is gone.
    Its option string cannot escape ``:`` or ``,``: such a layer path is refused.
    """
    paths = list(lowers) + [p for p in (upper, work) if p is not None]
    for path in paths:
        if ":" in path or "," in path:
            raise OSError(errno.EINVAL, "fuse-overlayfs cannot take a layer path with ':' or ','", path)
    options = "lowerdir=" + ":".join(lowers)
    if upper is not None:
        options += f",upperdir={upper},workdir={work or ''}"
    import subprocess  # loaded by ask_once() in the zygote when the fuse driver is used

    # fuse-overlayfs takes no "--"; the target is a mount point pybuild made, always absolute.
    target = os.path.abspath(target)
    done = subprocess.run(["fuse-overlayfs", "-o", options, target], stdin=subprocess.DEVNULL, capture_output=True, check=False)
    if done.returncode != 0:
        detail = " ".join(line for line in done.stderr.decode(errors="replace").splitlines() if "unknown argument ignored" not in line)
        raise OSError(errno.EIO, f"fuse-overlayfs: {detail or 'exit status %d' % done.returncode}", target)


def normalise_upper(upper: str) -> None:
    """Rewrite an upper dir fuse-overlayfs wrote into the kernel overlay's form.

    Opaque directories get the xattr the kernel reads (``overlay_xattr_prefix``)
    instead of fuse-overlayfs's xattr, marker file and marker whiteout;
    whiteouts it had to write as ``.wh.NAME`` files become 0/0 devices.
    A no-op unless this process mounts through fuse-overlayfs.
    """
    if driver() != FUSE:
        return
    opaque = overlay_xattr_prefix() + "opaque"
    for directory, dirs, files in os.walk(os.fsencode(upper)):
        names = set(dirs) | set(files)
        marked = any(name in names for name in _FUSE_OPAQUE_NAMES)
        try:
            marked = os.getxattr(directory, _FUSE_OPAQUE, follow_symlinks=False) == b"y" or marked
            os.removexattr(directory, _FUSE_OPAQUE, follow_symlinks=False)
        except OSError:
            pass
        if marked:
            for name in _FUSE_OPAQUE_NAMES:
                if name in names:
                    os.unlink(os.path.join(directory, name))
            os.setxattr(directory, opaque, b"y", follow_symlinks=False)
        for name in files:
            if name.startswith(_WHITEOUT_PREFIX) and name not in _FUSE_OPAQUE_NAMES:
                _file_whiteout_to_device(directory, name)


def _file_whiteout_to_device(directory: bytes, name: bytes) -> None:
    path = os.path.join(directory, name)
    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode) or st.st_size:
        return
    hidden = os.path.join(directory, name[len(_WHITEOUT_PREFIX) :])
    os.unlink(path)
    os.mknod(hidden, stat.S_IFCHR | 0o600, 0)


def overlay_options() -> tuple[tuple[str, str | None], ...]:
    """The options that keep the upper dir a faithful layer diff, for this namespace."""
    if in_user_namespace():
        return USERNS_OPTIONS
    return FAITHFUL_OPTIONS


def overlay_xattr_prefix() -> str:
    """Where overlayfs keeps its own xattrs (opaque, redirect...) in this namespace."""
    return "user.overlay." if in_user_namespace() else "trusted.overlay."


@value
class OverlayPlan:
    """How to mount a chain: ``direct`` layers (top first) above an optional flattened prefix.

    ``flatten`` lists prefix lengths (bottom-up layer counts) to materialise,
    shortest first; the last one is the lowest layer of the mount.
    """

    direct: tuple[str, ...]
    flatten: tuple[int, ...]


def plan_chain(lowers: tuple[str, ...], max_lowers: int = MAX_LOWERS, chunk: int = FLATTEN_CHUNK) -> OverlayPlan:
    """Split a chain (top first) into direct layers and flattened bottom prefixes."""
    if len(lowers) <= max_lowers:
        return OverlayPlan(direct=tuple(lowers), flatten=())
    chunk = max(1, min(chunk, max_lowers - 1))
    count = len(lowers)
    # The shortest prefix at a chunk boundary that leaves room for it as one more layer.
    prefix = -(-(count - (max_lowers - 1)) // chunk) * chunk
    steps = tuple(range(chunk, prefix + 1, chunk))
    return OverlayPlan(direct=tuple(lowers[: count - prefix]), flatten=steps)


def flatten_key(bottom_up: list[str]) -> str:
    """A name for a flattened prefix: the layer paths and their directory identities."""
    import hashlib

    digest = hashlib.sha256()
    for path in bottom_up:
        st = os.stat(path)
        digest.update(f"{path}\0{st.st_dev}:{st.st_ino}\0".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()[:32]


# With PYBUILD_VOLATILE_OVERLAYS=1, a build's writable overlays are mounted ``volatile``
# (Linux >= 5.10): without it, every unmount of one syncs the whole file system the upper dir is
# on (``ovl_sync_fs``), 4-10 ms of each RUN and COPY step here, more when other work keeps that
# disk busy.  The upper dir is committed as a snapshot or thrown away right after, and never
# mounted again (the kernel refuses to remount a volatile work dir).  It is not the default:
# that sync is what makes a committed snapshot's files durable, and after a power loss (not a
# crash of pybuild: the page cache outlives it) a step committed in the last seconds could have
# lost data the root would still trust.  Only the processes that make build steps ask for it
# (the zygote, the rootfs caller), so a container's upper dir stays synced as before.
#
# A RUN step's overlay is volatile by default all the same, with the sync moved: the monitor
# syncs the upper dir's file system itself once the step's processes are gone
# (``step_sync_wanted``), so a committed snapshot is as durable as before, while every fsync
# the step makes is free (dpkg fsyncs each file it unpacks: some 1,600 journal commits for
# `apt-get install python3`, where one syncfs at the end writes the same data).  A step's own
# fsync has nothing to protect: after a crash its upper dir is thrown away.
#
# A build whose snapshots settle later (cache ``defer_durability``: one syncfs at the end of
# the build, the snapshots trusted only in this boot until then) asks for neither sync:
# ``defer_step_syncs``, told to the zygote through its environment (``DEFERRED_ENV``).
_VOLATILE_UPPERS = [False]
_VOLATILE_SUPPORTED: list[bool] = []
_STEP_SYNC = [True]
_DEFERRED = [False]
DEFERRED_ENV = "PYBUILD_STEP_SYNC"  # "deferred": pybuild's own, set only in the zygote's environment


def defer_step_syncs(deferred: bool = True) -> None:
    """Whether this process's build steps (its zygotes started from now on, its COPY overlays)
    leave their changes to the build's one sync at its end: set for a build, unset after it."""
    _DEFERRED[0] = deferred


def step_syncs_deferred() -> bool:
    return _DEFERRED[0] or os.environ.get(DEFERRED_ENV) == "deferred"


def volatile_uppers_requested() -> bool:
    """Whether the user traded durability on power loss for speed (PYBUILD_VOLATILE_OVERLAYS=1)."""
    return os.environ.get("PYBUILD_VOLATILE_OVERLAYS") == "1"


def use_volatile_uppers() -> None:
    """Mount this process's writable overlays (and its forks') ``volatile`` where the kernel can."""
    _VOLATILE_UPPERS[0] = True


def volatile_steps(*, synced: bool) -> None:
    """The zygote's choice: steps' overlays volatile, their changes synced at the end unless not ``synced``."""
    use_volatile_uppers()
    _STEP_SYNC[0] = synced


def step_sync_wanted(upper: str | None) -> bool:
    """Whether the monitor syncs this upper dir's file system itself: its mount skips the sync."""
    return _STEP_SYNC[0] and volatile_wanted(upper)


def ask_once() -> None:
    """Probe what every mount of this process asks (lowerdir+, volatile, the namespace) now,
    so the processes it forks (the zygote's monitors, one a step) inherit the answers."""
    lowerdir_plus_supported()
    _volatile_supported()
    in_user_namespace()
    if driver() == FUSE:
        import subprocess  # noqa: F401  (each step's fuse-overlayfs mount runs it: loaded once here)


def volatile_wanted(upper: str | None) -> bool:
    """Whether a mount with this upper dir takes ``volatile``: asked for, writable, kernel driver, supported."""
    return upper is not None and (_VOLATILE_UPPERS[0] or _DEFERRED[0]) and driver() == KERNEL and _volatile_supported()


def _volatile_supported() -> bool:
    if not _VOLATILE_SUPPORTED:
        _VOLATILE_SUPPORTED.append(_accepts_flag("volatile"))
    return _VOLATILE_SUPPORTED[0]


def _accepts_flag(key: str) -> bool:
    """Does the kernel's overlayfs know the option ``key`` (it refuses unknown ones as they are set)?"""
    try:
        fs_fd = linux.fsopen("overlay")
    except OSError:
        return False
    try:
        linux.fsconfig_flag(fs_fd, key)
        return True
    except OSError:
        return False
    finally:
        os.close(fs_fd)


def mount_overlay_fd(lowers: tuple[str, ...], upper: str | None = None, work: str | None = None) -> int:
    """A detached overlay mount (fd) of ``lowers`` (top first, at most MAX_LOWERS).

    Read-only when ``upper`` is None.  Overlay refuses a single lower layer
    without an upper one, so that case is made a read-only bind of the layer.
    """
    if upper is None and len(lowers) == 1:
        fd = linux.open_tree(lowers[0], linux.OPEN_TREE_CLONE | linux.OPEN_TREE_CLOEXEC | linux.AT_RECURSIVE)
        linux.mount_setattr(fd, linux.MOUNT_ATTR_RDONLY)
        return fd
    fs_fd = linux.fsopen("overlay")
    try:
        for layer in lowers:
            linux.fsconfig_string(fs_fd, "lowerdir+", layer)
        if upper is not None:
            linux.fsconfig_string(fs_fd, "upperdir", upper)
            linux.fsconfig_string(fs_fd, "workdir", work or "")
        for key, value in overlay_options():
            if value is None:
                linux.fsconfig_flag(fs_fd, key)
            else:
                linux.fsconfig_string(fs_fd, key, value)
        if volatile_wanted(upper):
            linux.fsconfig_flag(fs_fd, "volatile")
        linux.fsconfig_create(fs_fd)
        return linux.fsmount(fs_fd, 0 if upper is not None else linux.MOUNT_ATTR_RDONLY)
    finally:
        os.close(fs_fd)


def legacy_overlay_options(lowers: tuple[str, ...], upper: str | None, work: str | None) -> str:
    """The mount(2) option string (kernels without ``lowerdir+``); paths escaped."""

    def escape(path: str) -> str:
        return path.replace("\\", "\\\\").replace(":", "\\:").replace(",", "\\,")

    options = ["lowerdir=" + ":".join(escape(layer) for layer in lowers)]
    if upper is not None:
        options += [f"upperdir={escape(upper)}", f"workdir={escape(work or '')}"]
    options += [key if value is None else f"{key}={value}" for key, value in overlay_options()]
    if volatile_wanted(upper):
        options.append("volatile")
    return ",".join(options)


def legacy_max_lowers(lowers: tuple[str, ...]) -> int:
    """How many layers of ``lowers`` fit in one page of mount(2) options."""
    longest = max((len(os.fsencode(layer)) * 2 + 1 for layer in lowers), default=1)
    return max(2, min(MAX_LOWERS, (_PAGE - 512) // longest))


def _has_lowerdir_plus() -> bool:
    try:
        fs_fd = linux.fsopen("overlay")
    except OSError:
        return False
    try:
        linux.fsconfig_string(fs_fd, "lowerdir+", "/")
        return True
    except OSError:
        return False
    finally:
        os.close(fs_fd)


_LOWERDIR_PLUS: bool | None = None


def lowerdir_plus_supported() -> bool:
    global _LOWERDIR_PLUS
    if _LOWERDIR_PLUS is None:
        _LOWERDIR_PLUS = _has_lowerdir_plus()
    return _LOWERDIR_PLUS


def mount_overlay_at(
    target: str,
    lowers: tuple[str, ...],
    upper: str | None,
    work: str | None,
    *,
    scratch: str,
    flatten_dir: str,
) -> None:
    """Mount the chain ``lowers`` (top first) at ``target``, flattening if it is too long.

    ``scratch`` is a private directory for temporary mount points;
    ``flatten_dir`` keeps flattened prefixes between steps.  Must run in a
    private mount namespace.
    """
    if lowerdir_plus_supported():
        plan = plan_chain(lowers)
    else:
        plan = plan_chain(lowers, max_lowers=legacy_max_lowers(lowers))
    chain = plan.direct
    if plan.flatten:
        chain = chain + (_flattened(lowers, plan.flatten, scratch, flatten_dir),)
    if driver() == FUSE and not (upper is None and len(chain) == 1):
        mount_fuse_overlay_at(target, chain, upper, work)
        return
    if lowerdir_plus_supported():
        fd = mount_overlay_fd(chain, upper, work)
        try:
            linux.move_mount_to(fd, target)
        finally:
            os.close(fd)
        return
    if upper is None and len(chain) == 1:
        linux.mount(chain[0], target, None, linux.MS_BIND | linux.MS_REC)
        linux.mount(None, target, None, linux.MS_BIND | linux.MS_REMOUNT | linux.MS_RDONLY)
        return
    flags = 0 if upper is not None else linux.MS_RDONLY
    linux.mount("overlay", target, "overlay", flags, legacy_overlay_options(chain, upper, work))


def _flattened(lowers: tuple[str, ...], prefixes: tuple[int, ...], scratch: str, flatten_dir: str) -> str:
    """The flattened directory of the longest prefix, building shorter ones first."""
    bottom_up = list(reversed(lowers))
    step = prefixes[0]
    below: str | None = None
    for length in prefixes:
        group = bottom_up[length - step if below is not None else 0 : length]
        path = os.path.join(flatten_dir, flatten_key(bottom_up[:length]))
        if not os.path.isdir(path):
            layers = tuple(reversed(group)) + ((below,) if below is not None else ())
            _materialise(layers, path, scratch)
        below = path
    assert below is not None
    return below


def _materialise(layers: tuple[str, ...], dest: str, scratch: str) -> None:
    """Copy the merged view of ``layers`` (top first, the bottom of a chain) to ``dest``."""
    import shutil
    import subprocess

    view = os.path.join(scratch, "flatten-view")
    os.makedirs(view, exist_ok=True)
    if len(layers) == 1:
        linux.mount(layers[0], view, None, linux.MS_BIND | linux.MS_REC)
    else:
        mount_overlay_at(view, layers, None, None, scratch=scratch, flatten_dir=os.path.dirname(dest))
    partial = f"{dest}.partial-{os.getpid()}"
    try:
        # cp -a keeps owners, modes, times, xattrs, hard links and device nodes.
        subprocess.run(["cp", "-a", "--", view, partial], check=True, stdin=subprocess.DEVNULL, capture_output=True)
        try:
            os.rename(partial, dest)
        except OSError as e:
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            shutil.rmtree(partial, ignore_errors=True)  # another step made it first
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    finally:
        linux.umount2(view, linux.MNT_DETACH)
