"""The operator dashboard and its JSON API (issue 19): a FastAPI app over the state store's ports
and the sheet; no engine runs and no source or destination database is read inside a request."""
