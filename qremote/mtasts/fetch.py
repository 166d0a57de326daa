"""Fetching an MTA-STS policy over HTTPS (RFC 8461 section 3.3) with :mod:`qremote.https`.

Only status 200 with media type ``text/plain`` counts, read up to
:data:`~qremote.limits.STS_POLICY_MAX` bytes, within
:data:`~qremote.limits.STS_FETCH_TIMEOUT` seconds. Failures say why, prefixed with the
RFC 8460 result type they are reported as.
"""

from __future__ import annotations

from qremote.https import HttpsError, Resolve, request


class FetchError(Exception):
    """The policy could not be had; the text starts with its RFC 8460 result type."""


async def fetch_policy(domain: str, resolve: Resolve) -> str:
    """The policy text of ``domain``; FetchError says why there is none."""
    url = f"https://mta-sts.{domain}/.well-known/mta-sts.txt"
    try:
        status, media, data = await request("GET", url, resolve)
    except HttpsError as e:
        text = str(e)
        kind = "sts-webpki-invalid" if text.startswith("certificate") else "sts-policy-fetch-error"
        raise FetchError(f"{kind}: {text}") from None
    if 300 <= status < 400:
        raise FetchError(f"sts-policy-fetch-error: HTTP {status}, a redirect (not followed)")
    if status != 200:
        raise FetchError(f"sts-policy-fetch-error: HTTP {status}")
    if media != "text/plain":
        raise FetchError(f"sts-policy-fetch-error: media type {media[:60]!r}, not text/plain")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise FetchError("sts-policy-invalid: the policy is not UTF-8") from None
