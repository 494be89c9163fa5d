"""grenex.codec (see ARCHITECTURE.md)."""
