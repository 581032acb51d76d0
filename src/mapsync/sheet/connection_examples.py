"""YAML examples of the REST and CIMcloud connection models, for docs/sheet.md.

Each entry is `(key, text, many)` as `reference.Example` takes it; a test validates every one.
"""

from __future__ import annotations

from mapsync.sheet import connection_models as cm

EXAMPLES: dict[type, tuple[str, str, bool]] = {
    cm.RestConnection: (
        "connections",
        """\
shop:
  kind: rest
  base_url: "https://shop.example.com/api/v2"
  auth: {type: bearer, token: "${SHOP_TOKEN}"}
  budget: ["5/1s", "1000/1h"]
  paging: {style: link, size: 100, items: data}
  modified_param: updated_since
  key_param: ids
  write: {method: POST, batch: 25, results: results}
""",
        True,
    ),
    cm.CimcloudConnection: (
        "connections",
        """\
cim:
  kind: cimcloud
  site: acme
  auth: {type: token, auth_key: "${CIM_AUTH_KEY}", username: sync, password: "${CIM_PASSWORD}"}
  budget: ["2/1s", "100/15m"]
  read_paths: {account: accounts, product: products}
""",
        True,
    ),
    cm.RetryPolicy: ("retry", "attempts: 6\nbackoff: 500ms\nmax_backoff: 1m\n", False),
    cm.BearerAuth: ("auth", 'type: bearer\ntoken: "${API_TOKEN}"\n', False),
    cm.BasicAuth: ("auth", 'type: basic\nusername: sync\npassword: "${API_PASSWORD}"\n', False),
    cm.ApiKeyAuth: ("auth", 'type: api_key\nheader: X-API-Key\nvalue: "${API_KEY}"\n', False),
    cm.TokenEndpointAuth: (
        "auth",
        "type: token\nurl: /oauth/token\n"
        'body: {client_id: mapsync, client_secret: "${CLIENT_SECRET}"}\n'
        "token_field: access_token\nexpires_field: expires_in\nrefresh_before: 5m\n",
        False,
    ),
    cm.RestPaging: (
        "paging",
        "style: page\nsize: 100\npage_param: page\nsize_param: per_page\nitems: data\n",
        False,
    ),
    cm.RestWrite: ("write", "method: POST\nupdate_method: PATCH\nbatch: 25\nresults: results\n", False),
    cm.CimcloudTokenAuth: (
        "auth",
        'type: token\nauth_key: "${CIM_AUTH_KEY}"\nusername: sync\n'
        'password: "${CIM_PASSWORD}"\nrefresh_before: 1h\n',
        False,
    ),
    cm.CimcloudBasicAuth: ("auth", 'type: basic\nusername: sync\npassword: "${CIM_PASSWORD}"\n', False),
}
