"""The Action format of a remote RUN step: encode (the client) and decode (the worker).

A step becomes a REAPI Action whose Command is always ``pybuild-step step.json``
and whose input root holds ``step.json`` (the step's request, deterministic
JSON) and ``layers/<hex>.tar``, the uncompressed tar of every layer the step
runs on (its digest is its diffID, so the CAS and the workers hold each layer
once).  The outputs are ``layer.tar`` (the step's diff) and ``result.json``.

Nothing of the machine that encodes goes in: no host path, no proxy variable,
no secret (a step with one never runs remotely), no time.  Inputs are named by
their role (``rootfs``, ``mount:0``...), not by op digest, which would carry
the cache-neutral fields of the steps before.  So the same step over the same
layers is the same Action digest on every machine, and the action cache is a
shared build cache.  ``decode_step`` checks everything, since what it reads
came from another machine.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pybuild.errors import BuildError, shortened

from .._ops import CdiDevice, ExecOp, RunMount

if TYPE_CHECKING:
    from pybuild.reapi import Action, Command, Digest

FORMAT_VERSION = 1
# what a worker must speak to run our steps; bumped when step.json or the sandbox's
# behaviour changes in a way that changes a step's result (a platform property)
SANDBOX_VERSION = "1"
STEP_FILE = "step.json"
LAYER_OUTPUT = "layer.tar"
RESULT_OUTPUT = "result.json"
COMMAND = ("pybuild-step", STEP_FILE)
OUTPUTS = (LAYER_OUTPUT, RESULT_OUTPUT)
ROOTFS = "rootfs"

_DIFF_ID = re.compile(r"sha256:[0-9a-f]{64}")
# the op's fields a remote step leaves out: the client's proxy and --no-cache
_LOCAL_FIELDS = frozenset({"proxy_env", "ignore_cache"})


class BadStep(BuildError):
    """A step.json (or result.json) that is not one this pybuild wrote."""

    reference = "remote-bad-step"


@dataclass(frozen=True)
class RemoteStep:
    """A RUN step as a worker runs it.

    ``op.rootfs`` is ``"rootfs"`` and each bind or cache ``from=`` mount's
    ``source`` is ``"mount:N"`` (N its index in ``op.mounts``); ``chains``
    gives each such input its layers' diffIDs, top first (as ``Result.chain``).
    ``platform`` is the one the step runs for (``linux/arm64``), never empty.
    """

    op: ExecOp
    key: str
    platform: str
    chains: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def diff_ids(self) -> tuple[str, ...]:
        """Every layer the step needs, each once, in a stable order."""
        return tuple(sorted({d for chain in self.chains.values() for d in chain}))


@dataclass(frozen=True)
class RemoteResult:
    """What ``result.json`` says: the diffID of ``layer.tar`` (and whether it is empty)."""

    diff_id: str
    empty: bool = False


@dataclass(frozen=True)
class EncodedStep:
    """A step as REAPI messages: the Action (and its digest), every small blob it names
    (Command, step.json, Directories, the Action itself) and the layer blobs of its
    input root by digest -> diffID (uploaded only if the CAS misses them)."""

    step: RemoteStep
    action: Action
    action_digest: Digest
    blobs: Mapping[Digest, bytes]
    layers: Mapping[Digest, str]


def remote_step(op: ExecOp, key: str, platform: str, chains: Mapping[str, Sequence[str]]) -> RemoteStep:
    """The step as a worker will see it; ``chains`` maps the op's input digests
    (``op.rootfs``, mount sources) to their layer diffIDs, top first."""
    names: dict[str, str] = {}
    if op.rootfs:
        names[op.rootfs] = ROOTFS
    mounts = []
    for index, mount in enumerate(op.mounts):
        if mount.source:
            name = names.setdefault(mount.source, f"mount:{index}")
            mount = dataclasses.replace(mount, source=name)
        mounts.append(mount)
    renamed = dataclasses.replace(
        op, rootfs=ROOTFS if op.rootfs else None, mounts=tuple(mounts), proxy_env=(), ignore_cache=False
    )
    return RemoteStep(renamed, key, platform, {names[d]: tuple(chain) for d, chain in chains.items() if d in names})


def step_json(step: RemoteStep) -> bytes:
    """The deterministic bytes of step.json (sorted keys, no whitespace, UTF-8)."""
    document = {
        "version": FORMAT_VERSION,
        "key": step.key,
        "platform": step.platform,
        "op": _op_fields(step.op),
        "inputs": {name: list(chain) for name, chain in sorted(step.chains.items())},
    }
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogateescape")


def _op_fields(op: ExecOp) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(op):
        if f.name in _LOCAL_FIELDS:
            continue
        value = getattr(op, f.name)
        if f.name == "mounts":
            value = [{m.name: getattr(mount, m.name) for m in dataclasses.fields(mount)} for mount in value]
        elif f.name == "devices":
            value = [{"name": d.name, "required": d.required} for d in value]
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    return out


def decode_step(data: bytes) -> RemoteStep:
    """step.json back into the step; anything this pybuild would not write is refused (``BadStep``)."""
    document = _json(data, STEP_FILE, "surrogateescape")
    reader = _Reader(STEP_FILE)
    document = reader.mapping(document, "", {"version", "key", "platform", "op", "inputs"})
    if document["version"] != FORMAT_VERSION:
        raise BadStep(f"{STEP_FILE} is format version {shortened(repr(document['version']), 40)}; this pybuild reads {FORMAT_VERSION}",
                      hint="run the same pybuild version on the client and the workers")
    key = reader.string(document["key"], "key")
    if not _DIFF_ID.fullmatch(key):
        raise BadStep(f"{STEP_FILE}: key is not a sha256 digest")
    inputs = reader.mapping(document["inputs"], "inputs", None)
    chains = {}
    for name, chain in inputs.items():
        where = f"inputs.{shown(name)}"
        diff_ids = tuple(reader.string(d, where) for d in reader.array(chain, where))
        if not all(_DIFF_ID.fullmatch(d) for d in diff_ids):
            raise BadStep(f"{STEP_FILE}: {where} holds something that is not a diffID")
        chains[name] = diff_ids
    op = _decode_op(reader, document["op"])
    named = ({op.rootfs} if op.rootfs else set()) | {m.source for m in op.mounts if m.source}
    if named != set(chains) or (op.rootfs not in (None, ROOTFS)):
        raise BadStep(f"{STEP_FILE}: the op's inputs and the layer chains do not agree")
    return RemoteStep(op, key, _platform(reader.string(document["platform"], "platform")), chains)


def _json(data: bytes, name: str, errors: str = "strict") -> Any:
    """The JSON document in ``data``; BadStep for anything else, a hostile nesting included
    (the decoder recurses: ``[[[[...]]]]`` would otherwise end as a RecursionError)."""
    try:
        return json.loads(data.decode("utf-8", errors))
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        text = "nested too deeply" if isinstance(error, RecursionError) else str(error)
        raise BadStep(f"{name} is not JSON: {text}") from None


def _platform(text: str) -> str:
    """The step's platform as written, once it is known to be one (the worker parses it again)."""
    from .._platform import Platform

    try:
        platform = Platform.parse(text)
    except ValueError:
        platform = None
    if platform is None or not text or platform.os != "linux" or not _WORD.fullmatch(platform.architecture + platform.variant):
        raise BadStep(f"{STEP_FILE}: platform {text[:40]!r} is not os/arch[/variant] of linux")
    return text


