"""CIMcloud: the connector (on the generic REST client) and a local sandbox that stands in for it."""
