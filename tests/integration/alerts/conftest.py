"""The alert receivers (tests/alert_world.py) as fixtures of these tests."""

from tests.alert_world import smtp_server, tls_ca, webhook_receiver  # noqa: F401  (fixtures)
