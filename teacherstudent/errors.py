"""The one exception type for bad user input: the CLI prints its message and exits 2."""


class UserError(Exception):
    """Bad input from the user: the message says what is wrong and how to fix it."""
