"""Gates a new revision passes before any user traffic reaches it (pure: decided by the engine)."""
