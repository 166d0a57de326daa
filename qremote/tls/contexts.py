"""SSL contexts for STARTTLS, built from control files and cached per process."""

from __future__ import annotations

import os
import ssl
from functools import lru_cache

from qremote.control import ControlError, shown
from qremote.tls.policy import Mode, Policy

SESSIONS_KEPT = 1000


def exists(path: str) -> bool:
    """Like os.path.exists, but a file we may not look at is an error, not an absence: an
    unreadable client certificate must not quietly turn into none."""
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as e:
        raise ControlError(f"{shown(path)}: {e.strerror}") from None
    return True


class ResumingContext(ssl.SSLContext):
    """A client context that offers each server the last session it gave us, so a
    long-lived qremoted resumes TLS instead of repeating the full handshake.

    asyncio's STARTTLS takes no session argument; it does call :meth:`wrap_bio`, which is
    where the session is put in. Sessions are keyed by server name; a session the server
    no longer knows just means a full handshake.
    """

    def wrap_bio(self, incoming, outgoing, server_side=False, server_hostname=None, session=None):
        if session is None and not server_side and server_hostname:
            session = self._sessions().get(server_hostname)
        return super().wrap_bio(incoming, outgoing, server_side, server_hostname, session)

    def _sessions(self) -> dict:
        if "sessions" not in self.__dict__:
            self.__dict__["sessions"] = {}
        return self.__dict__["sessions"]

    def remember(self, server_hostname: str, ssl_object) -> None:
        """Keep the connection's session (with its ticket) for the next connection."""
        try:
            session = ssl_object.session
        except (AttributeError, ValueError):
            return
        if session is None or not session.has_ticket:
            return
        sessions = self._sessions()
        sessions.pop(server_hostname, None)
        sessions[server_hostname] = session
        if len(sessions) > SESSIONS_KEPT:
            del sessions[next(iter(sessions))]


@lru_cache(maxsize=256)
def _context(
    control_path: str,
    mode: Mode,
    ca_file: str | None,
    system: bool,
    files: tuple,
    dane: str | None = None,
) -> ssl.SSLContext:
    """``files`` only keys the cache: the state of every file the context is built from.
    ``dane`` too: a DANE host's TLSA digest, so TLS sessions to resume are kept apart by
    the records they were authenticated against (the match itself is done after the
    handshake, on the certificates the server sent)."""
    ctx = ResumingContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if mode is Mode.REQUIRED and ca_file is not None:
        try:
            ctx.load_verify_locations(cafile=ca_file)
        except (OSError, ssl.SSLError) as e:
            raise ControlError(f"{_rel(ca_file)}: cannot load CA file: {e}") from None
        ctx.check_hostname = True
        ctx.verify_mode = ssl.CERT_REQUIRED
    elif system:
        # OpenSSL's default paths: SSL_CERT_FILE and SSL_CERT_DIR when set, else the
        # system's store (ca-certificates on Debian). No list of our own.
        ctx.set_default_verify_paths()
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
    return shown(path) if path else "?"


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
    dane = policy.dane.digest() if policy.dane is not None else None
    return _context(control_path, policy.mode, policy.ca_file, policy.system, files, dane)


def forget() -> None:
    """Build every context afresh (qremoted's SIGHUP)."""
    _context.cache_clear()
