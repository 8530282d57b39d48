"""Tests of the compress step (bertops.trainer.compress)."""
