"""Alerts: who is told of an incident, and how (the sheet's `alerts:`). `routing` picks the
channels of a finding; the rest (rendering, channels, the sender) lives beside it."""
