"""HTTP routes, one module per resource; all state lives on `app.state` (see coordinator.app)."""
