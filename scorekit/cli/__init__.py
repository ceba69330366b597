"""The ``scorekit`` command line: thin wrappers that parse, build a config, call the library, print."""

from __future__ import annotations

import argparse
import sys

from ..errors import ScorekitError
from . import basic, evaluation, interop, ncsn, running

COMMANDS = [*basic.COMMANDS, *running.COMMANDS, *evaluation.COMMANDS, *ncsn.COMMANDS, *interop.COMMANDS]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scorekit", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Score-based generative models of images: DDPM and NCSN/NCSNv2.\n\n"
                    "Train a preset, sample from a run, measure it. `scorekit COMMAND --help` explains each.",
        epilog="example: scorekit train ddpm-digits --out runs/digits && scorekit sample runs/digits --n 64")
    parser.add_argument("--version", action="version", version=f"scorekit {__import__('scorekit').__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, help_text, add_args, func in COMMANDS:
        p = sub.add_parser(name, help=help_text, description=(func.__doc__ or help_text).strip(),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        add_args(p)
        p.set_defaults(func=func)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # key=value overrides that came after an option (argparse stops positionals there)
        if not hasattr(args, "overrides") or any(a.startswith("-") or "=" not in a for a in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    try:
        return int(args.func(args) or 0)
    except ScorekitError as e:
        print(f"scorekit {args.command}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print(f"scorekit {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
