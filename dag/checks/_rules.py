"""The check rules pybuild knows: BuildKit's build checks and the layer lessons.

Each ``Rule`` carries what a report needs besides the message: a link to the
rule's documentation, a generic hint (a finding may give a more specific one),
and whether BuildKit treats the rule as experimental (off unless the check
directive names it in ``experimental=``).  The messages themselves are made
where the rules fire, in BuildKit's wording, so that a user who searches for
a message finds BuildKit's documentation.
"""

from __future__ import annotations

from dataclasses import dataclass

_DOCS = "https://docs.docker.com/go/dockerfile/rule/"


@dataclass(frozen=True)
class Finding:
    """One rule firing at ``start``-``end`` (lines of the instruction it is about).

    ``hint`` overrides the rule's generic hint when the finding knows better.
    """

    rule: str
    start: int
    end: int
    message: str
    hint: str | None = None


@dataclass(frozen=True)
class Rule:
    name: str
    description: str
    hint: str
    url: str | None
    experimental: bool = False
    origin: str = "buildkit"  # "buildkit" | "pybuild"


def _buildkit(name: str, slug: str | None, description: str, hint: str, *, experimental: bool = False) -> Rule:
    return Rule(name, description, hint, _DOCS + slug + "/" if slug else None, experimental)


def _pybuild(name: str, description: str, hint: str) -> Rule:
    return Rule(name, description, hint, None, origin="pybuild")


