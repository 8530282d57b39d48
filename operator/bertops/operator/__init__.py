"""bertops.operator."""
