"""SSL contexts for STARTTLS, built from control files and cached per process."""

from __future__ import annotations

import os
import ssl
from functools import lru_cache

from qremote.control import ControlError
from qremote.tls.policy import Mode, Policy, exists


@lru_cache(maxsize=256)
def _context(control_path: str, mode: Mode, ca_file: str | None, mtime: float) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if mode is Mode.REQUIRED:
        try:
            ctx.load_verify_locations(cafile=ca_file)
        except (OSError, ssl.SSLError) as e:
            raise ControlError(f"{_rel(ca_file)}: cannot load CA file: {e}") from None
        ctx.check_hostname = True
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    cert = os.path.join(control_path, "clientcert.pem")
    if exists(cert):
        try:
            ctx.load_cert_chain(cert)
        except (OSError, ssl.SSLError) as e:
            raise ControlError(f"control/clientcert.pem: cannot load: {e}") from None
    ciphers_file = os.path.join(control_path, "tlsclientciphers")
    if exists(ciphers_file):
        try:
            with open(ciphers_file) as f:
                ciphers = f.readline().strip()
            if ciphers:
                ctx.set_ciphers(ciphers)
        except (OSError, ssl.SSLError) as e:
            raise ControlError(f"control/tlsclientciphers: {e}") from None
    return ctx


def _rel(path: str | None) -> str:
    if not path:
        return "?"
    parts = path.split(os.sep)
    return os.sep.join(parts[-3:])


def context_for(control_path: str, policy: Policy) -> ssl.SSLContext:
    mtime = 0.0
    if policy.ca_file:
        try:
            mtime = os.stat(policy.ca_file).st_mtime
        except OSError:
            mtime = -1.0
    return _context(control_path, policy.mode, policy.ca_file, mtime)
