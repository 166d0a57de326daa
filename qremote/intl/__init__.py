"""Internationalized mail: IDN domains (IDNA2008 / UTS #46) and SMTPUTF8 (RFC 6531)."""
