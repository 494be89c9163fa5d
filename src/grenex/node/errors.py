"""The node's error tree, at its boundary.

::

    NodeError            the node cannot start or run (configuration, storage, listening,
                         the Grapes); ``grenex node`` prints it and exits 2
    grenex.codec.api.ApiError   what a request is answered with (wire text ``CODE: why``):
        BadRequest / Busy / Unavailable / Compacted — raised by the services and turned into
        Grenache error strings in one place, the client API's and peer API's ``handle``

Foreign errors (Grenache ``ERR_*``, OSError, storage errors) are translated where they enter:
into ``NodeError`` at start, into ``ApiError`` on the request path, into a gateway input
(``forward_failed``) for forwarding.  Broken invariants of the pure core are assertions: the
driver stops the node rather than let a replica diverge.
"""

from __future__ import annotations

from grenex.codec.api import ApiError, BadRequest, Busy, Compacted, Unavailable

__all__ = ["ApiError", "BadRequest", "Busy", "Compacted", "NodeError", "Unavailable"]


class NodeError(Exception):
    """A node cannot start or run (bad configuration, storage, no Grape)."""
