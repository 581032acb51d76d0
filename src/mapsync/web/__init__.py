"""The operator dashboard and its JSON API (`mapsync serve`, `mapsync daemon --serve`).

One FastAPI app (`web.app.create_app`): the pages and the API read through the state store's ports
and the sheet, and every action only writes to the state store (a run request for the daemon, a
pause, a resolution, an alert acknowledgement) with an audit row: no engine runs inside a request.
Security (`guard`, `auth`, `passwords`): a Host allow-list, security headers and a body limit on
every request; users and roles from the sheet's `web:`; sessions with CSRF tokens, bearer tokens,
login rate limiting (docs/dashboard.md).
"""
