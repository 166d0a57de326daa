"""Every bound qremote puts on what comes from the network or from a sender, with its reason.

Everything a peer sends (SMTP replies, DNS answers) and everything a sender writes
(headers, bodies, signatures) is hostile until proven otherwise. Each value here bounds
memory or time against such input; ``docs/BOUNDS.md`` lists them for administrators, and
``tests/test_bounds.py`` holds one test per bound. Time bounds that qmail configures
(``timeoutconnect``, ``timeoutremote``) stay in control files; these are the rest.
"""

from __future__ import annotations

# -- SMTP replies (qremote/smtp/replies.py) ------------------------------------------------

REPLY_TEXT_KEEP = 5000
"""Bytes of a reply's text kept for the report: qmail's HUGESMTPTEXT, so reports read as
qmail's. The rest of a long reply is counted, not kept."""

REPLY_LINE_KEEP = 1000
"""Bytes kept of each reply line for reading EHLO keywords and SASL challenges: RFC 5321
allows 512 for a whole reply line, so nothing real is cut. Real 334 challenges (a SCRAM
nonce and salt, a CRAM-MD5 timestamp) are under 200; a longer one is cut and the exchange
fails as a temporary error."""

REPLY_MAX_BYTES = 64 * 1024
"""A reply longer than this ends the conversation as a temporary failure. The longest
real replies (EHLO lists, multi-line 554 explanations) are a few KB; a server sending
more is broken or hostile, and a flood must not make us read it for ``timeoutremote``."""

REPLY_MAX_LINES = 1000
"""Lines in one reply, for the same reason: EHLO advertises a dozen or so. Counting lines
as well as bytes stops a flood of empty continuation lines (each kept line costs Python
an object)."""

READ_CHUNK = 64 * 1024
"""Bytes read from an SMTP socket at once; asyncio's reader buffers at most twice this
before it stops reading, so a server that talks while we send the body costs at most
that much memory."""

CLOSE_WAIT = 1.0
"""Seconds to wait for a connection to close cleanly once the outcome is known (TLS
close_notify, unsent QUIT) before dropping it: the report must not wait on the peer."""

# -- DNS (qremote/routing/resolve.py) ------------------------------------------------------

DNS_TRY = 5.0
"""Seconds one DNS query may take before the next server (or try): the resolver library
default qmail's own lookups use. Never more than ``timeoutconnect``."""

DNS_TOTAL = 20.0
"""Seconds all DNS lookups of one step (the MX query, or the address queries) may take
together. Never more than ``timeoutremote``."""

DNS_MAX_MX_HOSTS = 50
"""MX hosts of one domain whose addresses are looked up (best preference first). A DNS
message holds up to 65535 bytes (the protocol's own bound; queries go without EDNS, so a
UDP answer is at most 512 and a longer one comes over TCP): thousands of MX records, each
a pair of look-ups at once. Real domains publish a handful."""

DNS_MAX_TARGETS = 100
"""Addresses tried for one delivery, in qmail's order: each may cost ``timeoutconnect``,
and a name with a thousand A records must not hold a delivery for days."""

DNS_MAX_TLSA = 20
"""TLSA records considered for one MX host: real hosts publish one to four (a current and
a next key, perhaps two usages); more only cost time spent hashing certificates."""

# -- Incoming mail verification (qremote/verify/) ------------------------------------------

VERIFY_MAX_DKIM_SIGNATURES = 5
"""DKIM-Signature fields evaluated per message (RFC 6376 section 6.1 lets a verifier
limit them). Anyone can add signatures whose body hash is right and whose signature is
not, and each costs a pass over the body: the rest are reported ``neutral``, not
evaluated. Real mail carries one to three (author, list, forwarder)."""

VERIFY_MAX_DOMAINKEYS_SIGNATURES = 3
"""DomainKey-Signature fields evaluated per message, for the same reason; a DomainKeys
signer adds one."""

# -- MTA-STS and TLS reports (qremote/mtasts/, qremote/tlsrpt/) ----------------------------

STS_POLICY_MAX = 64 * 1024
"""Bytes of an MTA-STS policy file: RFC 8461 section 3.3 suggests 64 KiB; real policies
are a few hundred bytes. A longer answer is a fetch error and is not read further."""

STS_HEADER_MAX = 16 * 1024
"""Bytes of an HTTP response's status line and header fields: real servers send a few
hundred; more is refused (h11's incomplete-event bound, checked between reads of 4096
bytes, so a header block may pass it by at most one read)."""

STS_FETCH_TIMEOUT = 20.0
"""Seconds for one policy fetch (connect, TLS, answer), in all: the fetch holds up the
deliveries to that domain, at most once per domain at a time."""

