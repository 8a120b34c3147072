"""The build graph: ops, Dockerfile -> graph conversion, and the trio solver.

Imports ``grammar`` (instructions), ``oci``, ``cache`` and ``executors``; the
solver reaches those layers only through small Protocols, so its tests run
with fakes and no root.  ``networkx`` is imported here and nowhere else.

Several target platforms (``BuildOptions.platforms``) are converted into one
graph, so the steps every target shares are one op and run once; see
``convert`` and ``build``.

The build checks (``pybuild check``) load on first use: a build does not
need their rule tables; neither do ``pybuild graph`` or ``check`` need the
solver and worker (``build``, ``Worker``), which load on first use too.
"""

from typing import TYPE_CHECKING

from pybuild import _lazy

from ._convert import BuildOptions as BuildOptions
from ._convert import BuildPlan as BuildPlan
from ._convert import ImageLookup as ImageLookup
from ._convert import MissingImages as MissingImages
from pybuild.oci import ResolvedImage as ResolvedImage  # what an ImageLookup answers
from ._convert import convert as convert
from ._copy import git_source as git_source
from ._copy import http_source as http_source
from ._copy import is_git_source as is_git_source
from ._devices import is_device_entitlement as is_device_entitlement
from ._graph import Definition as Definition
from ._image import HistoryStep as HistoryStep
from ._image import StageImage as StageImage
from ._ops import ExecOp as ExecOp
from ._ops import FileOp as FileOp
from ._ops import ImageSource as ImageSource
from ._ops import LocalSource as LocalSource
from ._ops import MergeOp as MergeOp
from ._ops import OpMeta as OpMeta
from ._ops import op_digest as op_digest
from ._platform import Platform as Platform
from ._platform import host_platform as host_platform
from ._stage import StageResult as StageResult

_LAZY = {name: ".checks" for name in ("CheckReport", "CheckWarning", "check_dockerfile")}
_LAZY |= {name: "._build" for name in ("BuildOutcome", "ExportOptions", "Registries", "StoreImageChains", "build", "step_ids")}
_LAZY |= {name: "._worker" for name in ("Context", "Worker", "WorkerOptions")}
_LAZY["Notice"] = "._events"  # what a build reports besides steps; graph and check need none
_LAZY |= {name: "._runner" for name in ("BuildRunner", "ExportPreparer", "RemoteCacheRunner")}
_LAZY |= {name: "._layers" for name in ("SnapshotLayerStore", "MemorySnapshotLayers", "check_snapshot_layers")}
_LAZY["import_remote_cache"] = "._cache_wiring"  # --cache-from: cache.remote reads, oci parses and fetches


if TYPE_CHECKING:  # the names below, loaded on first use, typed for the checker
    from ._build import BuildOutcome as BuildOutcome
    from ._build import ExportOptions as ExportOptions
    from ._build import Registries as Registries
    from ._build import StoreImageChains as StoreImageChains
    from ._build import build as build
    from ._build import step_ids as step_ids
    from ._cache_wiring import import_remote_cache as import_remote_cache
    from ._events import Notice as Notice
    from ._layers import MemorySnapshotLayers as MemorySnapshotLayers
    from ._layers import SnapshotLayerStore as SnapshotLayerStore
    from ._layers import check_snapshot_layers as check_snapshot_layers
    from ._runner import BuildRunner as BuildRunner
    from ._runner import ExportPreparer as ExportPreparer
    from ._runner import RemoteCacheRunner as RemoteCacheRunner
    from ._worker import Context as Context
    from ._worker import Worker as Worker
    from ._worker import WorkerOptions as WorkerOptions
    from .checks import CheckReport as CheckReport
    from .checks import CheckWarning as CheckWarning
    from .checks import check_dockerfile as check_dockerfile

__getattr__ = _lazy.lazy_getattr(__name__, _LAZY)
