"""grenex: a distributed exchange whose replicas agree on one order of commands."""

__version__ = "0.1.0"
