"""User-facing errors: one line that names the problem and the fix; the CLI prints it without a traceback."""


class UserError(Exception):
    """A problem with the user's input (a path, a name, a file) rather than a bug in csil-diag."""
