"""The ``scorekit`` command line: thin wrappers that parse, build a config, call the library, print.

Every option is checked when it is parsed (see :mod:`scorekit.cli.args`) and every command checks its
inputs before it does any work or writes any file. Whatever goes wrong ends in one line on stderr and a
non-zero exit code: 2 for bad input (a :class:`~scorekit.errors.ScorekitError` or a bad option), 1 for
an internal error, whose traceback is saved to a file (or printed with ``--debug`` / ``SCOREKIT_DEBUG=1``).
Under torchrun only rank 0 writes to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import inspect
import os
import sys
import tempfile
import traceback

from ..errors import ScorekitError
from . import basic, classifier, codec, distill, ema, evaluation, figures, hype, inpaint, interop, ncsn, running, study

COMMANDS = [*basic.COMMANDS, *running.COMMANDS, *evaluation.COMMANDS, *figures.COMMANDS, *inpaint.COMMANDS,
            *classifier.COMMANDS, *ema.COMMANDS, *distill.COMMANDS, *codec.COMMANDS, *hype.COMMANDS, *study.COMMANDS,
            *ncsn.COMMANDS, *interop.COMMANDS]


class UsageError(ScorekitError):
    """A bad option or argument, reported by argparse."""


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage block) raised to :func:`main` instead of exiting."""

    def error(self, message: str):
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--no-progress", action="store_true", help="no progress bars or progress lines")
    common.add_argument("--debug", action="store_true", help="print the full traceback of an internal error")
    return common


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="scorekit", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Score-based generative models of images: DDPM and NCSN/NCSNv2.\n\n"
                    "Train a preset, sample from a run, measure it. `scorekit COMMAND --help` explains each.",
        epilog="example: scorekit train ddpm-digits --out runs/digits && scorekit sample runs/digits --n 64")
    parser.add_argument("--version", action="version", version=f"scorekit {__import__('scorekit').__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=Parser)
    common = common_options()
    for name, help_text, add_args, func in COMMANDS:
        p = sub.add_parser(name, help=help_text, description=inspect.cleandoc(func.__doc__ or help_text),
                           parents=[common], formatter_class=argparse.RawDescriptionHelpFormatter)
        add_args(p)
        p.set_defaults(func=func)
    return parser


def _rank() -> int:
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def _save_traceback(command: str) -> str:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = os.path.join(tempfile.gettempdir(), f"scorekit-{command}-{stamp}-{os.getpid()}.traceback.txt")
    with open(path, "w") as f:
        f.write(f"scorekit {' '.join(sys.argv[1:])}\n\n{traceback.format_exc()}")
    return path


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    command = next((a for a in argv if not a.startswith("-")), "scorekit")
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:  # key=value overrides that came after an option (argparse stops positionals there)
            if not hasattr(args, "overrides") or any(a.startswith("-") or "=" not in a for a in extra):
                raise UsageError(f"unrecognized arguments: {' '.join(extra)} (see `scorekit {command} --help`)")
            args.overrides = [*args.overrides, *extra]
    except ScorekitError as e:
        if _rank() == 0:
            print(f"scorekit {command}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    debug = args.debug or os.environ.get("SCOREKIT_DEBUG", "") not in ("", "0")
    quiet = open(os.devnull, "w") if _rank() != 0 else None  # under torchrun only rank 0 prints
    try:
        with contextlib.redirect_stdout(quiet) if quiet else contextlib.nullcontext():
            return int(args.func(args) or 0)
    except ScorekitError as e:
        if _rank() == 0:
            print(f"scorekit {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print(f"scorekit {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the last line of defence: one line, the traceback in a file
        if debug:
            traceback.print_exc()
            return 1
        where = _save_traceback(args.command)
        rank = f" (rank {_rank()})" if _rank() else ""
        print(f"scorekit {args.command}: internal error{rank}: {e.__class__.__name__}: {_one_line(e)[:300]} "
              f"(full traceback in {where}; rerun with --debug to print it)", file=sys.stderr)
        return 1
    finally:
        if quiet:
            quiet.close()


if __name__ == "__main__":
    sys.exit(main())