_OP_REQUIRED = {"rootfs", "args", "env", "cwd", "user"}
_OP_FIELDS = {f.name for f in dataclasses.fields(ExecOp)} - _LOCAL_FIELDS
_MOUNT_TYPES: dict[str, tuple[type[object], ...]] = {
    "kind": (str,), "target": (str,), "source": (str, type(None)), "source_path": (str,), "readonly": (bool,),
    "cache_id": (str, type(None)), "sharing": (str,), "mode": (int, type(None)), "uid": (int, type(None)),
    "gid": (int, type(None)), "size": (int, type(None)), "secret_id": (str, type(None)), "env": (str, type(None)),
    "required": (bool,),
}
_MOUNT_KINDS = frozenset({"bind", "cache", "tmpfs"})
_SHARING = frozenset({"shared", "private", "locked"})
_MOUNT_LIMITS = {"mode": 1 << 32, "uid": (1 << 32) - 1, "gid": (1 << 32) - 1, "size": 1 << 63}
_WORD = re.compile(r"[a-z0-9_]+")


def _decode_op(reader: _Reader, value: object) -> ExecOp:
    fields = reader.mapping(value, "op", _OP_FIELDS, optional=_OP_FIELDS - _OP_REQUIRED)
    kwargs: dict[str, Any] = {}
    for name, item in fields.items():
        if name == "mounts":
            kwargs[name] = tuple(_decode_mount(reader, m, f"op.mounts.{i}") for i, m in enumerate(reader.array(item, "op.mounts")))
        elif name == "devices":
            kwargs[name] = tuple(_decode_device(reader, d) for d in reader.array(item, "op.devices"))
        elif name in ("args", "env"):
            kwargs[name] = tuple(reader.string(s, f"op.{name}") for s in reader.array(item, f"op.{name}"))
        elif name == "rootfs":
            kwargs[name] = None if item is None else reader.string(item, "op.rootfs")
        else:
            kwargs[name] = reader.string(item, f"op.{name}")
    if not kwargs["cwd"].startswith("/"):  # the sandbox would resolve a relative one against its own
        raise BadStep(f"{STEP_FILE}: op.cwd is not an absolute path")
    return ExecOp(**kwargs)


