"""bertops.trainer."""
