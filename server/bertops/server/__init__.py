"""bertops.server."""
