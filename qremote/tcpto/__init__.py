"""qmail's do-not-try list for hosts whose connects time out (queue/lock/tcpto)."""
