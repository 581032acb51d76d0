"""Short YAML examples of every sheet model, shown in docs/sheet.md (a test checks that every
model has one and that each validates)."""

from __future__ import annotations

import dataclasses

from pydantic import BaseModel

from mapsync.sheet import (
    alert_models,
    connection_examples,
    delivery_models,
    export_models,
    export_rest_models,
    models,
    reconcile_models,
    web_models,
)

# `mapsync web hash-password` of "example-password-1"
_HASH = "scrypt$16384$8$1$MK1F5ZDgE7Zn4l90xYuqfQ==$4Ha41J2YNKpSOH5wt9AsgeZ2ANPXPq5nKpKtIPGePfo="


@dataclasses.dataclass(frozen=True)
class Example:
    """A short YAML example of a model: `text` is the value under `key` (top level if empty);
    with `many`, the value maps names to instances (as `fields` does)."""

    key: str
    text: str
    many: bool = False


EXAMPLES: dict[type[BaseModel], Example] = {
    models.Sheet: Example(
        "",
        """\
version: 1
connections:
  erp: {url: "sqlite:///erp.db"}
  portal: {url: "postgresql://sync:${PORTAL_PASSWORD}@db.example.com/portal"}
syncs:
  customers:
    from: {connection: erp, table: customers}
    to: {connection: portal, table: accounts}
    key: {from: id, to: erp_id}
    fields:
      nm: name
    changes: {method: watermark, column: updated_at}
""",
    ),
    models.SqlConnection: Example(
        "connections",
        """\
erp: {url: "sqlite:///erp.db"}
portal:
  url: "postgresql://sync:${PORTAL_PASSWORD}@db.example.com/portal"
  timezone: Europe/Berlin
""",
        many=True,
    ),
    models.Timeouts: Example(
        "timeouts",
        """\
connect: 10s
statement: 2m
keepalives_idle: 30s
tcp_user_timeout: 60s
""",
    ),
    models.StateConfig: Example(
        "state",
        """\
url: "sqlite:///.mapsync/state.db"
lease_ttl: 10m
retention: 90d
""",
    ),
    models.SyncConfig: Example(
        "syncs",
        """\
orders:
  from: {connection: erp, table: orders}
  to: {connection: portal, table: orders}
  key: {from: [company, order_no], to: [company, order_no]}
  fields:
    total: {from: amount, cast: decimal, scale: 2}
  changes: {method: watermark, column: changed_at}
  filter: "status <> 'draft'"
  after: customers
""",
        many=True,
    ),
    models.SourceRef: Example(
        "from",
        """\
connection: erp
query: "SELECT c.id, c.name, c.changed FROM customers c WHERE c.kind = 'B2B'"
""",
    ),
    models.DestRef: Example("to", "connection: portal\ntable: accounts\n"),
    models.DestColumn: Example(
        "columns",
        """\
nm: {type: string, length: 150, required: true}
credit_limit: {type: decimal, precision: 12, scale: 2}
active: {type: boolean}
""",
        many=True,
    ),
    models.KeyMap: Example("key", "from: [company, id]\nto: [company_code, erp_id]\n"),
    models.FieldRule: Example(
        "fields",
        """\
nm: name                                  # short for {from: name}
title: {from: title, truncate: 150}
tier: {from: grade, map: {A: gold, B: silver}, on_unknown: default, map_default: bronze}
country: {from: land, country: iso3}
price: {from: price, cast: decimal, scale: 2}
source: {value: erp}                      # a constant
phone: {from: phone, default: ""}
""",
        many=True,
    ),
    models.WatermarkChanges: Example(
        "changes",
        """\
method: watermark
column: updated_at
lag: 5s
overlap: {window: 24h, every: 1d}
""",
    ),
    models.OverlapConfig: Example("overlap", 'window: 26h\ncron: "0 2 * * *"\ntimezone: Europe/Berlin\n'),
    models.FullChanges: Example("changes", "method: full\n"),
    models.SnapshotChanges: Example("changes", "method: snapshot\npage: 5000\n"),
    models.LogChanges: Example("changes", "method: log\nslot: mapsync_orders\nmax_retained_wal: 1GB\n"),
    models.QueueChanges: Example(
        "changes", "method: queue\ntable: mapsync_changes\nmax_retries: 5\nbackoff: 1m\nretention: 7d\n"
    ),
    models.InboxChanges: Example("changes", "method: inbox\nmax_items: 10000\n"),
    models.ExportFlagChanges: Example(
        "changes",
        """\
method: export_flag
flag: exported
status: erp_import_status
error: erp_import_error
version: updated_at
document: {from: erp_order_number, to: erp_order_number}
on_exists: skip
""",
    ),
    models.WebhookConfig: Example(
        "webhook",
        'secret: "${WEBHOOK_SECRET}"\nsignature_header: X-Mapsync-Signature\ntolerance: 5m\n',
    ),
    export_models.ExportStatuses: Example(
        "statuses", "success: imported\nfailed: error\nskipped: imported\n"
    ),
    export_models.ExportDocument: Example("document", "from: erp_order_number\nto: erp_order_number\n"),
    export_rest_models.ExportWriteBack: Example(
        "write_back", "resource: orders\nkey: c_ordnum\nmethod: PUT\n"
    ),
    export_rest_models.ExportSweep: Example(
        "sweep", "window: 7d\non_lost: reset\nmax_calls: 20\nevery: 1h\n"
    ),
    models.SeedConfig: Example("seed", "where: \"status = 'A'\"\n"),
    models.DeletesConfig: Example(
        "deletes",
        "policy: by_reason\nfield: active\nvalue: false\nexpired: {date: valid_until}\n"
        "otherwise: hard\nfallback: disable\n",
    ),
    models.ExpiredRule: Example("expired", "date: valid_until\nstatus: state\nin: [X, EXPIRED]\n"),
    models.CountryRule: Example("country", "to: iso2\nautocorrect: true\n"),
    models.PythonHook: Example("python", "entry_point: initials\n"),
    models.LookupRule: Example(
        "lookup", "connection: erp\ntable: sales_reps\nkey: rep_code\nvalue: email\non_missing: reject\n"
    ),
    models.MapSource: Example("map_from", "file: maps/payment_terms.csv\n"),
    models.SplitRule: Example("split", 'sep: ","\nindex: 0\n'),
    models.TimezoneRule: Example("timezone", "source: Europe/Berlin\ntarget: UTC\n"),
    models.DeliveryConfig: Example(
        "delivery", "mode: sync\nseed_mode: async\nbatch: 1000\nasync_batch: 500\nasync_timeout: 10m\n"
    ),
    models.AsyncJobs: Example(
        "jobs",
        "job_id: job.id\nstatus_path: jobs/{job}\nstatus_field: state\ndone: [done]\n"
        "failed: [failed]\nresults: results\n",
    ),
    delivery_models.BreakerConfig: Example("breaker", "refused: 0.9\nbatches: 3\n"),
    models.ScheduleConfig: Example(
        "schedule",
        'cron: "*/5 7-19 * * 1-5"\ntimezone: Europe/Berlin\nstart_within: 2m\nfinish_within: 10m\n',
    ),
    models.RetryConfig: Example("retry", "every: 30m\nmax_attempts: 5\n"),
    reconcile_models.ReconcileCheck: Example(
        "reconcile",
        """\
open_ar:
  sync: invoices
  source: {connection: erp, table: invoices, group: customer_no, sum: balance, where: "open = 1"}
  dest: {connection: portal, table: customers, group: ref_id, sum: open_balance}
  tolerance: {absolute: "0.01"}
  schedule: {cron: "0 6 * * *"}
invoice_rows:
  drift: invoices
  schedule: {every: 6h}
""",
        many=True,
    ),
    web_models.WebConfig: Example(
        "web",
        f"""\
users:
  alice: {{role: operator, password_hash: "{_HASH}"}}
  grafana: {{role: viewer, token: "${{MAPSYNC_GRAFANA_TOKEN}}"}}
hosts: [mapsync.example.com]
session_ttl: 8h
""",
    ),
    web_models.WebUser: Example(
        "alice",
        f'role: viewer\npassword_hash: "{_HASH}"\n',
    ),
    reconcile_models.Side: Example(
        "source", "connection: shop_api\nresource: Customers\ngroup: customer_no\nsum: balance\n"
    ),
    reconcile_models.Tolerance: Example("tolerance", 'relative: "0.001"\n'),
    reconcile_models.ReconcileSchedule: Example("schedule", "every: 6h\n"),
    models.CronSlots: Example("deletes_every", 'cron: "0 3 * * *"\ntimezone: Europe/Berlin\n'),
    models.ChildSync: Example(
        "children",
        """\
lines:
  from: {connection: erp, table: order_lines}
  to: {connection: portal, table: order_lines}
  parent: {from: order_id, to: order_id}
  key: {from: [order_id, line_no], to: [order_id, line_no]}
  fields:
    qty: quantity
""",
        many=True,
    ),
    models.ParentLink: Example("parent", "from: order_id\nto: order_id\n"),
    models.RetentionConfig: Example("retention", "default: 90d\nruns: 30d\nattempts: 7d\nrollups: 730d\n"),
    models.MonitorsConfig: Example(
        "monitors",
        """\
no_success_after: 3
rejection_rate: 0.02
lag: 30m
disabled: [clock_skew]
severity: {lag: critical}
""",
    ),
    alert_models.AlertsConfig: Example(
        "alerts",
        """\
channels:
  ops:
    email:
      host: smtp.example.com
      username: mapsync
      password: "${SMTP_PASSWORD}"
      from: mapsync@example.com
      to: [ops@example.com]
  chat: {webhook: {url: "https://hooks.slack.com/services/${SLACK_HOOK}"}}
routes:
  - match: {failure_class: [source, destination]}
    to: [ops]
    continue: true
  - to: [chat]
remind_every: 4h
""",
    ),
    alert_models.Channel: Example("channels", "log: {level: warning}\n"),
    alert_models.EmailChannel: Example(
        "email",
        """\
host: smtp.example.com
port: 587
tls: starttls
username: mapsync
password: "${SMTP_PASSWORD}"
from: mapsync@example.com
to: [ops@example.com, erp-owner@example.com]
""",
    ),
    alert_models.WebhookChannel: Example(
        "webhook",
        'url: "https://hooks.slack.com/services/${SLACK_HOOK}"\nformat: slack\nsecret: "${ALERT_HMAC}"\n',
    ),
    alert_models.LogChannel: Example("log", "level: error\n"),
    alert_models.Route: Example("routes", "match: {sync: [orders], severity: [critical]}\nto: [ops]\n"),
    alert_models.Match: Example("match", "failure_class: [source, destination]\nseverity: [critical]\n"),
}
# REST and CIMcloud connections: their examples live beside their models
EXAMPLES.update({m: Example(*e) for m, e in connection_examples.EXAMPLES.items()})
