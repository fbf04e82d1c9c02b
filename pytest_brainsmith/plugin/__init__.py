"""The pytest adapter: collection of blueprints into items, fixtures and hooks. A thin
view over the core: an item's test is one call into the engine."""
