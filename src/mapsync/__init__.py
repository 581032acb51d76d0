"""mapsync: keep two business systems in step from one YAML mapping sheet."""

__version__ = "0.1.0"
