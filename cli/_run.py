"""``pybuild run``: a container from an image, as ``docker run`` makes one.

The image's entrypoint and cmd (or the COMMAND given) run in the RUN
sandbox over the image's layers, with a layer of the container's own on
top.  Without ``--rm`` the container and its changes stay (``ps -a``,
``diff``, ``commit``, ``rm``) under ``--name`` or a generated name.
``-d`` prints the container's ID and leaves it running; otherwise pybuild
stays attached and exits with the command's exit code.  ``-p`` publishes a
container port on a host port (127.0.0.1 unless an address is given),
through slirp4netns.  ``--security-opt`` takes Docker's ``seccomp=unconfined``,
``seccomp=PROFILE.json`` and ``no-new-privileges``; the container keeps them,
so ``exec`` enters it confined the same way.
"""

from __future__ import annotations

import argparse
import os
import re
import time
from typing import Any

from pybuild.errors import ContainerError, NotFound, UsageError
from pybuild.executors import (
    ContainerRecord,
    ContainerStore,
    PublishedPort,
    new_container_id,
    process_env,
    validate_container_name,
)

from ._containers import env_entries
from ._runtime import image_store, open_root

NETWORKS = {"default": "default", "bridge": "default", "none": "none", "host": "host"}
_MEMORY_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", metavar="IMAGE", help="name, name@digest, ID or ID prefix")
    parser.add_argument("command", nargs=argparse.REMAINDER, metavar="COMMAND", help="the command and its arguments (default: the image's)")
    parser.add_argument("-d", "--detach", action="store_true", help="run in the background and print the container ID")
    parser.add_argument("-i", "--interactive", action="store_true", help="keep stdin open for the container")
    parser.add_argument("-t", "--tty", action="store_true", help="give the container a pseudo-terminal")
    parser.add_argument("--rm", action="store_true", help="remove the container when it exits")
    parser.add_argument("--name", help="name the container")
    parser.add_argument(
        "-e", "--env", action="append", default=[], metavar="K=V", help="set an environment variable (K alone: from pybuild's environment)"
    )
    parser.add_argument("-w", "--workdir", help="working directory inside the container")
    parser.add_argument("-u", "--user", help="USER[:GROUP] (names from the image's /etc/passwd, or numbers)")
    parser.add_argument("--entrypoint", help="override the image's entrypoint ('' to clear it)")
    parser.add_argument("--network", default="default", help="default (alias bridge), none or host")
    parser.add_argument(
        "-p", "--publish", action="append", default=[], metavar="[IP:]HOSTPORT:PORT[/PROTO]", help="publish a container port on a host port"
    )
    parser.add_argument("-m", "--memory", help="memory limit (e.g. 512m, 1g)")
    parser.add_argument(
        "--security-opt", action="append", default=[], metavar="OPT",
        help="seccomp=unconfined, seccomp=PROFILE.json (Docker's format) or no-new-privileges",
    )
    parser.add_argument("--platform", metavar="OS/ARCH[/VARIANT]", help="the platform's image of a multi-platform image (a foreign one runs emulated)")
    parser.add_argument("--root", help="the pybuild root")


