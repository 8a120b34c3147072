"""``pybuild build``'s remote flags: REAPI remote execution and the ``type=reapi`` cache.

The build command calls three hooks: ``add_arguments`` (the flags),
``is_reapi_cache`` (a ``--cache-from``/``--cache-to`` value this module owns,
kept away from the registry/local cache parser) and ``runner_factory`` (wraps
the local runner when a remote flag asks for it). Without a remote flag nothing
of the remote machinery is imported.

Every server is asked for its capabilities before the build starts, so an
unreachable cluster is one error (or, with ``--remote-fallback=local``, one
warning and a local build) instead of a failure halfway.  With an executor the
factory carries the rule saying which RUN steps stay here
(``dag.remote.remote_runner_factory``): the build asks for an emulator only for
foreign-platform steps that do, as the cluster's workers run their own platform.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pybuild.errors import UsageError

if TYPE_CHECKING:
    from pybuild.dag import BuildPlan, BuildRunner
    from pybuild.reapi import Remote


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The remote execution flags (``--cache-from/--cache-to type=reapi`` are the build's own flags)."""
    group = parser.add_argument_group("remote execution (REAPI)")
    group.add_argument("--remote-executor", metavar="grpc[s]://HOST:PORT", help="run RUN steps on a REAPI cluster (BuildGrid, Buildbarn, ...)")
    group.add_argument("--remote-instance", default="", metavar="NAME", help="the REAPI instance name (default: none)")
    group.add_argument("--remote-header", action="append", default=[], metavar="NAME=VALUE", help="a header sent with every remote call (executor and type=reapi caches), e.g. a token (repeatable)")
    group.add_argument("--remote-tls-ca", metavar="FILE", help="the CA certificate a grpcs:// server is checked against")
    group.add_argument("--remote-tls-cert", metavar="FILE", help="the client certificate for a grpcs:// server")
    group.add_argument("--remote-tls-key", metavar="FILE", help="the client certificate's key")
    group.add_argument("--remote-fallback", choices=["local"], help="when the cluster cannot be reached, build here instead of failing")


def is_reapi_cache(value: str) -> bool:
    """Whether a ``--cache-from``/``--cache-to`` value names a REAPI cache (``type=reapi,url=...``)."""
    return any(part.strip().lower() == "type=reapi" for part in value.split(","))


def _uses_remote(args: argparse.Namespace) -> bool:
    remote_flags = (args.remote_executor, args.remote_header, args.remote_tls_ca, args.remote_tls_cert, args.remote_tls_key, args.remote_fallback)
    reapi_caches = [v for v in (*args.cache_from, *args.cache_to) if is_reapi_cache(v)]
    return any(remote_flags) or bool(args.remote_instance) or bool(reapi_caches)


def runner_factory(
    args: argparse.Namespace, local: Callable[[BuildPlan], BuildRunner], emit: Any
) -> Callable[[BuildPlan], BuildRunner]:
    """The runner factory the build uses: the local one unless a remote flag is given."""
    if not _uses_remote(args):
        return local
    if args.remote_executor is None and (args.remote_fallback or args.remote_instance):
        raise UsageError("--remote-instance and --remote-fallback need --remote-executor", hint="a type=reapi cache takes instance=NAME")
    reapi_caches = any(is_reapi_cache(v) for v in (*args.cache_from, *args.cache_to))
    if args.remote_executor is None and not reapi_caches:  # headers and TLS files go to the executor and the reapi caches
        raise UsageError("--remote-header and --remote-tls-* need --remote-executor or a type=reapi cache")
    from pybuild.dag import Notice, Worker, host_platform
    from pybuild.dag.remote import RemoteRunner, RemoteSettings, remote_runner_factory
    from pybuild.reapi import RemoteUnavailable

    executor, cache_from, cache_to = _connect(args)
    fallback = args.remote_fallback == "local"
    if executor is not None:
        try:
            executor.capabilities()
        except RemoteUnavailable as error:
            if not fallback:
                executor.close()
                raise
            emit(Notice(f"warning: {error.message}; building here (--remote-fallback=local)", 0.0))
            executor.close()
            executor = None
    for remote in {*cache_from, *cache_to}:
        remote.capabilities()  # an unreachable cache fails before the build starts
    settings = RemoteSettings(
        executor=executor, cache_from=cache_from, cache_to=cache_to, fallback_local=fallback,
        host_platform=str(host_platform()),
    )

    def make_runner(plan: BuildPlan) -> BuildRunner:
        runner = local(plan)
        if not isinstance(runner, Worker):  # the remote runner stands on the local one's store
            return runner
        return RemoteRunner(runner, settings, emit=emit)

    if executor is None:  # every step runs here: the build checks every platform it runs
        return make_runner
    # a RUN step for another platform that goes to the cluster needs no emulator here
    return remote_runner_factory(make_runner, memory_limit=bool(args.memory))


def _connect(args: argparse.Namespace) -> tuple[Remote | None, tuple[Remote, ...], tuple[Remote, ...]]:
    """Clients of the executor and the reapi caches (one per URL and instance)."""
    from pybuild.reapi import Remote, parse_endpoint

    clients: dict[tuple[str, str], Remote] = {}

    def client(url: str, instance: str, flag: str) -> Remote:
        endpoint = parse_endpoint(
            url, instance=instance, headers=args.remote_header, ca_cert=args.remote_tls_ca,
            client_cert=args.remote_tls_cert, client_key=args.remote_tls_key, flag=flag,
        )
        if (endpoint.url, endpoint.instance) not in clients:
            clients[(endpoint.url, endpoint.instance)] = Remote.connect(endpoint)
        return clients[(endpoint.url, endpoint.instance)]

    executor = client(args.remote_executor, args.remote_instance, "--remote-executor") if args.remote_executor else None
    cache_from = tuple(client(*_cache_spec(v, "--cache-from"), "--cache-from") for v in args.cache_from if is_reapi_cache(v))
    cache_to = tuple(client(*_cache_spec(v, "--cache-to"), "--cache-to") for v in args.cache_to if is_reapi_cache(v))
    return executor, cache_from, cache_to


def _cache_spec(value: str, flag: str) -> tuple[str, str]:
    """``type=reapi,url=grpc://HOST:PORT[,instance=NAME]`` -> (url, instance)."""
    fields: dict[str, str] = {}
    for part in value.split(","):
        name, eq, content = part.partition("=")
        name = name.strip().lower()
        if not eq or name not in ("type", "url", "instance") or name in fields:
            # the value is never quoted: a token slipped in (token=..., header=...) must not be printed
            what = f"a field {name!r}" if eq and name.isidentifier() and len(name) <= 32 else "a field without NAME="
            raise UsageError(f"{flag} type=reapi: {what} where type=reapi,url=grpc://HOST:PORT[,instance=NAME] is expected",
                             hint="a token goes in --remote-header NAME=VALUE")
        fields[name] = content.strip()
    if not fields.get("url"):
        raise UsageError(f"{flag} type=reapi: it needs url=grpc://HOST:PORT")
    return fields["url"], fields.get("instance", "")
