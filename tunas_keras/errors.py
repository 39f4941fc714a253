"""Errors caused by the user's input, told apart from programming errors.

    >>> from tunas_keras.errors import UserInputError, user_input
    >>> with user_input():                      # a validation phase
    ...     space = get_search_space(name)      # its ValueError becomes a UserInputError
    >>> raise UserInputError("Invalid value for argument `weights`: they do not fit the model.")

The rule (applied by `tunas_keras.cli`, which turns a `UserInputError` into one line on stderr
and exit status 2):

1. Code that knows the cause of a failure is the user's input (a corrupt checkpoint, weights
   that do not fit the model, a model_dir that holds another run) raises `UserInputError`.
2. Code that only checks what the user gave runs in a *validation phase*, `with user_input():`.
   Within it every `ValueError` and `OSError` (a missing, unreadable or malformed file, an
   unwritable directory) becomes a `UserInputError`: the library's existing
   "Invalid value for argument `x`. Expected ... Received: ..." errors count as the user's when
   they are raised while validating.
3. Everything else is a programming error and keeps its type and traceback.

A `UserInputError` is a `ValueError`, so `except ValueError` and `pytest.raises(ValueError)`
keep working for library callers.
"""

from __future__ import annotations

import contextlib


class UserInputError(ValueError):
    """The user's input is invalid; the message names the argument, the expectation and the value."""


@contextlib.contextmanager
def user_input():
    """A validation phase: `ValueError`s and `OSError`s raised inside become `UserInputError`s."""
    try:
        yield
    except UserInputError:
        raise
    except (ValueError, OSError) as error:
        raise UserInputError(_message(error)) from error


def _message(error: BaseException) -> str:
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        return f"{error.strerror}: {error.filename!r}"
    return str(error)
