"""The exchange node: the only asyncio layer; drives consensus, storage and the engine."""

from grenex.node.config import NodeConfig, service_names
from grenex.node.node import Node, NodeError

__all__ = ["Node", "NodeConfig", "NodeError", "service_names"]
