"""grenex.consensus (see ARCHITECTURE.md)."""
