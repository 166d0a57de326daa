"""Expected report fragments shared by tests."""

UNSIGNED = b"Not signed: no key for example.org in control/domainkeys.\n"
"""The line every host report carries when the sender's domain has no key."""
