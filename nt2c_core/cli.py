"""The ``nt2c`` command line: one subcommand per stage. ``nt2c COMMAND --help`` lists units."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from .errors import NT2CError

def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .commands import register_all

    commands = register_all()
    parser = argparse.ArgumentParser(prog="nt2c", description="Noise-Transfer2Clean cryo-EM denoising.")
    parser.add_argument("--version", action="version", version=f"nt2c {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (add_args, run, help_text) in commands.items():
        p = sub.add_parser(name, help=help_text, description=help_text,
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        add_args(p)
        p.set_defaults(_run=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except NT2CError as exc:
        print(f"nt2c {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"nt2c {args.command}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
