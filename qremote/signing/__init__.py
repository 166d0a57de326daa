"""Outbound signing: DKIM (RFC 6376, RFC 8463) and DomainKeys (RFC 4870)."""
