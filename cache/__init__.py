"""Content by digest: the blob store, snapshots, the SQLite cache index, cache
keys, build-context hashing and ``.dockerignore``, prune/du, remote caches.

Imports ``grammar`` at most; ``oci`` and ``dag`` build on top of it.

Everything here is synchronous and thread-safe (the solver calls it from
worker threads) and safe across processes sharing one root: SQLite in WAL
mode for the index, atomic renames for blobs and snapshots, per-process temp
areas that a crash leaves for the next process to remove.  Only the standard
library is used.

    Root.open()          the pybuild root: .blobs, .snapshots, .index, .tmp_dir()
    ContentStore         blobs by sha256 (FileContentStore; MemoryContentStore fake)
    Snapshotter          committed layer trees (DirSnapshotter)
    CacheIndex           cache records, step history, tags, images, leases, stat cache
    DockerIgnore         .dockerignore rules (moby/patternmatcher semantics)
    read_in_context      a file named inside the context, links followed only inside it
    ContextHasher        what COPY/ADD sources select from a context, and its digest
    ContextReads         every context path a hasher looked at, to check again with lstat
    open_tar_context     a context sent as a tar stream, unpacked safely
    disk_usage, prune    `pybuild du` / `pybuild prune`
    open_with_writeback  a file whose writeback starts while it is written
"""

from typing import TYPE_CHECKING

from pybuild import _lazy

from ._ignore import DockerIgnore as DockerIgnore
from ._ignore import find_ignore_file as find_ignore_file
from ._ignore import read_in_context as read_in_context

__all__ = [
    "ActiveSnapshot",
    "BlobRef",
    "BlobWriter",
    "tree_disk_usage",
    "syncfs",
    "open_with_writeback",
    "CacheIndex",
    "CacheRecord",
    "ContentStore",
    "ContextHasher",
    "ContextPath",
    "ContextReads",
    "DirSnapshotter",
    "DockerIgnore",
    "EntryChanges",
    "FileContentStore",
    "HashStats",
    "ImageRecord",
    "Lease",
    "MemoryContentStore",
    "PruneResult",
    "ReadEntry",
    "Root",
    "Selection",
    "Snapshotter",
    "StatCache",
    "StatKey",
    "Tag",
    "TarContext",
    "Usage",
    "check_cache_index",
    "check_content_store",
    "check_snapshotter",
    "diff_entries",
    "default_root_path",
    "disk_usage",
    "extract_context_tar",
    "find_ignore_file",
    "read_in_context",
    "open_tar_context",
    "prune",
]

# The conformance checks are for tests of other implementations: loaded on first use.
_LAZY = {name: "._conformance" for name in ("check_cache_index", "check_content_store", "check_snapshotter")}
# Pruning and disk usage are their own commands: a build never prunes.
_LAZY |= {name: "._prune" for name in ("PruneResult", "Usage", "disk_usage", "prune")}
# A context sent as a tar (``-`` or a tar file) is rare; tarfile loads with it.
_LAZY |= {name: "._tarctx" for name in ("TarContext", "extract_context_tar", "open_tar_context")}

# Everything but the ignore rules loads on first use: the no-op fast path (cli._fastpath)
# needs only DockerIgnore, and the rest (sqlite3, the stores, the hasher) costs 40 ms to import.
_LAZY |= {name: "._content" for name in ("BlobWriter", "ContentStore", "FileContentStore", "MemoryContentStore")}
_LAZY |= {name: "._util" for name in ("syncfs", "tree_disk_usage")}
_LAZY |= {name: "._context" for name in ("ContextHasher", "ContextPath", "ContextReads", "EntryChanges", "HashStats", "ReadEntry", "Selection", "StatCache", "diff_entries")}
_LAZY |= {name: "._index" for name in ("BlobRef", "CacheIndex", "CacheRecord", "ImageRecord", "Lease", "StatKey", "Tag")}
_LAZY |= {name: "._root" for name in ("Root", "default_root_path")}
_LAZY |= {name: "._snapshots" for name in ("ActiveSnapshot", "DirSnapshotter", "Snapshotter")}
_LAZY |= {name: "._writeback" for name in ("open_with_writeback",)}


if TYPE_CHECKING:  # the names below, loaded on first use, typed for the checker
    from ._content import BlobWriter as BlobWriter
    from ._util import syncfs as syncfs
    from ._util import tree_disk_usage as tree_disk_usage
    from ._content import ContentStore as ContentStore
    from ._content import FileContentStore as FileContentStore
    from ._content import MemoryContentStore as MemoryContentStore
    from ._context import ContextHasher as ContextHasher
    from ._context import ContextPath as ContextPath
    from ._context import ContextReads as ContextReads
    from ._context import EntryChanges as EntryChanges
    from ._context import HashStats as HashStats
    from ._context import ReadEntry as ReadEntry
    from ._context import Selection as Selection
    from ._context import StatCache as StatCache
    from ._context import diff_entries as diff_entries
    from ._index import BlobRef as BlobRef
    from ._index import CacheIndex as CacheIndex
    from ._index import CacheRecord as CacheRecord
    from ._index import ImageRecord as ImageRecord
    from ._index import Lease as Lease
    from ._index import StatKey as StatKey
    from ._index import Tag as Tag
    from ._root import Root as Root
    from ._root import default_root_path as default_root_path
    from ._snapshots import ActiveSnapshot as ActiveSnapshot
    from ._snapshots import DirSnapshotter as DirSnapshotter
    from ._snapshots import Snapshotter as Snapshotter
    from ._writeback import open_with_writeback as open_with_writeback
    from ._conformance import check_cache_index as check_cache_index
    from ._conformance import check_content_store as check_content_store
    from ._conformance import check_snapshotter as check_snapshotter
    from ._prune import PruneResult as PruneResult
    from ._prune import Usage as Usage
    from ._prune import disk_usage as disk_usage
    from ._prune import prune as prune
    from ._tarctx import TarContext as TarContext
    from ._tarctx import extract_context_tar as extract_context_tar
    from ._tarctx import open_tar_context as open_tar_context

__getattr__ = _lazy.lazy_getattr(__name__, _LAZY)