BUILDKIT_RULES: tuple[Rule, ...] = (
    _buildkit(
        "StageNameCasing", "stage-name-casing", "Stage names should be lowercase",
        "write the stage name in lowercase, here and where COPY --from or FROM refer to it",
    ),
    _buildkit(
        "FromAsCasing", "from-as-casing", "The 'as' keyword should match the case of the 'from' keyword",
        "write AS in the same case as FROM (FROM ... AS name, or from ... as name)",
    ),
    _buildkit(
        "NoEmptyContinuation", "no-empty-continuation", "Empty continuation lines will become errors in a future release",
        "remove the blank line inside the continued instruction, or end the instruction before it",
    ),
    _buildkit(
        "ConsistentInstructionCasing", "consistent-instruction-casing",
        "All commands within the Dockerfile should use the same casing (either upper or lower)",
        "write every instruction keyword in the same case, as most of the file does",
    ),
    _buildkit(
        "DuplicateStageName", "duplicate-stage-name", "Stage names should be unique",
        "give each stage its own name; references to the name are ambiguous otherwise",
    ),
    _buildkit(
        "ReservedStageName", "reserved-stage-name", "Reserved words should not be used as stage names",
        "rename the stage: 'scratch' and 'context' already mean the empty image and the build context",
    ),
    _buildkit(
        "JSONArgsRecommended", "json-args-recommended",
        "JSON arguments recommended for ENTRYPOINT/CMD to prevent unintended behavior related to OS signals",
        'use the exec form, e.g. CMD ["program", "arg"], so the program is PID 1 and receives SIGTERM; '
        "or set SHELL explicitly if a shell is really wanted",
    ),
    _buildkit(
        "MaintainerDeprecated", "maintainer-deprecated",
        "The MAINTAINER instruction is deprecated, use a label instead to define an image author",
        'replace it with LABEL org.opencontainers.image.authors="..."',
    ),
    _buildkit(
        "UndefinedArgInFrom", "undefined-arg-in-from", "FROM command must use declared ARGs",
        "declare the variable with ARG before the first FROM (a global ARG), or fix its name",
    ),
    _buildkit(
        "WorkdirRelativePath", "workdir-relative-path",
        "Relative workdir without an absolute workdir declared within the build can have unexpected results if "
        "the base image changes",
        "give the first WORKDIR of the stage an absolute path, e.g. WORKDIR /app",
    ),
    _buildkit(
        "UndefinedVar", "undefined-var", "Variables should be defined before their use",
        "declare the variable with ARG or ENV in this stage before this line, or fix its name",
    ),
    _buildkit(
        "MultipleInstructionsDisallowed", "multiple-instructions-disallowed",
        "Multiple instructions of the same type should not be used in the same stage",
        "keep only the last one: the earlier one has no effect on the image",
    ),
    _buildkit(
        "LegacyKeyValueFormat", "legacy-key-value-format",
        "Legacy key/value format with whitespace separator should not be used",
        "write key=value (quote the value if it contains spaces)",
    ),
    _buildkit(
        "InvalidBaseImagePlatform", None, "Base image platform does not match expected target platform",
        "pick a base image (or a --platform) that matches the platform being built",
    ),
    _buildkit(
        "RedundantTargetPlatform", "redundant-target-platform",
        "Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the default behavior",
        "remove --platform=$TARGETPLATFORM from FROM",
    ),
    _buildkit(
        "SecretsUsedInArgOrEnv", "secrets-used-in-arg-or-env", "Sensitive data should not be used in the ARG or ENV commands",
        "ARG and ENV values are stored in the image and its history; pass secrets with "
        "RUN --mount=type=secret,id=NAME and pybuild build --secret id=NAME,src=FILE",
    ),
    _buildkit(
        "InvalidDefaultArgInFrom", "invalid-default-arg-in-from",
        "Default value for global ARG results in an empty or invalid base image name",
        "give the global ARG a default that makes a valid image name, e.g. ARG TAG=latest",
    ),
    _buildkit(
        "FromPlatformFlagConstDisallowed", "from-platform-flag-const-disallowed",
        "FROM --platform flag should not use a constant value",
        "use a variable such as --platform=$BUILDPLATFORM, or drop the flag and build with --platform",
    ),
    _buildkit(
        "CopyIgnoredFile", "copy-ignored-file", "Attempting to Copy file that is excluded by .dockerignore",
        "remove the path from .dockerignore, or stop copying it: an ignored file never reaches the build",
        experimental=True,
    ),
    _buildkit(
        "InvalidDefinitionDescription", "invalid-definition-description",
        "Comment for build stage or argument should follow the format: `# <arg/stage name> <description>`. If this is "
        "not intended to be a description comment, add an empty line or comment between the instruction and the comment.",
        "start the comment with the name it describes, or put an empty line between the comment and the instruction",
        experimental=True,
    ),
    _buildkit(
        "ExposeProtoCasing", "expose-proto-casing", "Protocol in EXPOSE instruction should be lowercase",
        "write the protocol in lowercase: tcp, udp or sctp",
    ),
    _buildkit(
        "ExposeInvalidFormat", "expose-invalid-format",
        "IP address and host-port mapping should not be used in EXPOSE instruction. This will become an error in a "
        "future release",
        "EXPOSE takes the container's port only (e.g. EXPOSE 80/tcp); publish host ports with docker run -p",
    ),
)

# The layer lessons of the tutorial (docker-images-tutorial.md): every
# instruction that changes files commits a layer, and a later layer can hide
# files but never take their bytes out of the image.
LAYER_RULES: tuple[Rule, ...] = (
    _pybuild(
        "ConsecutiveRunInstructions", "Consecutive RUN instructions that could be one layer",
        "join the commands into one RUN with && (and \\ line continuations): one layer instead of several",
    ),
    _pybuild(
        "PackageCacheInLayer", "A package manager's cache or index is left in the layer",
        "clean the cache in the same RUN that fills it, or keep it out of the image with a cache mount",
    ),
    _pybuild(
        "FileRemovedInLaterLayer", "A file added by one layer and removed in a later one still ships in the image",
        "create and remove the file in the same RUN, or build it in another stage and COPY --from only the result",
    ),
)

RULES: dict[str, Rule] = {rule.name: rule for rule in BUILDKIT_RULES + LAYER_RULES}