def run(args: argparse.Namespace) -> int:
    network = NETWORKS.get(args.network)
    if network is None:
        raise UsageError(f"unknown network {args.network!r}", hint="use --network default, none or host")
    ports = tuple(parse_publish(value) for value in args.publish)
    if ports and network != "default":
        raise UsageError("ports can only be published on the default network", hint=f"drop -p or --network {args.network}")
    if args.workdir is not None and not args.workdir.startswith("/"):
        raise UsageError(f"the working directory {args.workdir!r} is invalid, it needs to be an absolute path", hint="-w /path")
    name = validate_container_name(args.name) if args.name else None
    memory = parse_memory(args.memory) if args.memory else None
    seccomp, no_new_privileges = parse_security_opts(args.security_opt)

    root = open_root(args.root)
    store = image_store(root)
    try:
        image = store.get(args.image, args.platform)
    except NotFound:
        raise NotFound(f"unable to find image {args.image!r} locally", hint=f"build it, or: pybuild pull {args.image}") from None
    if image.config.get("architecture"):
        check_runnable(image.platform)
    snapshots = store.snapshots_for(image)
    containers = ContainerStore(root)
    container_id = new_container_id()
    hostname = container_id[:12]
    config = container_config(image.config, args, hostname, ports)
    command = tuple((config.get("Entrypoint") or []) + (config.get("Cmd") or []))
    if not command:
        raise UsageError("no command specified", hint=f"the image has no CMD or ENTRYPOINT: pybuild run {args.image} COMMAND")

    record = containers.create(
        ContainerRecord(
            id=container_id, name=name or containers.new_name(), created=time.time(), image_id=image.id,
            image_ref=args.image, snapshots=snapshots, config=config, args=command, network=network,
            ports=tuple(PublishedPort(*p) for p in ports), auto_remove=args.rm, memory=memory,
            seccomp=seccomp, no_new_privileges=no_new_privileges,
        ),
        [root.snapshots.tree(s) for s in snapshots],
    )
    return start(root, containers, record, attach=not args.detach, interactive=args.interactive)


def check_runnable(platform: str) -> None:
    """A foreign image runs only if the kernel can run its binaries (binfmt_misc), checked before anything is made."""
    from pybuild.executors import emulation_status

    status = emulation_status(platform)
    if not status.runnable:
        reason = f": {status.reason}" if status.reason else ""
        raise ContainerError(f"this machine cannot run {platform} binaries{reason}", hint=status.hint or None)


def start(root: Any, containers: ContainerStore, record: ContainerRecord, *, attach: bool, interactive: bool) -> int:
    """Launch a created container; print its ID (detached) or return its exit code."""
    from pybuild.executors import ContainerLaunch, ContainerRuntime, ProcessSpec, Rootfs

    config = record.config
    tty = bool(config.get("Tty"))
    lowers = (str(record.init_layer), *(str(root.snapshots.tree(s)) for s in record.snapshots))
    launch = ContainerLaunch(
        directory=str(record.directory),
        rootfs=Rootfs(lowers, str(record.upper), str(record.work)),
        process=ProcessSpec(
            args=record.args,
            env=process_env(config, config.get("Hostname") or record.short_id, tty=tty),
            cwd=config.get("WorkingDir") or "/",
            user=config.get("User") or "",
            network=record.network,
            hostname=config.get("Hostname") or record.short_id,
            memory_limit=record.memory,
            seccomp=record.seccomp,
            no_new_privileges=record.no_new_privileges,
            etc_hostname=True,  # docker run mounts /etc/hostname; RUN steps do not
        ),
        cgroup_name=record.cgroup_name,
        tty=tty,
        interactive=interactive,
        ports=record.ports,
        remove_on_exit=(str(containers.name_link(record)), str(record.directory)) if record.auto_remove else (),
    )
    runtime = ContainerRuntime()
    try:
        code = runtime.start(launch, attach=attach)
    except BaseException:
        if record.auto_remove and not runtime.status(str(record.directory)).supervised:
            containers.remove(record)
        raise
    if not attach:
        print(record.id)
        return 0
    return int(code or 0)


def container_config(image_config: dict[str, Any] | Any, args: argparse.Namespace, hostname: str, ports: tuple[tuple[str, int, int, str], ...]) -> dict[str, Any]:
    """Docker's container config: the image's, with the run flags applied."""
    config = dict((image_config or {}).get("config") or {})
    config["Hostname"] = hostname
    config["Image"] = args.image
    config["Tty"] = bool(args.tty)
    config["OpenStdin"] = bool(args.interactive)
    config["AttachStdin"] = bool(args.interactive) and not args.detach
    config["AttachStdout"] = config["AttachStderr"] = not args.detach
    config["Env"] = [*(config.get("Env") or []), *env_entries(args.env, os.environ)]
    if args.entrypoint is not None:
        config["Entrypoint"] = [args.entrypoint] if args.entrypoint else None
        if not args.command:
            config["Cmd"] = None  # Docker: a new entrypoint drops the image's cmd
    if args.command:
        config["Cmd"] = list(args.command)
    if args.workdir is not None:
        config["WorkingDir"] = args.workdir
    if args.user is not None:
        config["User"] = args.user
    if ports:
        exposed = dict(config.get("ExposedPorts") or {})
        for _, _, container_port, protocol in ports:
            exposed[f"{container_port}/{protocol}"] = {}
        config["ExposedPorts"] = exposed
    return config


