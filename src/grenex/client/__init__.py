"""grenex.client (see ARCHITECTURE.md)."""
