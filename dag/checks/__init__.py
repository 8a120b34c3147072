"""The build checks: ``pybuild check`` and ``build --check``, as ``docker build --check``.

``_check`` runs them and makes the report; ``_model`` loads the Dockerfile
with its comments; ``_walk`` is a dry run of the stages' ARG/ENV scopes (on
the model conversion uses, ``dag._scope``); ``_buildkit`` holds BuildKit's
rules, ``_layers`` pybuild's layer lessons (reading RUN scripts with
``_shell``); ``_rules`` lists every rule and ``_config`` reads ``# check=``.

``pybuild.dag`` loads this package on first use: a build does not need it.
"""

from ._check import CheckReport as CheckReport
from ._check import CheckWarning as CheckWarning
from ._check import check_dockerfile as check_dockerfile
