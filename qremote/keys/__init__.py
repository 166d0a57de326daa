"""Key management: making keys, their DNS records, listing them (rotation builds on this)."""
