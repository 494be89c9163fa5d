"""grenex.client: the async Python client of a grenex cluster, and the client commands.

::

    from grenex.client import GrenexClient

    async with GrenexClient("http://127.0.0.1:30001", node="n1") as c:
        r = await c.place("BTC-USD", "buy", "0.5", "27000.10")
        print(r.status, r.reason, r.trades)

See :mod:`grenex.client.client` for retries and errors, docs/client.md for a tour.
A local network of Grapes and nodes to talk to is :mod:`grenex.devnet`'s ``LocalCluster``.
"""

from grenex.client.client import (
    DEFAULT_CLUSTER,
    BadRequest,
    Book,
    BookOrder,
    BookSnapshot,
    CommandResult,
    EventStream,
    GrapeUnavailable,
    GrenexClient,
    GrenexClientError,
    Level,
    MarketInfo,
    NodeStatus,
    NotFound,
    OpenOrder,
    OrderState,
    StatusReply,
    Unavailable,
    new_order_id,
)

__all__ = [
    "DEFAULT_CLUSTER",
    "BadRequest",
    "Book",
    "BookOrder",
    "BookSnapshot",
    "CommandResult",
    "EventStream",
    "GrapeUnavailable",
    "GrenexClient",
    "GrenexClientError",
    "Level",
    "MarketInfo",
    "NodeStatus",
    "NotFound",
    "OpenOrder",
    "OrderState",
    "StatusReply",
    "Unavailable",
    "new_order_id",
]
