"""Annotated TRL."""
