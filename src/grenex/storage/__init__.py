"""grenex.storage (see ARCHITECTURE.md)."""