STS_RETRY_AFTER = 300
"""Seconds before a failed policy fetch is tried again for the same domain: a policy
server that is down must not add its time-out to every delivery. Remembered in memory
and on disk, with or without an earlier policy."""

TLSRPT_MAX_RUA = 5
"""``rua`` URIs a report is sent to, per policy domain and day; the rest are skipped with
a line naming the domain. The receiving domain writes the record, so without a bound one
TXT record could make our daily job mail (signed by us) or POST to a thousand third
parties. Real records list one or two."""

TLSRPT_RUA_MAX_BYTES = 2048
"""Bytes of one ``rua`` URI: an address is at most 254 bytes and real report URLs are
well under 200; a longer one is skipped."""

TLSRPT_JOB_TIME = 1800.0
"""Seconds one run of ``qremote tlsrpt send`` may take in all. Each upload is bounded by
:data:`STS_FETCH_TIMEOUT` and each hand-over to qmail-inject by
:data:`TLSRPT_INJECT_TIMEOUT`; with many domains, stalling endpoints could still hold the
daily job for hours. What is not reached in time is left for the next run."""

TLSRPT_INJECT_TIMEOUT = 60.0
"""Seconds qmail-inject may take to queue one report (it only writes the queue)."""

# -- SMTP AUTH (qremote/relay/) -------------------------------------------------------------

AUTH_CREDENTIAL_MAX = 1024
"""Bytes of a user name, and of a password, for SMTP AUTH. RFC 4954 bounds an AUTH line at
12288 bytes after base64; 1 KiB each keeps every exchange far below that, and no real
account needs more. A longer one is a configuration error (``qremote check`` names it)."""

SCRAM_MAX_ITERATIONS = 1_000_000
"""The largest SCRAM iteration count we compute. The relay chooses it; servers use 4096
(Dovecot, Cyrus) to a few hundred thousand. A hostile relay must not make us spend
minutes of CPU per delivery: a million PBKDF2-SHA-256 rounds take well under a second."""

# -- /metrics (qremote/metrics/http.py) -------------------------------------------------------

METRICS_REQUEST_BYTES = 8192
"""Bytes of an HTTP request head to /metrics. Prometheus sends a few hundred; anything
longer is not a scraper, and the connection is closed unanswered."""

METRICS_REQUEST_SECONDS = 10.0
"""Seconds one scrape connection may take from accept to the answer written: Prometheus's
own default scrape timeout, so a slow or silent client holds a place no longer."""

METRICS_CLIENTS = 16
"""Scrape connections answered at once; more wait in the backlog. A few Prometheus
servers scrape each target; sixteen leaves room and bounds what a flood can take."""

VERIFY_MAX_ARC_SETS = 50
"""ARC sets considered per message: RFC 8617 section 4.2.1 numbers them 1 to 50, so a
chain with more, or an instance number past 50, fails without any of it being checked.
Each set costs a DNS look-up and a signature check (within ``dkimverifytimeout``)."""

ARC_RESULTS_BYTES = 8192
"""Our Authentication-Results field copied into an ARC-Authentication-Results when a
forwarded message is sealed. The inbound filter writes a few hundred bytes (comments cut
at 200 characters, a bounded number of results); a longer field of our authserv-id did
not come from it, and the message is sent unsealed (with a note) rather than carry it."""

SHAPING_FILE_BYTES = 1 << 20
"""control/shaping.toml read at most: KumoMTA's community file is about 30 KB; a file
past a megabyte is not a rules file, and no shaping applies (check says why)."""

SHAPING_RULES = 200
"""Automation rules applied from control/shaping.toml: every failed delivery is matched
against its path's rules, so their number bounds that work; the community file has a few
dozen."""

SHAPING_REGEX_CHARS = 1000
"""Length of one automation regex: Python's re has no time bound, so a pattern is kept
to what a reply phrase needs, and it runs only over a failed delivery's report (at most
a few KB: qmail's own bounds on what the server says)."""

SHAPING_MATCH_CHARS = 2048
"""What of a failed delivery's words the automation rules are matched against: the
first 2 KB. Python's re has no time bound, and a server's reply may be 64 KB
(REPLY_MAX_BYTES): a pattern whose cost grows with the square of the text (``.*a.*b``,
``\\s*x`` tried at every place) costs a thousand times less over 2 KB than over 64 KB.
The phrase a provider writes sits in its reply's first lines."""

SHAPING_THRESHOLD_MAX = 1000
"""Matches an automation trigger may count (``Threshold = "N/period"``): each is a time
kept in the path's state file until the rule acts."""

SHAPING_STATE_BYTES = 64 * 1024
"""A path's state.json read at most; larger, it is damaged, and reads as nothing set."""
