"""grenex.replica (see ARCHITECTURE.md)."""
