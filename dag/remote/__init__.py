"""Builds beyond one machine: RUN steps as REAPI Actions, and the ``type=reapi`` cache.

``_action`` is the Action format (step.json in, layer.tar and result.json out),
encoded here and decoded by ``pybuild worker`` (``dag.bot``).  The protocol
itself is ``pybuild.reapi``'s; this package is imported only when a remote
flag or the worker command is used, so a plain build never loads it.
"""

from ._action import LAYER_OUTPUT as LAYER_OUTPUT
from ._action import RESULT_OUTPUT as RESULT_OUTPUT
from ._action import SANDBOX_VERSION as SANDBOX_VERSION
from ._action import STEP_FILE as STEP_FILE
from ._action import BadStep as BadStep
from ._action import CacheAction as CacheAction
from ._action import EncodedStep as EncodedStep
from ._action import RemoteResult as RemoteResult
from ._action import RemoteStep as RemoteStep
from ._action import cache_action as cache_action
from ._action import check_command as check_command
from ._action import decode_result as decode_result
from ._action import decode_step as decode_step
from ._action import encode_step as encode_step
from ._action import layer_path as layer_path
from ._action import platform_properties as platform_properties
from ._action import remote_step as remote_step
from ._action import result_json as result_json
from ._action import step_json as step_json
from ._runner import LocalRunner as LocalRunner
from ._runner import RemoteRunner as RemoteRunner
from ._runner import RemoteSettings as RemoteSettings
from ._runner import local_reason as local_reason
from ._runner import planned_local_reason as planned_local_reason
from ._runner import remote_runner_factory as remote_runner_factory