def _decode_device(reader: _Reader, value: object) -> CdiDevice:
    fields = reader.mapping(value, "op.devices", {"name", "required"}, optional={"required"})
    required = fields.get("required", False)
    if not isinstance(required, bool):
        raise BadStep(f"{STEP_FILE}: op.devices.required is not a boolean")
    return CdiDevice(reader.string(fields["name"], "op.devices.name"), required)


def _decode_mount(reader: _Reader, value: object, where: str) -> RunMount:
    fields = reader.mapping(value, where, set(_MOUNT_TYPES), optional=set(_MOUNT_TYPES) - {"kind", "target"})
    for name, item in fields.items():
        allowed = _MOUNT_TYPES[name]
        # bool is an int to Python: an int field takes no bool, a bool field no int
        if not isinstance(item, allowed) or (isinstance(item, bool) and bool not in allowed):
            raise BadStep(f"{STEP_FILE}: {where}.{name} has the wrong type")
    if fields.get("kind") in ("secret", "ssh"):
        raise BadStep(f"{STEP_FILE}: {where} is a {fields['kind']} mount, which never runs remotely")
    if fields["kind"] not in _MOUNT_KINDS or fields.get("sharing", "shared") not in _SHARING:
        raise BadStep(f"{STEP_FILE}: {where} is not a bind, cache or tmpfs mount pybuild writes")
    if not fields["target"].startswith("/"):
        raise BadStep(f"{STEP_FILE}: {where}.target is not an absolute path")
    for name, limit in _MOUNT_LIMITS.items():  # the kernel's types: beyond them os.chown/chmod raise
        if fields.get(name) is not None and not 0 <= fields[name] < limit:
            raise BadStep(f"{STEP_FILE}: {where}.{name} is out of range")
    return RunMount(**fields)


def shown(text: str, limit: int = 80) -> str:
    """A name another machine chose, fit for one line of a log or terminal: control and
    other unprintable characters escaped (no escape sequence reaches a terminal), cut short."""
    if not text.isprintable():
        text = "".join(c if c.isprintable() else c.encode("unicode_escape", "backslashreplace").decode("ascii") for c in text)
    return shortened(text, limit)


class _Reader:
    """Type checks on a decoded JSON document, each failure a one-line ``BadStep``."""

    def __init__(self, name: str) -> None:
        self.name = name

    def mapping(self, value: object, where: str, keys: set[str] | None, *, optional: set[str] | frozenset[str] = frozenset()) -> dict[str, Any]:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise BadStep(f"{self.name}: {where or 'the document'} is not an object")
        if keys is not None:
            unknown = set(value) - keys
            missing = keys - set(optional) - set(value)
            if unknown or missing:
                what = f"unknown field {shown(sorted(unknown)[0])}" if unknown else f"no field {sorted(missing)[0]}"
                raise BadStep(f"{self.name}: {where or 'the document'} has {what}")
        return value

    def array(self, value: object, where: str) -> list[Any]:
        if not isinstance(value, list):
            raise BadStep(f"{self.name}: {where} is not a list")
        return value

    def string(self, value: object, where: str) -> str:
        if not isinstance(value, str):
            raise BadStep(f"{self.name}: {where} is not a string")
        if "\0" in value:  # no argument, variable, path or name holds one: it could only cut a path short
            raise BadStep(f"{self.name}: {where} holds a NUL character")
        return value


def result_json(result: RemoteResult) -> bytes:
    """The deterministic bytes of result.json (the worker writes it)."""
    return json.dumps({"version": FORMAT_VERSION, "diff_id": result.diff_id, "empty": result.empty},
                      sort_keys=True, separators=(",", ":")).encode()


