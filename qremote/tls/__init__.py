"""STARTTLS policy per MX host, as qmail-tls reads its control files."""
