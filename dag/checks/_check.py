"""``check_dockerfile``: BuildKit's build checks plus pybuild's layer lessons.

    check_dockerfile(text, file, build_args=..., context_dir=..., images=...) -> CheckReport

Nothing is pulled and nothing runs.  The BuildKit rules (``_buildkit``)
follow ``docker build --check``; the layer rules (``_layers``) are the
tutorial's lessons.  The ``# check=`` directive (or the
``BUILDKIT_DOCKERFILE_CHECK`` build argument) selects rules for both kinds;
``error=true`` asks callers to fail when anything was found, as BuildKit
fails the build.

Rules left out or reduced, and why:

- InvalidBaseImagePlatform needs the base image's config: it is decided only
  for images an ``images`` lookup knows locally (the CLI passes the local
  image store); other bases are skipped rather than pulled.
- UndefinedVar needs the base image's Env: for a base not known locally the
  stage starts with PATH only, and the hint says so.
- CopyIgnoredFile needs the build context: without ``context_dir`` it is
  skipped.  It and InvalidDefinitionDescription are experimental in BuildKit
  and run only when named in ``# check=experimental=...``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pybuild.cache import DockerIgnore
from pybuild.errors import DockerfileError, Location

from .._platform import Platform, host_platform
from ._buildkit import buildkit_findings
from ._config import CheckConfig, CheckOptionError, parse_check_options
from ._layers import layer_findings
from ._model import CHECK_COMMENT, Source, load
from ._rules import RULES, Finding
from ._walk import walk

if TYPE_CHECKING:
    from .._convert import ImageLookup

__all__ = ["CheckReport", "CheckWarning", "check_dockerfile"]

CHECK_BUILD_ARG = "BUILDKIT_DOCKERFILE_CHECK"


@dataclass(frozen=True)
class CheckWarning:
    """One finding: where (1-based lines), what, how to fix it, and where to read more."""

    rule: str
    line: int
    end_line: int
    message: str
    hint: str
    url: str | None
    severity: Literal["warning", "error"]


@dataclass(frozen=True)
class CheckReport:
    warnings: tuple[CheckWarning, ...]
    errors_requested: bool  # the check directive says error=true

    @property
    def failed(self) -> bool:
        """What ``docker build --check`` fails on: warnings while error=true."""
        return self.errors_requested and bool(self.warnings)


def check_dockerfile(
    dockerfile_text: bytes | str,
    file: str = "Dockerfile",
    *,
    build_args: Mapping[str, str] = {},  # noqa: B006 - read only
    context_dir: str | Path | None = None,
    dockerfile_path: str | Path | None = None,
    images: ImageLookup | None = None,
    platform: Platform | None = None,
    target: str | None = None,
) -> CheckReport:
    """Check a Dockerfile; raises ``DockerfileSyntaxError`` if it does not parse.

    ``context_dir`` enables CopyIgnoredFile and lets FileRemovedInLaterLayer
    see what a ``COPY .`` brings in; ``dockerfile_path`` picks a
    ``<Dockerfile>.dockerignore`` over the context's.  ``images`` is an
    ``ImageLookup`` (e.g. the local ``ImageStore``) for base image configs.
    ``target`` chooses the image whose layers the layer rules look at
    (default: the last stage).
    """
    source = load(dockerfile_text, file)
    config = _config(source, build_args)
    platform = platform or host_platform()
    context = Path(context_dir) if context_dir is not None else None
    ignore = _ignore(context, dockerfile_path)
    scopes = walk(source.dockerfile, build_args=build_args, images=images, platform=platform, target=target)
    findings = buildkit_findings(source, scopes, build_args=build_args, ignore=ignore, platform=platform)
    findings += layer_findings(source, scopes, context_dir=context, ignore=ignore)
    severity: Literal["warning", "error"] = "error" if config.error else "warning"
    local = _local_configs(source)
    warnings: list[CheckWarning] = []
    seen: set[tuple[str, int, str]] = set()
    # Stable sort: by line, then in the order BuildKit would have found them.
    for finding in sorted(findings, key=lambda f: f.start):
        rule = RULES[finding.rule]
        if not config.merged(local.get(finding.start, CheckConfig())).enabled(rule):
            continue
        key = (finding.rule, finding.start, finding.message)
        if key in seen:
            continue
        seen.add(key)
        warnings.append(_warning(finding, severity))
    return CheckReport(tuple(warnings), config.error)


def _warning(finding: Finding, severity: Literal["warning", "error"]) -> CheckWarning:
    rule = RULES[finding.rule]
    return CheckWarning(
        rule=rule.name,
        line=finding.start,
        end_line=finding.end,
        message=finding.message,
        hint=finding.hint or rule.hint,
        url=rule.url,
        severity=severity,
    )


def _config(source: Source, build_args: Mapping[str, str]) -> CheckConfig:
    if CHECK_BUILD_ARG in build_args:
        text, line = build_args[CHECK_BUILD_ARG], None
    else:
        text = source.ast.directive("check") or ""
        line = next((n for n in range(1, source.directive_lines + 1) if "check" in source.line(n).lower()), None)
    try:
        return parse_check_options(text)
    except CheckOptionError as error:
        where = Location(source.file, line) if line is not None else None
        raise DockerfileError(
            f"failed to parse check options: {error}",
            location=where,
            hint="the form is # check=skip=Rule1,Rule2;error=true (or skip=all; experimental=Rule)",
        ) from None


def _local_configs(source: Source) -> dict[int, CheckConfig]:
    """``# check=...`` comments right above an instruction, by its first line."""
    out: dict[int, CheckConfig] = {}
    for node in source.ast.nodes:
        for comment in source.comments_above(node):
            match = CHECK_COMMENT.match(comment)
            if match is None:
                continue
            try:
                local = parse_check_options(match.group(1))
            except CheckOptionError:
                continue  # an ordinary comment that happens to start with "check="
            out[node.span.start] = out.get(node.span.start, CheckConfig()).merged(local)
    return out


def _ignore(context: Path | None, dockerfile_path: str | Path | None) -> DockerIgnore | None:
    if context is None:
        return None
    return DockerIgnore.load(context, Path(dockerfile_path) if dockerfile_path is not None else None)
