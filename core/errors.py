"""The exceptions the core raises for bad input; their messages are meant for the user.

* ``ChopShopError``: bad input (a file, a vector, an option); the message names the problem and what would be
  valid. Front ends print it as one line (CLI: exit 2; routes: HTTP 400; nodes: a node error).
* ``OutputExists``: the output path is taken; outputs are never overwritten. Also a ``FileExistsError``.

Programmer errors stay plain builtins (``ValueError``, ``AssertionError`` ...) and are never caught as input
errors. Code never branches on message text: it catches a type.
"""


class ChopShopError(Exception):
    """A user-facing error: the message names the problem and what would be valid."""


class OutputExists(ChopShopError, FileExistsError):
    """The output file already exists; it is never overwritten."""


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived during a write: raised like Ctrl-C so temporary files are removed on the way out."""
