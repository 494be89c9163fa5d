"""grenex.node (see ARCHITECTURE.md)."""
