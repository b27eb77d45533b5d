"""Bundled configuration and lists: what a fresh install filters with."""
