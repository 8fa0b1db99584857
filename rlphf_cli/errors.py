"""The exceptions that the CLI turns into one line and an exit code (the traceback goes to the run's log file)."""


class RlphfError(Exception):
    """A failure this tool can name in one line."""

    exit_code = 1


class UserError(RlphfError):
    """Bad input from the user (config, files, preferences). Printed as one line; exit code 2."""

    exit_code = 2


class Failure(RlphfError):
    """The input was fine but running failed (out of memory, a training process crashed); exit code 1."""


class Interrupted(RlphfError):
    """Ctrl-C: what is complete stays, the same command resumes the rest; exit code 130."""

    exit_code = 130

    def __init__(self, message: str = "interrupted: run the same command again to resume"):
        super().__init__(message)


def first_line(exc: BaseException) -> str:
    """An exception's message cut to its first line (library errors can run to pages)."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