_PUBLISH = re.compile(r"^(?:(?P<ip>\[[0-9a-fA-F:.]+\]|[0-9.]+):)?(?P<host>\d+):(?P<container>\d+)(?:/(?P<proto>tcp|udp))?$")


def parse_publish(value: str) -> tuple[str, int, int, str]:
    """``[IP:]HOSTPORT:PORT[/tcp|udp]`` -> (ip, host port, container port, protocol)."""
    match = _PUBLISH.match(value.strip())
    if match is None:
        if re.fullmatch(r"\d+(/(tcp|udp))?", value.strip()):
            raise UsageError(f"-p {value}: give the host port too", hint=f"-p HOSTPORT:{value} (pybuild does not pick host ports)")
        raise UsageError(f"invalid port mapping {value!r}", hint="use -p [IP:]HOSTPORT:PORT[/tcp|udp], e.g. -p 8080:80")
    host_port, container_port = int(match["host"]), int(match["container"])
    for port in (host_port, container_port):
        if not 0 < port < 65536:
            raise UsageError(f"invalid port {port} in {value!r}", hint="ports are 1 to 65535")
    ip = (match["ip"] or "127.0.0.1").strip("[]")
    return ip, host_port, container_port, match["proto"] or "tcp"


def parse_security_opts(values: list[str]) -> tuple[str, bool]:
    """Docker's ``--security-opt`` values -> (seccomp profile, no-new-privileges).

    The profile is ``default``, ``unconfined`` or the text of a profile file
    (read and checked now, so a bad file fails before anything is created).
    """
    from pybuild.executors import load_seccomp_profile

    seccomp, no_new_privileges = "default", False
    for value in values:
        key, separator, setting = value.partition("=")
        if not separator and ":" in value:  # Docker's older spelling, seccomp:FILE
            key, _, setting = value.partition(":")
        if key == "no-new-privileges":
            if setting not in ("", "true", "false"):
                raise UsageError(f"invalid --security-opt {value!r}", hint="no-new-privileges or no-new-privileges=true|false")
            no_new_privileges = setting != "false"
        elif key == "seccomp" and setting:
            seccomp = "unconfined" if setting == "unconfined" else load_seccomp_profile(setting)
        elif key in ("apparmor", "label", "systempaths"):
            raise UsageError(f"--security-opt {key} is not supported by pybuild", hint="pybuild knows seccomp= and no-new-privileges")
        else:
            raise UsageError(f"invalid --security-opt {value!r}", hint="seccomp=unconfined, seccomp=FILE.json or no-new-privileges")
    return seccomp, no_new_privileges


def parse_memory(text: str) -> int:
    match = re.fullmatch(r"\s*(\d+)\s*([bkmg]?)b?\s*", text.lower())
    if match is None:
        raise UsageError(f"invalid memory limit {text!r}", hint="e.g. 512m or 1g")
    value = int(match.group(1)) * _MEMORY_UNITS[match.group(2)]
    if value < 6 << 20:
        raise UsageError("minimum memory limit allowed is 6MB", hint="e.g. -m 64m")
    from pybuild.executors import memory_limit_unavailable

    if reason := memory_limit_unavailable():  # before the container is created, as Docker refuses it
        raise UsageError(f"--memory {text}: {reason}", hint="leave out --memory, or run pybuild as root")
    return value

