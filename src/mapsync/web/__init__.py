"""The operator dashboard and its JSON API (issue 19): one FastAPI app over the state store."""