def decode_result(data: bytes) -> RemoteResult:
    """result.json from a worker, checked (``BadStep`` when it is not one)."""
    document = _json(data, RESULT_OUTPUT)
    reader = _Reader(RESULT_OUTPUT)
    document = reader.mapping(document, "", {"version", "diff_id", "empty"}, optional={"empty"})
    if document["version"] != FORMAT_VERSION:
        raise BadStep(f"{RESULT_OUTPUT} is format version {shortened(repr(document['version']), 40)}; this pybuild reads {FORMAT_VERSION}")
    diff_id = reader.string(document["diff_id"], "diff_id")
    if not _DIFF_ID.fullmatch(diff_id) or not isinstance(document.get("empty", False), bool):
        raise BadStep(f"{RESULT_OUTPUT}: diff_id or empty is malformed")
    return RemoteResult(diff_id, document.get("empty", False))


# ---------------------------------------------------------------- REAPI messages


def goarch(platform: str) -> str:
    """The ISA platform property: the GOARCH name of ``os/arch[/variant]``."""
    from .._platform import Platform

    return Platform.parse(platform).architecture


def platform_properties(platform: str) -> tuple[tuple[str, str], ...]:
    """The properties a worker must offer to run a step for ``platform`` (sorted by name, as REAPI asks)."""
    return tuple(sorted({"OSFamily": "linux", "ISA": goarch(platform), "pybuild-sandbox": SANDBOX_VERSION}.items()))


def layer_path(diff_id: str) -> str:
    """Where a layer's tar is in the input root."""
    return f"layers/{diff_id.split(':', 1)[1]}.tar"


def encode_step(step: RemoteStep, layer_sizes: Mapping[str, int], *, timeout: float | None = None) -> EncodedStep:
    """The Action of ``step``; ``layer_sizes`` gives each diffID's uncompressed tar size."""
    from pybuild import reapi

    files: dict[str, Digest] = {}
    layers: dict[Digest, str] = {}
    for diff_id in step.diff_ids():
        if diff_id not in layer_sizes:
            raise BuildError(f"no size known for layer {diff_id}")  # a caller's bug, said plainly
        digest = reapi.Digest(diff_id.split(":", 1)[1], layer_sizes[diff_id])
        files[layer_path(diff_id)] = digest
        layers[digest] = diff_id
    action, action_digest, blobs = _action(step_json(step), files, step.platform, timeout)
    return EncodedStep(step, action, action_digest, blobs, layers)


@dataclass(frozen=True)
class CacheAction:
    """The Action a step's result is cached under in an action cache, whoever made it."""

    action_digest: Digest
    blobs: Mapping[Digest, bytes]


def cache_action(key: str, platform: str) -> CacheAction:
    """The step's *cache action*: named by its pybuild cache key and platform alone.

    A pybuild cache key already stands for everything the step's result depends
    on (its inputs by their keys), as a local cache lookup trusts it; it never
    runs (its step.json is not a step, a worker refuses it), so it needs no
    layers: a file operation or a step that ran here is cached as cheaply as one
    that ran remotely, and a second machine finds it before anything is uploaded.
    """
    document = json.dumps({"version": FORMAT_VERSION, "cached": key, "platform": platform}, sort_keys=True, separators=(",", ":")).encode()
    _, action_digest, blobs = _action(document, {}, platform, None)
    return CacheAction(action_digest, blobs)


def _action(document: bytes, files: Mapping[str, Digest], platform: str, timeout: float | None) -> tuple[Action, Digest, dict[Digest, bytes]]:
    """The Action running ``pybuild-step step.json`` on an input root of ``document`` and ``files``."""
    from pybuild import reapi

    step_digest = reapi.Digest.of(document)
    root_digest, directories = reapi.input_root({STEP_FILE: step_digest, **files})
    properties = platform_properties(platform)
    command = reapi.Command(arguments=COMMAND, env=(), output_paths=OUTPUTS, platform=properties)
    command_bytes = reapi.serialize(command)
    command_digest = reapi.Digest.of(command_bytes)
    action = reapi.Action(
        command_digest=command_digest, input_root_digest=root_digest, timeout_seconds=timeout,
        do_not_cache=False, platform=properties,
    )
    action_bytes = reapi.serialize(action)
    action_digest = reapi.Digest.of(action_bytes)
    blobs = {**directories, command_digest: command_bytes, step_digest: document, action_digest: action_bytes}
    return action, action_digest, blobs


def check_command(command: Command) -> None:
    """Refuse a Command that is not a pybuild step's (the worker's first check)."""
    if tuple(command.arguments) != COMMAND:
        raise BadStep(f"not a pybuild step: the command is {shortened(repr(' '.join(command.arguments)), 200)}")
