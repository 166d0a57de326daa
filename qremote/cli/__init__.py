"""Command-line entry points: ``qmail-remote`` and ``qremote``."""
