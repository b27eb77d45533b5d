"""schoolgate: DNS filtering and activity monitoring for school networks."""

__version__ = "0.1.0"
