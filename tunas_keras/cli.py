"""The entry point of every program in `tools/`: `cli.run(main)` instead of absl's `app.run(main)`.

    from tunas_keras import cli, errors

    def main(argv):
        with errors.user_input():          # validate everything the user gave; nothing heavy yet
            config = ...
        ...                                # the work

    if __name__ == "__main__":
        cli.run(main)

Around `main` it gives every tool the same behaviour:

- **A user's mistake is one line on stderr and exit status 2**, e.g.
  `Error: Invalid value for argument `space`. Expected one of [...]. Received: space='proxyles'`,
  with no traceback. The user's mistakes are (see `tunas_keras.errors` for the rule):
  absl's flag errors (unknown flag, a value an enum or integer flag refuses, a missing required
  flag), positional arguments, and any `errors.UserInputError` (raised by library code that
  knows the cause is the input, or converted from a `ValueError` / `OSError` inside a
  validation phase `with errors.user_input():`). Every other exception is a programming error
  and raises with its traceback; `--verbosity=1` (debug) shows the traceback of a user error too.
- **A quiet console**: absl's and TensorFlow's Python INFO lines (e.g. the checkpoint saver's
  "Sharding callback duration" at every save) are off unless `--verbosity=0` (or higher) is
  given; on a host without a GPU the CUDA probe's error lines are dropped. TensorFlow's C++
  INFO / WARNING lines at import are off by default (`tunas_keras` sets
  `TF_CPP_MIN_LOG_LEVEL=2` unless it is set); `TF_CPP_MIN_LOG_LEVEL=0` brings them back.
- `--help` / `--helpfull` as absl's.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from typing import Callable, Optional, Sequence

from absl import app, flags, logging

from tunas_keras.errors import UserInputError

EXIT_USER_ERROR = 2
# TF's start-up probe for CUDA on a host without a usable GPU driver: harmless, but printed as errors.
_CUDA_PROBE_LINE = re.compile(r"cuInit|cuda_platform|cuda_diagnostics|cudart_stub|Unable to register cu(DNN|FFT|BLAS)")


def run(main: Callable[[list], Optional[int]], argv: Optional[Sequence[str]] = None) -> None:
    """Parses the flags and runs `main(argv)` as described in the module docstring; exits."""

    def parse(arguments):
        try:
            remaining = flags.FLAGS(list(arguments))
        except (flags.Error, ValueError) as error:  # absl raises ValueError for `--noflag=value`
            exit_with_user_error(error)
        # Here, not in main: absl runs init callbacks (one of TF's probes the GPUs) in between.
        configure_console(verbose=flags.FLAGS["verbosity"].present > 0)
        return remaining

    def guarded_main(arguments):
        if len(arguments) > 1:
            exit_with_user_error(f"Unexpected positional arguments {arguments[1:]}. Expected only --flags.")
        try:
            return main(arguments)
        except (UserInputError, app.UsageError) as error:
            if logging.get_verbosity() >= logging.DEBUG:
                raise
            exit_with_user_error(error)

    app.run(guarded_main, argv=list(sys.argv if argv is None else argv), flags_parser=parse)


def numbers(values: Sequence[str], argument: str, kind: type = int, minimum: Optional[float] = None) -> list:
    """A list flag's values as `kind` (int or float), each >= `minimum`; a ValueError naming `argument`."""
    label = "ints" if kind is int else "numbers"
    try:
        parsed = [kind(value) for value in values]
    except (TypeError, ValueError):
        parsed = None
    if not parsed or (minimum is not None and min(parsed) < minimum):
        bound = f" >= {minimum}" if minimum is not None else ""
        raise ValueError(
            f"Invalid value for argument `{argument}`. Expected a comma-separated list of {label}{bound}. "
            f"Received: {','.join(map(str, values))!r}"
        )
    return parsed


def exit_with_user_error(error) -> None:
    """Prints `Error: <message>` (one line) to stderr and exits with status 2."""
    message = " ".join(str(error).split()) or type(error).__name__
    print(f"Error: {message}", file=sys.stderr, flush=True)
    sys.exit(EXIT_USER_ERROR)


def configure_console(verbose: bool) -> None:
    """absl / TF Python logging at WARNING unless `--verbosity` was given; CUDA probe lines dropped on CPU."""
    if not verbose:
        logging.set_verbosity(logging.WARNING)
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    tf.get_logger().setLevel(logging.converter.absl_to_standard(logging.get_verbosity()))
    if verbose or os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2") in ("0", "1"):
        tf.config.list_physical_devices()
        return
    with _filtered_stderr(lambda line: not _CUDA_PROBE_LINE.search(line)) as kept:
        gpus = tf.config.list_physical_devices("GPU")
        kept.keep_all = bool(gpus)  # with a GPU, whatever the probe printed matters


class _Kept:
    keep_all = False


class _filtered_stderr:  # noqa: N801 - used as a context manager
    """Captures file descriptor 2 (where TF's C++ logging writes) and re-emits the lines `keep` accepts."""

    def __init__(self, keep: Callable[[str], bool]):
        self.keep = keep
        self.kept = _Kept()

    def __enter__(self) -> _Kept:
        sys.stderr.flush()
        self.saved = os.dup(2)
        self.capture = tempfile.TemporaryFile(mode="w+b")
        os.dup2(self.capture.fileno(), 2)
        return self.kept

    def __exit__(self, *exc_info) -> None:
        sys.stderr.flush()
        os.dup2(self.saved, 2)
        os.close(self.saved)
        self.capture.seek(0)
        text = self.capture.read().decode(errors="replace")
        self.capture.close()
        lines = [line for line in text.splitlines() if self.kept.keep_all or self.keep(line)]
        if lines:
            print("\n".join(lines), file=sys.stderr, flush=True)
