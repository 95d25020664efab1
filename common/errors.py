"""Errors the pack raises for bad input. Messages say what was expected, what was found, what to do."""


class MovaError(Exception):
    """Base class: every error meant for the user (nodes show the message unchanged). The message is
    cleaned once here: terminal colour codes and control characters (from file names or wrapped
    library errors) removed, length bounded."""

    def __init__(self, *args):
        if args and isinstance(args[0], str):
            from .files import clean
            args = (clean(args[0], 4000), *args[1:])
        super().__init__(*args)


class ConfigError(MovaError):
    """A config.json / preset holds values we cannot run or is missing required fields."""


class CheckpointError(MovaError):
    """A weight file is missing, truncated, from another model or has the wrong keys/shapes."""


class InputError(MovaError):
    """A runtime input (size, frame count, tensor shape) that MOVA cannot use."""


class SamplingStopped(MovaError):
    """The caller's should_stop() asked to stop between steps."""
