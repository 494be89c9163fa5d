"""grenex.sim (see ARCHITECTURE.md)."""
