"""The ``nt2c`` command line: one subcommand per stage. ``nt2c COMMAND --help`` lists units."""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Sequence

from .errors import NT2CError


class Terminated(BaseException):
    """SIGTERM (a queue's time limit, ``kill``, Scipion's stop) turned into an exception, so that
    every ``atomic_write`` under way removes its temporary file before the process ends."""


def _on_sigterm(signum, frame):
    raise Terminated()

OVERVIEW = """\
commands by stage:
  NT2C step by step   simulate -> train -> extract-noise -> train-noise-gan -> train-fine -> denoise
  all stages at once  run (resumable work folder; --example prints a config), demo (embedded data set)
  set-up              calibrate (fit defocus, dose, ice of the simulation to your micrographs)
  general model       denoise without --model (shipped); train-general (its recipe)
  evaluation          evaluate (against ground truth); reweight (write noise-transferred pairs)
  models              model-info (check a model file, print its metadata)
  tomography (NMSG)   simulate-tomo (tomogram with ground truth) -> denoise-tomo (train on one volume)
  particles (SR3)     simulate-particles -> train-restorer -> restore-particles; reconstruct (map + FSC)

'nt2c COMMAND --help' gives each command's settings with units and defaults. Messages go to
stdout; progress is a bar on a terminal and plain lines otherwise (Scipion logs, queues)."""

ORDER = ("simulate", "train", "extract-noise", "train-noise-gan", "train-fine", "denoise", "run", "demo",
         "calibrate", "train-general", "evaluate", "reweight",
         "simulate-tomo", "denoise-tomo", "simulate-particles", "train-restorer", "restore-particles",
         "reconstruct", "model-info")


def _logging_options() -> argparse.ArgumentParser:
    """--quiet / --verbose / --log-file, accepted before or after the command name."""
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_mutually_exclusive_group()
    group.add_argument("-q", "--quiet", action="store_const", const=-1, dest="verbosity",
                       default=argparse.SUPPRESS, help="warnings and errors only")
    group.add_argument("-v", "--verbose", action="store_const", const=1, dest="verbosity",
                       default=argparse.SUPPRESS, help="also debugging details")
    common.add_argument("--log-file", metavar="FILE", default=argparse.SUPPRESS,
                        help="also append every message, time-stamped, to FILE")
    return common


def build_parser() -> argparse.ArgumentParser:
    """The ``nt2c`` parser. Building it imports no torch, numpy or scipy (``nt2c --help`` is
    instant): command modules import the library inside their ``run`` functions."""
    from . import __version__
    from .commands import register_all

    commands = register_all()
    common = _logging_options()
    parser = argparse.ArgumentParser(prog="nt2c", description="Noise-Transfer2Clean cryo-EM denoising.",
                                     epilog=OVERVIEW, parents=[common],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"nt2c {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in sorted(commands, key=lambda n: ORDER.index(n) if n in ORDER else len(ORDER)):
        add_args, run, help_text = commands[name]
        p = sub.add_parser(name, help=help_text, description=help_text, parents=[common],
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        add_args(p)
        p.set_defaults(_run=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from .logs import configure

    try:
        configure(getattr(args, "verbosity", 0), getattr(args, "log_file", None))
    except OSError as exc:
        print(f"nt2c {args.command}: error: --log-file {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 2
    if getattr(args, "threads", 0) is not None and getattr(args, "threads", 0) < 0:
        print(f"nt2c {args.command}: error: --threads = {args.threads}: must be 0 (torch's default) or more",
              file=sys.stderr)
        return 2
    previous = _install_sigterm()
    try:
        return int(args._run(args) or 0)
    except NT2CError as exc:
        print(f"nt2c {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"nt2c {args.command}: error: not enough memory for this run (use smaller sizes, tiles or batches); "
              "nothing half-written was left", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"nt2c {args.command}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into a command that stopped reading (e.g. head)
        sys.stderr.close()
        return 0
    except Terminated:
        print(f"nt2c {args.command}: terminated; rerun the same command to resume", file=sys.stderr)
        return 128 + signal.SIGTERM
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _install_sigterm():
    """Handle SIGTERM as :class:`Terminated` (main thread only; returns the previous handler)."""
    try:
        return signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread (e.g. called from a Scipion step thread)
        return None


if __name__ == "__main__":
    sys.exit(main())
