"""Relaying through a smarthost: SMTP AUTH credentials, their TLS, and the SASL exchanges."""
