"""User-facing errors: one line that says what went wrong and what to do.

The command-line tools print ``str(error)`` of these and exit with status 2; anything else is a bug.
"""


class EditError(Exception):
    """Base class of the errors a user can fix (bad input, bad settings, missing model)."""


class InputError(EditError, ValueError):
    """An input file or value cannot be used (missing, corrupt, empty, out of range)."""


class ModelLoadError(EditError):
    """A model could not be loaded (unknown id, offline without a cache, broken folder)."""


class InversionMismatchError(EditError, ValueError):
    """An Inversion was made with another model or settings than the ones it is used with."""
