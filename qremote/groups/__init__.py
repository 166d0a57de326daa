"""Concurrency caps per MX group, across processes (flock) and hosts (Redis)."""
