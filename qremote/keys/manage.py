"""``qremote keys new|dns|list``: make keys in the key store and show their DNS records.

New keys are written atomically (write, fsync, rename), mode 0600, owned by the
qmail-remote user when run as root. The first key of a domain becomes its active key
(``default``, or ``ed25519`` for an Ed25519 key); later keys wait for rotation.
"""

from __future__ import annotations

import datetime
import json
import os
import pwd
import time
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from qremote.atomic import write_file
from qremote.keys import records

MIN_BITS = 1024
DEFAULT_BITS = 2048


class KeyCommandError(Exception):
    """The key cannot be made as asked; the message says why."""


def default_selector(kind: str, folder: str, today: datetime.date) -> str:
    base = f"q{today:%Y%m%d}" + ("e" if kind == "ed25519" else "")
    name, n = base, 0
    while os.path.exists(os.path.join(folder, f"{name}.pem")):
        n += 1
        name = f"{base}{chr(ord('a') + n - 1)}"
    return name


def _check_domain(domain: str) -> str:
    domain = domain.lower().rstrip(".")
    if not domain or "/" in domain or domain.startswith(".") or " " in domain:
        raise KeyCommandError(f"{domain!r} is not a domain name")
    return domain


def new_key(
    control: str,
    domain: str,
    selector: str | None = None,
    kind: str = "rsa",
    bits: int = DEFAULT_BITS,
    force: bool = False,
    user: str = "qmailr",
    today: datetime.date | None = None,
    inactive: bool = False,
) -> tuple[str, str]:
    """Make a key; (path of the key, zone-file text of its record)."""
    domain = _check_domain(domain)
    key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    if kind == "rsa":
        if bits < MIN_BITS or (bits < DEFAULT_BITS and not force):
            raise KeyCommandError(
                f"{bits}-bit RSA is too weak (RFC 8301); use 2048 or more"
                + (" (1024 only with --force)" if bits >= MIN_BITS else "")
            )
        key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    elif kind == "ed25519":
        key = ed25519.Ed25519PrivateKey.generate()
    else:
        raise KeyCommandError(f"--type {kind!r}: rsa or ed25519")
    folder = os.path.join(control, "domainkeys", domain)
    os.makedirs(folder, mode=0o700, exist_ok=True)
    selector = selector or default_selector(kind, folder, today or datetime.date.today())
    if not selector.replace("-", "").replace("_", "").isalnum():
        raise KeyCommandError(f"selector {selector!r}: letters, digits, '-' and '_' only")
    path = os.path.join(folder, f"{selector}.pem")
    if os.path.exists(path):
        raise KeyCommandError(f"{path} exists already")
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    try:
        write_file(path, pem, 0o600, replace=False)
    except FileExistsError:
        raise KeyCommandError(f"{path} exists already") from None
    if os.geteuid() == 0:
        try:
            pw = pwd.getpwnam(user)
            for p in (folder, path):
                os.chown(p, pw.pw_uid, pw.pw_gid)
        except KeyError:
            pass
    link = os.path.join(folder, "ed25519" if kind == "ed25519" else "default")
    if not inactive and not os.path.lexists(link):
        os.symlink(f"{selector}.pem", link)
    return path, records.zone_lines(domain, selector, key)


def is_active(path: str) -> bool:
    """True when the key file is the one its domain's ``default`` or ``ed25519`` link
    names: the key that signs."""
    folder, name = os.path.split(path)
    for link in ("default", "ed25519"):
        try:
            if os.readlink(os.path.join(folder, link)) == name:
                return True
        except OSError:
            continue
    return False


def activate(control: str, domain: str, selector: str) -> str:
    """Point ``default`` (or ``ed25519``) at a selector, atomically: a new symlink renamed
    over the old one, so a delivery never finds no active key."""
    folder = os.path.join(control, "domainkeys", _check_domain(domain))
    path = os.path.join(folder, f"{selector}.pem")
    try:
        with open(path, "rb") as f:
            key = serialization.load_pem_private_key(f.read(), password=None)
    except (OSError, ValueError, TypeError) as e:
        raise KeyCommandError(f"{path}: not a usable key ({e})") from None
    name = "ed25519" if isinstance(key, ed25519.Ed25519PrivateKey) else "default"
    link = os.path.join(folder, name)
    if os.path.exists(link) and not os.path.islink(link):
        raise KeyCommandError(f"{link} is a plain key file; move it to <selector>.pem first")
    tmp = os.path.join(folder, f".{name}.{os.getpid()}")
    os.symlink(f"{selector}.pem", tmp)
    os.rename(tmp, link)
    return f"{domain}: {name} is now {selector}"


@dataclass(frozen=True)
class KeyInfo:
    domain: str
    selector: str
    state: str
    algorithm: str
    bits: int
    age_days: int
    key: object


def _info(domain: str, selector: str, state: str, path: str) -> KeyInfo | None:
    try:
        with open(path, "rb") as f:
            key = serialization.load_pem_private_key(f.read(), password=None)
        age = int((time.time() - os.stat(path).st_mtime) // 86400)
    except (OSError, ValueError, TypeError):
        return None  # qremote check names unusable keys
    kind = "ed25519" if isinstance(key, ed25519.Ed25519PrivateKey) else "rsa"
    return KeyInfo(domain, selector, state, kind, records.key_size(key), age, key)


def rotation_states(folder: str) -> dict[str, str]:
    """pending, published, retiring, retired: what the rotation job last wrote."""
    try:
        with open(os.path.join(folder, "rotation.json")) as f:
            return {k: v["state"] for k, v in json.load(f)["selectors"].items()}
    except (OSError, ValueError, KeyError):
        return {}


def domain_keys(control: str, domain: str) -> list[KeyInfo]:
    """Every key file of a domain: ``active`` when ``default``/``ed25519`` selects it,
    else the rotation job's state for it (pending, published, retiring, retired)."""
    folder = os.path.join(control, "domainkeys", _check_domain(domain))
    if not os.path.isdir(folder):
        return []
    active = {
        os.path.basename(os.readlink(os.path.join(folder, link)))
        for link in ("default", "ed25519")
        if os.path.islink(os.path.join(folder, link))
    }
    rotation = rotation_states(folder)
    found = [
        _info(
            domain,
            name[:-4],
            "active" if name in active else rotation.get(name[:-4], "inactive"),
            os.path.join(folder, name),
        )
        for name in sorted(os.listdir(folder))
        if name.endswith(".pem") and not os.path.islink(os.path.join(folder, name))
    ]
    plain = os.path.join(folder, "default")
    if os.path.isfile(plain) and not os.path.islink(plain):
        found.append(_info(domain, "default", "active", plain))
    return [k for k in found if k is not None]


def dns_text(control: str, domain: str) -> str:
    keys = domain_keys(control, domain)
    if not keys:
        raise KeyCommandError(f"no keys for {domain} in control/domainkeys")
    return "\n".join(records.zone_lines(k.domain, k.selector, k.key) for k in keys)


def list_text(control: str) -> str:
    root = os.path.join(control, "domainkeys")
    rows = []
    if os.path.isdir(root):
        for domain in sorted(os.listdir(root)):
            if os.path.isdir(os.path.join(root, domain)):
                rows.extend(domain_keys(control, domain))
    if not rows:
        return "no keys in control/domainkeys"
    return "\n".join(
        f"{k.domain}\t{k.selector}\t{k.state}\t{k.algorithm}\t{k.bits}\t{k.age_days}d" for k in rows
    )
