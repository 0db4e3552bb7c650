"""Gates a new revision passes before any user traffic reaches it (pure, called by the engine)."""
