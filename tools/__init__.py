"""Maintenance scripts (`python tools/<name>.py`); a package so the tests can import them."""
