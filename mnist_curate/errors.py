"""Exceptions that the command boundary turns into a message and an exit code.

Library code raises these with a message that already names what failed, where,
and how to fix it; ``cli`` prints the message without a traceback.
"""

EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


class CurateError(Exception):
    """A failure that is not the user's input (exit code 1)."""

    exit_code = EXIT_FAILURE


class BadInputError(CurateError):
    """Invalid config, data, decision file or command line (exit code 2)."""

    exit_code = EXIT_BAD_INPUT


class ConfigError(BadInputError):
    """A config value that is unknown, of the wrong type or out of range."""


class DataError(BadInputError):
    """MNIST files that are missing, truncated or corrupt."""


class PrerequisiteError(BadInputError):
    """A stage was asked to run before the stages it reads from."""


class WorkspaceLockedError(CurateError):
    """Another live process holds the workspace lock."""
