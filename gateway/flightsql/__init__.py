"""The Flight SQL front door: the Flight server, the SQL service and the wire protocol."""
