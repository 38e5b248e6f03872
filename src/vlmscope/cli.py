"""The `vlmscope` command. Thin: parse, call the library, print. Heavy imports are lazy."""

from __future__ import annotations

import argparse
import importlib
import sys

from .errors import VlmscopeError

# one module per command under vlmscope/commands/, each with register(subparsers)
COMMANDS = [
    "inspect",
    "lens",
    "capture",
    "attention",
    "run",
    "extract",
    "store",
    "mask",
    "evaluate",
    "shapes",
    "probe",
    "demo",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vlmscope", description="Look inside Qwen vision-language models.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"vlmscope.commands.{name}").register(sub)
    for p in _parsers(parser):  # every --help shows the defaults
        p.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    return parser


def _parsers(parser: argparse.ArgumentParser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                yield from _parsers(child)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except VlmscopeError as e:
        print(f"vlmscope: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vlmscope: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
