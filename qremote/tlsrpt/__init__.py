"""SMTP TLS reporting (RFC 8460): what qremote records of each session held to a DANE or
MTA-STS policy, and the daily job that reports it to each domain."""
