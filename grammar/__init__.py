"""The Dockerfile front end: text -> frozen instructions and stages.

Bottom of the import graph: ``grammar`` imports no other pybuild package
(only ``pybuild.errors``), and ``lark`` is imported here and nowhere else;
no lark type leaves this package.  Everything here is synchronous.

    parse(text)            -> Dockerfile (global ARGs, stages of typed instructions)
    parse_ast(text)        -> Ast (generic nodes, as BuildKit's parser)
    dump(ast)              -> BuildKit's s-expression dump
    format_ast(ast)        -> canonical Dockerfile text of the same instructions
    ShellLex(escape)       -> BuildKit's shell-word expansion ($VAR, ${VAR:-x} ...)

A Dockerfile may hold at most MAX_DOCKERFILE_SIZE bytes (BuildKit's limit)
and MAX_INSTRUCTIONS instructions, one instruction at most
MAX_INSTRUCTION_SIZE characters; parsing takes time and memory linear in the
input.
"""

from typing import TYPE_CHECKING

from pybuild import _lazy

from ._dump import dump as dump
from ._dump import go_quote as go_quote
from ._heredoc import chomp_content as chomp_content
from ._heredoc import parse_marker as parse_marker
from ._instructions import Add as Add
from ._instructions import Arg as Arg
from ._instructions import ArgDecl as ArgDecl
from ._instructions import Cmd as Cmd
from ._instructions import Command as Command
from ._instructions import Copy as Copy
from ._instructions import Dockerfile as Dockerfile
from ._instructions import Entrypoint as Entrypoint
from ._instructions import Env as Env
from ._instructions import Expose as Expose
from ._instructions import From as From
from ._instructions import Healthcheck as Healthcheck
from ._instructions import InlineFile as InlineFile
from ._instructions import Instruction as Instruction
from ._instructions import KeyValue as KeyValue
from ._instructions import Label as Label
from ._instructions import Maintainer as Maintainer
from ._instructions import Onbuild as Onbuild
from ._instructions import Run as Run
from ._instructions import RunDevice as RunDevice
from ._instructions import Shell as Shell
from ._instructions import Stage as Stage
from ._instructions import StopSignal as StopSignal
from ._instructions import User as User
from ._instructions import Volume as Volume
from ._instructions import Workdir as Workdir
from ._instructions import build_dockerfile as build_dockerfile
from ._instructions import parse_duration as parse_duration
from ._instructions import parse_node as parse_node
from ._nodes import Heredoc as Heredoc
from ._nodes import Node as Node
from ._nodes import Span as Span
from ._parser import Ast as Ast
from ._parser import parse_ast as parse_ast
from ._scanner import MAX_DOCKERFILE_SIZE as MAX_DOCKERFILE_SIZE
from ._scanner import MAX_INSTRUCTION_SIZE as MAX_INSTRUCTION_SIZE
from ._scanner import MAX_INSTRUCTIONS as MAX_INSTRUCTIONS
from ._shell import ShellLex as ShellLex
from ._shell import WordResult as WordResult

# Writing instructions back as Dockerfile text is for tools and tests: a build never does.
_LAZY = {"format_ast": "._format"}

if TYPE_CHECKING:  # the names below, loaded on first use, typed for the checker
    from ._format import format_ast as format_ast

__getattr__ = _lazy.lazy_getattr(__name__, _LAZY)


def parse(text: str | bytes, file: str = "Dockerfile") -> Dockerfile:
    """Parse a Dockerfile into global ARGs and stages of typed instructions.

    Raises ``pybuild.errors.DockerfileSyntaxError`` (with file and line) for
    anything BuildKit would refuse.
    """
    from ._instructions import build_dockerfile

    return build_dockerfile(parse_ast(text, file))
