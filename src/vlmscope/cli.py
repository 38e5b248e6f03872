"""The `vlmscope` command. Thin: parse, call the library, print. Heavy imports are lazy."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
import warnings

from . import interrupts
from .errors import VlmscopeError
from .progress import quiet

# one module per command under vlmscope/commands/, each with register(subparsers); --help lists
# them in this order: the main job first, then one image, datasets, evaluation, and the rest
COMMANDS = [
    "run",
    "app",
    "attention",
    "mask",
    "lens",
    "capture",
    "compare",
    "extract",
    "store",
    "probe",
    "evaluate",
    "heads",
    "shapes",
    "inspect",
    "demo",
]

EXAMPLES = """examples:
  vlmscope run example: --prompt "What colour is the square?"     # the bundled model, the example image
  vlmscope run photo.jpg --prompt "What is here?" --model Qwen/Qwen2.5-VL-3B-Instruct
  vlmscope app                                                    # the web app on 127.0.0.1:7860
  vlmscope extract questions.csv --preset halp --out features/    # a dataset into an HDF5 store
  vlmscope evaluate --n 40                                        # which map method to trust

'vlmscope COMMAND --help' shows a command's flags with their defaults."""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a flag's default only when it has one worth reading (not None, not an off switch)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help_text = action.help or ""
        if "%(default)" in help_text or action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return help_text
        return help_text + " (default: %(default)s)"


NO_PROGRESS_HELP = "no progress bars (they show only on a terminal anyway)"


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="vlmscope",
        description="Look inside Qwen vision-language models (Qwen2-VL, Qwen2.5-VL, Qwen3-VL).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"vlmscope {__version__}")
    # the same switch before or after the command: `vlmscope --no-progress run ...`, `vlmscope run ... --no-progress`
    parser.add_argument("--no-progress", dest="no_progress_global", action="store_true", help=NO_PROGRESS_HELP)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"vlmscope.commands.{name}").register(sub)
    for p in _parsers(parser):  # every --help shows the defaults
        if p is not parser:
            p.formatter_class = HelpFormatter
        if p is not parser and not any(isinstance(a, argparse._SubParsersAction) for a in p._actions):
            p.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)
    return parser


def _parsers(parser: argparse.ArgumentParser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                yield from _parsers(child)


_plain_showwarning = warnings.showwarning


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """vlmscope's own warnings as one line, like its errors; others as Python prints them."""
    from .scope import OutOfDomainWarning

    if issubclass(category, OutOfDomainWarning):
        print(f"vlmscope: warning: {message}", file=sys.stderr)
    else:
        _plain_showwarning(message, category, filename, lineno, file, line)


def main(argv: list[str] | None = None) -> int:
    """The command line as a function (tests call it in-process): the exit status, 2 after a user
    error (one line), 130 after Ctrl-C (one line), whenever it comes, parsing included."""
    try:
        try:
            args = build_parser().parse_args(argv)
            args.no_progress = args.no_progress or args.no_progress_global
            if hasattr(args, "attn_implementation"):  # a command that loads a model: its flags first
                from .commands import check_model_args

                check_model_args(args)
            with quiet() if args.no_progress else contextlib.nullcontext(), warnings.catch_warnings():
                warnings.showwarning = _show_warning
                code = args.func(args)
            interrupts.output_complete()  # the output is complete: from here on Ctrl-C leaves it so (exit 0)
            return code
        except (VlmscopeError, OSError, RuntimeError) as e:
            # a user's error, or a destination that is full, read-only or forbidden (one line too)
            line = str(e) if isinstance(e, VlmscopeError) else _write_failure(e)
            if line is None:
                raise
            interrupts.output_complete()
            from .commands import release_claims

            release_claims()
            print(f"vlmscope: error: {line}", file=sys.stderr)
            return 2
    except KeyboardInterrupt:
        return _interrupted()


def _write_failure(e: BaseException) -> str | None:
    from .files import failure_line

    return failure_line(e)


def _interrupted() -> int:
    interrupts.output_complete()
    print(interrupts.LINE, file=sys.stderr)
    return 130


def entry() -> int:
    """The `vlmscope` program (console script and ``python -m vlmscope.cli``)."""
    interrupts.install()
    try:
        return main()
    except KeyboardInterrupt:  # in the instant before main's own handler is in place
        return _interrupted()


if __name__ == "__main__":
    sys.exit(entry())
