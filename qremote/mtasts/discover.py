"""Which MTA-STS policy applies to a delivery (RFC 8461 sections 3 and 5.1).

1. ``_mta-sts.<domain>`` TXT: the policy id (exactly one ``v=STSv1`` record).
2. A remembered policy with that id, fetched less than a day ago (or less than half its
   max_age), is used as it is.
3. Otherwise the policy is fetched again (one fetch per domain at a time). A failed fetch
   is remembered (memory and disk, with or without a policy from before) and not tried
   again for :data:`~qremote.limits.STS_RETRY_AFTER` seconds; meanwhile the remembered
   policy applies, or none, and the failure is reported for each session as it was.
4. Whatever fails (the TXT lookup, the fetch, the policy's syntax), a remembered policy
   that has not expired is used; only without one is there no policy, and the failure is
   reported (RFC 8460's ``sts-policy-fetch-error`` or ``sts-policy-invalid``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

from qremote.mtasts.fetch import FetchError, fetch_policy
from qremote.mtasts.policy import StsError, StsPolicy, parse_policy, parse_txt
from qremote.mtasts.store import Entry, PolicyStore
from qremote.routing.dnserrors import DnsHard, DnsSoft

if TYPE_CHECKING:
    import dns.asyncresolver

REFRESH = 86400
"""Seconds after which a remembered policy is fetched again even if its id is unchanged
(RFC 8461 section 5.1 suggests refreshing periodically, e.g. daily)."""


@dataclass(frozen=True)
class Found:
    policy: StsPolicy | None
    """The policy to apply (enforce or testing); None: none applies."""
    policy_id: str = ""
    problem: str | None = None
    """Why no (fresh) policy could be had: ``<RFC 8460 result type>: <reason>``."""


async def find(
    domain: str,
    resolver: dns.asyncresolver.Resolver,
    store: PolicyStore,
    now: float,
) -> Found:
    key = domain.lower().rstrip(".")
    running = store.inflight.get(key)
    if running is not None:
        result = await asyncio.shield(running)
        assert isinstance(result, Found)
        return result
    task: asyncio.Task[object] = asyncio.ensure_future(_find(key, resolver, store, now))
    store.inflight[key] = task
    try:
        result = await asyncio.shield(task)
    finally:
        if task.done():
            store.inflight.pop(key, None)
        else:
            task.add_done_callback(lambda _t: store.inflight.pop(key, None))
    assert isinstance(result, Found)
    return result


def _applies(entry: Entry | None, problem: str | None = None) -> Found:
    if entry is None or entry.policy.mode == "none":
        return Found(None, entry.policy_id if entry else "", problem)
    return Found(entry.policy, entry.policy_id, problem)


async def _find(
    domain: str, resolver: dns.asyncresolver.Resolver, store: PolicyStore, now: float
) -> Found:
    # start-up: dnspython only when a name is looked up
    from qremote.routing.dnsquery import query
    from qremote.routing.resolve import first_address

    cached = store.get(domain, now)
    try:
        answer = await query(resolver, f"_mta-sts.{domain}", "TXT")
        policy_id = parse_txt([b"".join(r.strings) for r in answer])
    except (DnsHard, DnsSoft, StsError):
        # No record now (or no answer): what was remembered holds until it expires.
        return _applies(cached)
    fresh = cached is not None and cached.policy_id == policy_id
    if (
        fresh
        and cached is not None
        and now - cached.fetched < min(REFRESH, cached.policy.max_age / 2)
    ):
        return _applies(cached)
    failed = store.failure(domain, now)
    if failed is not None:
        return _applies(cached, None if cached is not None else failed)
    try:
        text = await fetch_policy(domain, first_address(resolver))
        policy = parse_policy(text)
    except (FetchError, StsError) as e:
        store.fetch_failed(domain, now, str(e))
        return _applies(cached, str(e))
    entry = Entry(policy_id, policy, now)
    store.put(domain, entry)
    store.fetched(domain)
    return _applies(entry)

