"""SSL contexts for STARTTLS, built from control files and cached per process."""

from __future__ import annotations

import os
import ssl
from functools import lru_cache

from qremote.control import ControlError
from qremote.tls.policy import Mode, Policy, exists


@lru_cache(maxsize=256)
def _context(control_path: str, mode: Mode, ca_file: str | None, files: tuple) -> ssl.SSLContext:
    """``files`` only keys the cache: the state of every file the context is built from."""
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


def _state(path: str | None) -> tuple:
    if not path:
        return ()
    try:
        st = os.stat(path)
    except OSError as e:
        return (e.errno,)
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def context_for(control_path: str, policy: Policy) -> ssl.SSLContext:
    """The context for ``policy``, built again when the CA file, ``clientcert.pem`` or
    ``tlsclientciphers`` changed: qremoted lives long enough to see them change."""
    files = (
        _state(policy.ca_file),
        _state(os.path.join(control_path, "clientcert.pem")),
        _state(os.path.join(control_path, "tlsclientciphers")),
    )
    return _context(control_path, policy.mode, policy.ca_file, files)


def forget() -> None:
    """Build every context afresh (qremoted's SIGHUP)."""
    _context.cache_clear()
