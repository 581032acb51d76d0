"""CIMcloud: the connector, on the generic REST client (its local sandbox is mapsync.testing.sandbox)."""
