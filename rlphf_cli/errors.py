"""The one exception type that the CLI turns into a one-line message and exit code 2."""


class UserError(Exception):
    """Bad input from the user (config, files, preferences). Printed as one line; exit code 2."""

    exit_code = 2
