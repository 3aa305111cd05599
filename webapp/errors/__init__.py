"""Error pages and JSON errors: `handlers.register(app)` is called by the factory."""
