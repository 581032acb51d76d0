"""REST connectors: HTTP client, call budget, sources and destinations over HTTP APIs."""
