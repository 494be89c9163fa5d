"""grenex.grenache (see ARCHITECTURE.md)."""
