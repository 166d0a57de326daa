"""DANE (RFC 7672): authenticated TLS to MX hosts from DNSSEC-signed TLSA records."""
