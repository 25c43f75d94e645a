"""Fetching release data from HTTP mirrors and BEP 19 web seeds."""
