"""The exchange node: the only asyncio layer; small services over an injected ``NodeIO``
(``io.py``) that drive the pure replica, gateway and driver turn.  Start at ``node.py``."""

from grenex.node.config import NodeConfig
from grenex.node.errors import NodeError
from grenex.node.io import FakeIO, ManualClock, NodeIO, RealIO
from grenex.node.node import Node

__all__ = ["FakeIO", "ManualClock", "Node", "NodeConfig", "NodeError", "NodeIO", "RealIO"]
