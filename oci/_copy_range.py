"""Copying a range of one file into another: in the kernel when it can, else an ordinary copy.

``copy_file_range`` copies without passing the bytes through Python (a
reflink where the filesystem can), but refuses two files on different
filesystems (``EXDEV``: an export from a root on disk to an output on a
tmpfs or another disk) and, on some filesystems and kernels, any file
(``EINVAL``, ``ENOSYS``, ``EOPNOTSUPP``).  Then the copy goes on with
``pread``/``pwrite``; the first refusal decides for the rest of the file.
"""

from __future__ import annotations

import errno
import os

_REFUSED = frozenset({errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP})
_KERNEL_CHUNK = 1 << 30
_CHUNK = 1 << 20


def copy_range(src: int, dst: int, size: int, src_offset: int = 0, dst_offset: int = 0) -> int:
    """Copy ``size`` bytes of ``src`` from ``src_offset`` to ``dst`` at ``dst_offset``.

    Neither descriptor's file position moves.  Returns the bytes copied:
    fewer than ``size`` only if ``src`` ends first.
    """
    copied = 0
    in_kernel = True
    while copied < size:
        left = size - copied
        if in_kernel:
            try:
                n = os.copy_file_range(src, dst, min(left, _KERNEL_CHUNK), src_offset + copied, dst_offset + copied)
            except OSError as error:
                if error.errno not in _REFUSED:
                    raise
                in_kernel = False  # nothing was copied by the failed call: go on from the same offset
                continue
        else:
            n = _pread_pwrite(src, dst, min(left, _CHUNK), src_offset + copied, dst_offset + copied)
        if n == 0:
            break
        copied += n
    return copied


def _pread_pwrite(src: int, dst: int, count: int, src_offset: int, dst_offset: int) -> int:
    data = os.pread(src, count, src_offset)
    view = memoryview(data)
    while view:
        written = os.pwrite(dst, view, dst_offset)
        view = view[written:]
        dst_offset += written
    return len(data)
