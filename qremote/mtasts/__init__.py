"""MTA-STS (RFC 8461): policies fetched over HTTPS that make TLS to a domain's MX hosts
required and verified, and limit which MX hosts may be used."""
