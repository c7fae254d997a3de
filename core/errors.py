"""The one exception type the core raises for bad input: its message is meant for the user."""


class ChopShopError(Exception):
    """A user-facing error: the message names the problem and what would be valid."""
