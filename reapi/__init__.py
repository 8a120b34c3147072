"""REAPI v2: the client of a Remote Execution API server (CAS, ByteStream, action cache,
Execute, Capabilities) and of the Remote Workers API's Bots service, for remote execution
(``dag.remote``) and ``pybuild worker`` (``dag.bot``).

The only package that imports ``grpc`` and BuildGrid's generated stubs (``buildgrid-common``,
the optional extra ``pybuild[remote]``); it imports nothing of pybuild but ``errors``. The
values it hands out are frozen dataclasses; the protobuf and gRPC modules load on first use
of ``Remote``, ``serialize``, the ``parse_*`` functions, ``input_root`` or ``check_remote``.

BuildGrid 0.4.4's action cache serves a result only while every blob it names (output files,
stdout/stderr digests not inlined) is in the CAS, and drops the entry otherwise: upload the
outputs before ``update_action_result``. A blob shorter than its digest is DATA_LOSS on
ByteStream.Read (``RemoteBlobCorrupt``, as is any blob whose SHA-256 or size is wrong).
Actions may only use platform properties the scheduler knows (``match-property-keys``).

What BuildGrid 0.4.4 does with bots (read from its scheduler and checked against a real
server by tests/remote/test_reapi_client.py):

- A bot joins with CreateBotSession (``parent`` = the instance name). Its platform is the
  properties of ``worker.devices[0]``; only keys in the scheduler's ``match-property-keys``
  count, and an Action runs on a bot whose properties include all of the Action's. The bot's
  capacity (leases at once) is ``worker.configs["capacity"]`` (default 1).
- CreateBotSession and UpdateBotSession are long polls: BuildGrid waits for work up to
  0.8 × min(the call's deadline, ``bot-session-keepalive-timeout``) and gives no lease at all
  when that is under 3 s (its NETWORK_TIMEOUT): keep deadlines and the keepalive above ~4 s.
- A lease arrives ACTIVE (the server flips PENDING itself); its id is the job's name. Its
  payload is ``Any(Action)`` (0.4.4 stores the Action with the job; a job without one would
  send ``Any(Digest)``): ``Lease.action`` and ``Lease.action_digest`` cover both. A lease that
  does not decode (the Action BuildGrid queued names a malformed digest, an unknown payload
  type or state) arrives as a ``MalformedLease``, its session's other leases as usual.
- Queued Actions are handed to waiting bots by the scheduler's assigner threads, every
  ``interval`` (default 1 s + up to 1 s of jitter): set ``assigners: [!priority-age-assigner
  {interval: 0.05}]`` for short steps (tests/remote/conftest.py does); a bot that reports a
  lease COMPLETED is given the next queued job in the same call.
- The bot echoes its leases in every UpdateBotSession (with the session's ``version``): ACTIVE
  while running; COMPLETED with ``status`` OK and ``result = Any(ActionResult)`` when done
  (``Lease.completed``). The server stores ``ExecuteResponse(result, status)``, caches the
  result in the action cache unless the Action says ``do_not_cache``, the status is not OK
  or (with the action cache's ``cache-failed-actions: false``) the exit code is not 0, and
  answers the Execute stream. A COMPLETED lease with status INTERNAL or UNAVAILABLE
  is re-queued (up to ``max-job-attempts``, 5); other codes end the Execute call with it
  (``Lease.failed``). CANCELLED is set only by the server, which then drops the lease.
- A bot that misses its keepalive (``bot-session-keepalive-timeout``, checked every
  ``session-expiry-timer-interval``) is closed and its leases re-queued for another bot;
  its next UpdateBotSession fails (DATA_LOSS or INVALID_ARGUMENT: ``BotSessionClosed``;
  create a new session).
- Bot status values: OK (1) gets leases; UNHEALTHY (2), HOST_REBOOTING (3),
  BOT_TERMINATING (4) get none (a draining worker reports BOT_TERMINATING).
"""

import os
from typing import TYPE_CHECKING

from pybuild import _lazy

# gRPC's own log lines ("I... chttp2_transport.cc ... GOAWAY" when a server closes a
# connection) would sit between pybuild's one-line messages: only its errors are shown,
# unless the user asks for more. Set before any module of this package imports grpc.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

from ._api import RemoteApi as RemoteApi
from ._digest import EMPTY as EMPTY
from ._digest import Digest as Digest
from ._endpoint import Endpoint as Endpoint
from ._endpoint import parse_endpoint as parse_endpoint
from ._endpoint import parse_header as parse_header
from ._errors import BotSessionClosed as BotSessionClosed
from ._errors import RemoteBlobCorrupt as RemoteBlobCorrupt
from ._errors import RemoteBlobMissing as RemoteBlobMissing
from ._errors import RemoteError as RemoteError
from ._errors import RemoteUnavailable as RemoteUnavailable
from ._malformed import MalformedLease as MalformedLease
from ._messages import Action as Action
from ._messages import ActionResult as ActionResult
from ._messages import BotSession as BotSession
from ._messages import BotStatus as BotStatus
from ._messages import Capabilities as Capabilities
from ._messages import Command as Command
from ._messages import Directory as Directory
from ._messages import DirectoryNode as DirectoryNode
from ._messages import ExecuteResponse as ExecuteResponse
from ._messages import FileNode as FileNode
from ._messages import Lease as Lease
from ._messages import LeaseState as LeaseState
from ._messages import OutputFile as OutputFile

_LAZY = {
    "Remote": "._client",
    "serialize": "._proto",
    "parse_action": "._proto",
    "parse_command": "._proto",
    "parse_directory": "._proto",
    "parse_action_result": "._proto",
    "input_root": "._proto",
    "check_remote": "._conformance",
    "MemoryRemote": ".fake",
}

__all__ = [
    "Action",
    "ActionResult",
    "BotSession",
    "BotSessionClosed",
    "BotStatus",
    "Capabilities",
    "Command",
    "Digest",
    "Directory",
    "DirectoryNode",
    "EMPTY",
    "Endpoint",
    "ExecuteResponse",
    "FileNode",
    "Lease",
    "LeaseState",
    "MalformedLease",
    "OutputFile",
    "RemoteApi",
    "RemoteBlobCorrupt",
    "RemoteBlobMissing",
    "RemoteError",
    "RemoteUnavailable",
    "parse_endpoint",
    "parse_header",
    *_LAZY,
]

if TYPE_CHECKING:  # the names below, loaded on first use, typed for the checker
    from ._client import Remote as Remote
    from ._conformance import check_remote as check_remote
    from ._proto import input_root as input_root
    from ._proto import parse_action as parse_action
    from ._proto import parse_action_result as parse_action_result
    from ._proto import parse_command as parse_command
    from ._proto import parse_directory as parse_directory
    from ._proto import serialize as serialize
    from .fake import MemoryRemote as MemoryRemote

__getattr__ = _lazy.lazy_getattr(__name__, _LAZY)
