"""qremote: a drop-in replacement for qmail's qmail-remote.

The package is organised by capability: ``smtp/`` holds the SMTP conversation as a
sans-I/O state machine plus its asyncio driver, ``routing/`` decides where a message
goes, ``tcpto/`` keeps qmail's do-not-try list, ``cli/`` holds the commands.
"""

__version__ = "0.1.0"
