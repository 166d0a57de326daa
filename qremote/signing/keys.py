"""The key store: ``control/domainkeys/<domain>/<selector>.pem`` and the active selector.

In a domain's folder, ``default`` names the active RSA (or Ed25519) key: either a symlink
to ``<selector>.pem`` (the selector is the link target's name) or a plain key file whose
selector is ``default``, as the old shell wrappers had it. ``ed25519`` does the same for a
second, Ed25519 key (RFC 8463) that adds a second DKIM signature. ``domainkeys/default``
(a key file or symlink, outside any domain folder) is the site-wide fallback.

A key is loaded once per process and kept while its file is unchanged. A key that
exists but cannot be used (unreadable, readable by group or others, not a private key
we can sign with) raises :class:`KeyProblem`, which qmail-remote reports as ``Z``: mail
is never sent unsigned because a key is broken.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa


class KeyProblem(Exception):
    """A key file exists but cannot be used; the message names it."""


@dataclass(frozen=True)
class SigningKey:
    domain: str
    """The folder's domain (empty for the site-wide fallback key)."""
    selector: str
    path: str
    key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    is_rsa: bool = field(init=False, repr=False, compare=False)
    """Decided once: an isinstance check against cryptography's abstract key classes
    costs more than it looks, and every message asks."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "is_rsa", isinstance(self.key, rsa.RSAPrivateKey))

    @property
    def algorithm(self) -> str:
        return "rsa-sha256" if self.is_rsa else "ed25519-sha256"


_cache: dict[str, tuple[tuple, SigningKey]] = {}
"""The key loaded from each entry, with what identified its file then (inode, mtime, size,
mode, selector). One per entry: a rotated or rewritten key replaces the old one, so a
retired private key does not stay in qremoted's memory, and rewriting a file over and
over does not grow it."""

MAX_LISTED = 10000
"""Files :func:`files_in` lists at most: far more than any site's keys."""


def files_in(folder: str) -> Iterator[str]:
    """Every file under a key store (``control/domainkeys``), at most :data:`MAX_LISTED`:
    what the process parsing incoming mail must not be able to read."""
    listed = 0
    for here, _dirs, files in os.walk(folder):
        for name in files:
            listed += 1
            if listed > MAX_LISTED:
                return
            yield os.path.join(here, name)


def load(path: str, domain: str, link: str) -> SigningKey | None:
    """The key behind ``path``, None when there is no such file; KeyProblem if unusable.

    ``path`` is a ``default``/``ed25519`` entry: a symlink to ``<selector>.pem`` or a plain
    key file whose selector is the entry's own name.
    """
    try:
        lst = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        _cache.pop(path, None)  # a key withdrawn leaves memory too
        return None  # no such entry, or no such domain folder
    except OSError as e:
        # A key store we may not look into is a broken key, not a missing one:
        # never send unsigned because of it.
        raise KeyProblem(f"{_show(path)}: {e.strerror}") from None
    selector = link
    st = lst
    if stat.S_ISLNK(lst.st_mode):
        target = os.path.basename(os.readlink(path))
        selector = target[:-4] if target.endswith(".pem") else target
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise KeyProblem(f"{_show(path)} points to a missing file") from None
        except OSError as e:
            raise KeyProblem(f"{_show(os.path.realpath(path))}: {e.strerror}") from None
    ident = (path, st.st_ino, st.st_mtime_ns, st.st_size, st.st_mode, selector)
    cached = _cache.get(path)
    if cached is not None and cached[0] == ident:
        return cached[1]
    _cache.pop(path, None)  # a changed file: the old key goes, whether or not the new loads
    found = _load_file(path, domain, selector, st)
    _cache[path] = (ident, found)
    return found


def _load_file(path: str, domain: str, selector: str, st: os.stat_result) -> SigningKey:
    real = os.path.realpath(path)
    if not stat.S_ISREG(st.st_mode):
        raise KeyProblem(f"{_show(real)} is not a regular file")
    if st.st_mode & 0o077:
        raise KeyProblem(
            f"{_show(real)} is readable by group or others (mode {stat.S_IMODE(st.st_mode):04o});"
            " chmod 600 it"
        )
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise KeyProblem(f"{_show(real)}: {e.strerror}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise KeyProblem(f"{_show(real)} is not a usable PEM private key ({e})") from None
    except Exception as e:  # noqa: BLE001 - unsupported key types raise various errors
        raise KeyProblem(f"{_show(real)} cannot be loaded: {e}") from None
    if not isinstance(key, (rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey)):
        raise KeyProblem(f"{_show(real)} is neither an RSA nor an Ed25519 key")
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size < 1024:
        raise KeyProblem(f"{_show(real)} is a {key.key_size}-bit RSA key; 1024 is the minimum")
    if not selector or "/" in selector or selector.startswith("."):
        raise KeyProblem(f"{_show(real)}: {selector!r} is not a usable selector name")
    return SigningKey(domain, selector, path, key)


def _show(path: str) -> str:
    """A path as the administrator knows it: from ``control/`` on when possible."""
    marker = os.sep + "control" + os.sep
    i = path.rfind(marker)
    return path[i + 1 :] if i >= 0 else path


@dataclass(frozen=True)
class KeyStore:
    root: str
    """``control/domainkeys``."""

    def domain_keys(self, domain: str) -> list[SigningKey]:
        """The active keys of one domain folder (``default`` first, then ``ed25519``)."""
        domain = domain.lower().rstrip(".")
        if not domain or "/" in domain or domain.startswith("."):
            return []
        # No stat of the folder itself: a missing folder (or a file in its place)
        # shows as a missing entry, and this runs for every message.
        for name in _forms(domain):
            folder = os.path.join(self.root, name)
            found = []
            for link in ("default", "ed25519"):
                key = load(os.path.join(folder, link), domain, link)
                if key is not None:
                    found.append(key)
            if found:
                return found
        return []

    def fallback(self) -> SigningKey | None:
        """The site-wide key (``domainkeys/default`` as a file), if there is one."""
        path = os.path.join(self.root, "default")
        try:
            if stat.S_ISDIR(os.stat(path).st_mode):
                return None  # a domain folder named "default", not the site-wide key
        except FileNotFoundError:
            pass
        except OSError as e:
            raise KeyProblem(f"{_show(path)}: {e.strerror}") from None
        return load(path, "", "default")


def _forms(domain: str) -> list[str]:
    """The folder names a domain's keys may be under: as asked (the A-label form, for an
    IDN), then its U-label form, which an administrator may have used instead."""
    if "xn--" not in domain:
        return [domain]
    try:
        import idna

        unicode = idna.decode(domain)
    except (idna.IDNAError, UnicodeError):
        return [domain]
    return [domain] if unicode == domain else [domain, unicode]
