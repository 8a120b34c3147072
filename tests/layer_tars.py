"""A layer tar made in memory, for tests that play the part of a remote worker."""

from __future__ import annotations

import io
import tarfile


def layer_tar(files: dict[str, bytes]) -> bytes:
    """A PAX tar of regular files (name -> bytes, mode 644, mtime 1), in name order."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 1, 0o644
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()
