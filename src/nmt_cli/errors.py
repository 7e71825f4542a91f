"""The one exception type that means "the user can fix this": the CLI prints it as one line."""


class UserError(Exception):
    """A mistake in the user's input, files or options; the message says how to fix it."""

    exit_code = 2
