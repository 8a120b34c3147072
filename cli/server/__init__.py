"""The fork server: ``pybuild build`` handed to a resident process that has imported
everything a build needs, which forks a child per build (as Bazel's and Gradle's
clients do, and Python's own ``forkserver``): a build skips Python's start-up and
imports.  Only the client is imported by ``pybuild build`` (light stdlib only); the
server (``pybuild server``) is ``_command``, ``_server``, ``_child`` and ``_preload``.
"""

from ._client import Outcome as Outcome
from ._client import serve as serve
from ._client import start_server as start_server
from ._client import wanted as wanted
