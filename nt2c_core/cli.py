"""The ``nt2c`` command line: one subcommand per stage. ``nt2c COMMAND --help`` lists units."""

from __future__ import annotations

import argparse
import errno
import os
import signal
import sys
from typing import Sequence

from .errors import NT2CError, is_out_of_memory
from .logs import OutputFault
from .validation import SEED_LIMIT


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

ORDER = (
    "simulate",
    "train",
    "extract-noise",
    "train-noise-gan",
    "train-fine",
    "denoise",
    "run",
    "demo",
    "calibrate",
    "train-general",
    "evaluate",
    "reweight",
    "simulate-tomo",
    "denoise-tomo",
    "simulate-particles",
    "train-restorer",
    "restore-particles",
    "reconstruct",
    "model-info",
)


def _logging_options() -> argparse.ArgumentParser:
    """--quiet / --verbose / --log-file, accepted before or after the command name."""
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_mutually_exclusive_group()
    group.add_argument(
        "-q",
        "--quiet",
        action="store_const",
        const=-1,
        dest="verbosity",
        default=argparse.SUPPRESS,
        help="warnings and errors only",
    )
    group.add_argument(
        "-v",
        "--verbose",
        action="store_const",
        const=1,
        dest="verbosity",
        default=argparse.SUPPRESS,
        help="also debugging details",
    )
    common.add_argument(
        "--log-file", metavar="FILE", default=argparse.SUPPRESS, help="also append every message, time-stamped, to FILE"
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    """The ``nt2c`` parser. Building it imports no torch, numpy or scipy (``nt2c --help`` is
    instant): command modules import the library inside their ``run`` functions."""
    from . import __version__
    from .commands import register_all

    commands = register_all()
    common = _logging_options()
    parser = argparse.ArgumentParser(
        prog="nt2c",
        description="Noise-Transfer2Clean cryo-EM denoising.",
        epilog=OVERVIEW,
        parents=[common],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"nt2c {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in sorted(commands, key=lambda n: ORDER.index(n) if n in ORDER else len(ORDER)):
        add_args, run, help_text = commands[name]
        p = sub.add_parser(
            name,
            help=help_text,
            description=help_text,
            parents=[common],
            formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        )
        add_args(p)
        p.set_defaults(_run=run)
    return parser


def _usable_streams() -> None:
    """No stdout or stderr (``nt2c ... >&-``): write to the null device instead of failing on
    None; names a stream cannot encode (``LC_ALL=C``) are written escaped, never a traceback."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is None:
            setattr(sys, name, open(os.devnull, "w"))
        elif hasattr(stream, "reconfigure"):
            try:
                stream.reconfigure(errors="backslashreplace")
            except (ValueError, OSError):
                pass


def _os_error_text(exc: OSError) -> str:
    """An OSError as 'FILE: reason' (the file first, as every other message names it)."""
    if isinstance(exc, OutputFault):
        return f"{exc.target}: could not be written ({exc.strerror})"
    where = exc.filename if exc.filename is not None else "a file"
    return f"{where}: {exc.strerror or exc}"


def _check_values(args: argparse.Namespace) -> str | None:
    """Checks shared by every command: threads and seeds are never negative."""
    if getattr(args, "threads", 0) is not None and getattr(args, "threads", 0) < 0:
        return f"--threads = {args.threads}: must be 0 (torch's default) or more"
    if getattr(args, "seed", None) is not None and not 0 <= args.seed < SEED_LIMIT:
        return f"--seed = {args.seed}: must be within 0..{SEED_LIMIT - 1}"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    _usable_streams()
    parser = build_parser()
    args = parser.parse_args(argv)
    from .commands import check_outputs_are_not_inputs
    from .logs import configure

    problem = _check_values(args)
    try:
        problem = problem or check_outputs_are_not_inputs(args)
    except OSError as exc:
        problem = _os_error_text(exc)
    if problem:
        print(f"nt2c {args.command}: error: {problem}", file=sys.stderr)
        return 2
    try:
        configure(getattr(args, "verbosity", 0), getattr(args, "log_file", None))
    except OSError as exc:
        print(
            f"nt2c {args.command}: error: --log-file {exc.filename or args.log_file}: {exc.strerror}", file=sys.stderr
        )
        return 2
    previous = _install_sigterm()
    try:
        rc = int(args._run(args) or 0)
        try:
            sys.stdout.flush()
        except OSError as exc:
            if isinstance(exc, BrokenPipeError):
                raise
            raise OutputFault("standard output", exc) from exc
        return rc
    except NT2CError as exc:
        print(f"nt2c {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except MemoryError:
        print(
            f"nt2c {args.command}: error: not enough memory for this run (use smaller sizes, tiles or batches); "
            "nothing half-written was left",
            file=sys.stderr,
        )
        return 2
    except RecursionError:
        print(
            f"nt2c {args.command}: error: an input is nested too deeply to read (a crafted JSON or STAR file?)",
            file=sys.stderr,
        )
        return 2
    except BrokenPipeError:  # output piped into a command that stopped reading (e.g. head)
        _drop_stdout()
        sys.stderr.close()
        return 0
    except OSError as exc:  # a file system fault the stage did not name itself: unreadable, loop, full
        if (
            not isinstance(exc, OutputFault)
            and exc.filename is None
            and not _stdout_is_tty()
            and exc.errno in (errno.ENOSPC, errno.EIO, errno.EBADF)
        ):
            exc = OutputFault("standard output", exc)  # a print's own flush into a full or closed stdout
        if getattr(exc, "target", None) == "standard output":
            _drop_stdout()
        print(f"nt2c {args.command}: error: {_os_error_text(exc)}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        text = str(exc)
        if "Symlink loop" in text:
            print(
                f"nt2c {args.command}: error: {text.replace('Symlink loop from ', '').strip(chr(39))}: "
                "a symbolic link loop",
                file=sys.stderr,
            )
            return 2
        if is_out_of_memory(exc):
            print(
                f"nt2c {args.command}: error: not enough memory for this run (use smaller sizes, tiles or "
                "batches); nothing half-written was left",
                file=sys.stderr,
            )
            return 2
        raise
    except KeyboardInterrupt:
        print(f"nt2c {args.command}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except Terminated:
        print(f"nt2c {args.command}: terminated; rerun the same command to resume", file=sys.stderr)
        return 128 + signal.SIGTERM
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _stdout_is_tty() -> bool:
    try:
        return sys.stdout.isatty()
    except (ValueError, OSError, AttributeError):
        return False


def _drop_stdout() -> None:
    """Point stdout at the null device so Python's exit-time flush of a full or broken stdout
    prints no 'Exception ignored' traceback."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass
    sys.stdout = open(os.devnull, "w")


def _install_sigterm():
    """Handle SIGTERM as :class:`Terminated` (main thread only; returns the previous handler)."""
    try:
        return signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread (e.g. called from a Scipion step thread)
        return None


if __name__ == "__main__":
    sys.exit(main())
