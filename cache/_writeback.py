"""Files whose dirty pages start going to disk while they are still written.

A blob or an archive ends with ``fsync``; written first and synced at the
end, the whole file waits for the disk at once, after the CPU work is done.
Asking the kernel every few megabytes to start writing what is dirty
(``sync_file_range(SYNC_FILE_RANGE_WRITE)``, which neither waits nor makes
anything durable) lets the disk work while the file is still being made, so
the final ``fsync`` -- still the only durability point -- has little left.
"""

from __future__ import annotations

import io
import os
from typing import Any

WRITEBACK_STEP = 8 << 20
_SYNC_FILE_RANGE_WRITE = 2
_unavailable = object()
_sync_file_range: Any = None


def _libc_sync_file_range() -> Any:
    global _sync_file_range
    if _sync_file_range is None:
        try:
            import ctypes

            function = ctypes.CDLL(None, use_errno=True).sync_file_range
            function.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
            function.restype = ctypes.c_int
            _sync_file_range = function
        except (OSError, AttributeError):
            _sync_file_range = _unavailable
    return _sync_file_range


def start_writeback(fd: int) -> None:
    """Ask the kernel to start writing the file's dirty pages; a hint only."""
    function = _libc_sync_file_range()
    if function is not _unavailable:
        function(fd, 0, 0, _SYNC_FILE_RANGE_WRITE)  # an error only loses the hint


class _WritebackFileIO(io.FileIO):
    def __init__(self, file: int | str | os.PathLike[str], step: int) -> None:
        super().__init__(file, "w")
        self._step = step
        self._unsent = 0

    def write(self, data: Any, /) -> int:  # Any: whatever buffer io.FileIO takes
        n = super().write(data)
        if n:
            self._unsent += n
            if self._unsent >= self._step:
                self._unsent = 0
                start_writeback(self.fileno())
        return n


def open_with_writeback(file: int | str | os.PathLike[str], *, step: int = WRITEBACK_STEP) -> io.BufferedWriter:
    """``open(file, "wb")``, starting writeback every ``step`` bytes written."""
    return io.BufferedWriter(_WritebackFileIO(file, step))
