"""`selfsup`: one argparse tree; each command lives in app/commands/<name>.py."""

from __future__ import annotations

import argparse
import importlib
import inspect
import sys

from engine.errors import UserError
from engine.events import JobEvents

COMMANDS = [
    "train",
    "evaluate",
    "export",
    "methods",
    "models",
    "demo",
    "video",
    "multimodal",
    "visualize",
    "gui",
]


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="selfsup",
        description="Self-supervised learning on your own images, videos and photos.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"app.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"app.commands.{name}":
                continue
            raise
        takes_argv = len(inspect.signature(module.register).parameters) > 1
        module.register(sub, argv) if takes_argv else module.register(sub)
    return parser


def add_events_arg(p: argparse.ArgumentParser) -> None:
    """--events FILE: the job's progress and result as JSON lines (what the desktop app reads)."""
    p.add_argument(
        "--events",
        metavar="FILE",
        help="also write progress and the result as JSON lines to FILE (for the desktop app)",
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = None
    try:
        from app.registry_all import load_all

        load_all()
        args = build_parser(argv).parse_args(argv)
        args.job = JobEvents(args.events) if getattr(args, "events", None) else None
        code = int(args.func(args) or 0)
        if args.job is not None:
            args.job.write("done" if code == 0 else "error", result=getattr(args, "result", {}))
        return code
    except UserError as e:
        if args is not None and getattr(args, "job", None) is not None:
            args.job.write("error", message=str(e))
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `selfsup methods | head`: the reader left, nothing is wrong
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
