"""Share tokens: the run rooms' signed tokens (src/rooms/token.ts), checked in Python.

A token is ``lr1.<base64url payload>.<base64url HMAC-SHA256>``; the payload is JSON
``{ room, role, exp, sub? }`` and the signature covers ``lr1.<payload>`` with the rooms secret. A
share link carries a ``read`` token whose ``room`` is the scope it opens: ``notebook:<path>`` (one
file), a prefix pattern ending in ``*`` (``notebook:reports/*``), or ``*`` (every file). The secret is
the one the room server and ``lathe rooms share`` use: env ``LATHE_ROOMS_SECRET``, else
``<LATHE_ROOMS_DIR or <repo>/.lathe/rooms>/secret``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

PREFIX = "lr1"
#: The repository root: this package lives in <repo>/jupyter-config/lathe_jupyter/.
REPO_ROOT = Path(__file__).resolve().parents[2]


class ShareTokenError(Exception):
    """A refused share token; the message says why and is safe to show and log."""


@dataclass(frozen=True)
class ShareGrant:
    """What a valid share token opens."""

    scope: str  # the token's room: notebook:<path>, a pattern ending in *, or *
    exp: int  # expiry, Unix seconds
    sub: str | None = None  # who it was minted for (shown as the viewer's name)

    def leads_to(self, path: str, root: str | None = None) -> bool:
        """True if the folder at ``path`` holds something in scope (the file browser may list it).
        With ``root`` (the contents root on disk), the folder must also really lie inside it."""
        folder = clean_path(path)
        if folder is None or (root is not None and real_relpath(root, folder) is None):
            return False
        if self.scope == "*":
            return True
        target = self.scope[len("notebook:") :].rstrip("*").rstrip("/")
        return folder == "" or target.startswith(folder + "/")

    def covers(self, path: str, root: str | None = None) -> bool:
        """True if the file (or directory) at ``path``, relative to Jupyter's root, is in scope.

        With ``root`` (the contents root on disk), where ``path`` really is must be in scope too:
        the text of a path says nothing of the symlinks along it, and Jupyter follows them."""
        clean = clean_path(path)
        if clean is None or not room_covers(self.scope, clean):
            return False
        if root is None:
            return True
        real, scope = real_relpath(root, clean), self.real_scope(root)
        return real is not None and scope is not None and room_covers(scope, real)

    def real_scope(self, root: str) -> str | None:
        """The scope with the file or folder it names resolved to where it really is under
        ``root``, or None if that is outside ``root``."""
        if self.scope == "*":
            return "*"
        target = self.scope[len("notebook:") :]
        if not target.endswith("*"):
            real = real_relpath(root, target)
            return None if real is None else "notebook:" + real
        folder, _, prefix = target[:-1].rpartition("/")
        real = real_relpath(root, folder)
        if real is None:
            return None
        return "notebook:" + (real + "/" if real else "") + prefix + "*"


def room_covers(scope: str, clean: str) -> bool:
    """The text rule for a clean path: ``notebook:<clean>`` matches the scope, or it is the
    folder of a folder share (``notebook:dir/*`` also lists ``dir``)."""
    room = "notebook:" + clean
    return room_matches(scope, room) or (scope.endswith("/*") and room == scope[:-2])


def clean_path(path: str) -> str | None:
    """``path`` without surrounding slashes, or None if it has `.`/`..` segments, backslashes or
    NULs: Jupyter resolves `dir/../other.ipynb` inside its root, so a prefix scope (`dir/*`)
    must never see one."""
    p = path.strip("/")
    if "\\" in p or "\x00" in p or any(seg in (".", "..") for seg in p.split("/")):
        return None
    return p


def real_relpath(root: str, path: str) -> str | None:
    """Where ``path`` (relative to ``root``) really is, symlinks resolved, relative to the real
    ``root`` ('' for the root itself); None if that is outside the root or the path is not clean."""
    clean = clean_path(path)
    if clean is None:
        return None
    base = os.path.realpath(root)
    real = os.path.realpath(os.path.join(base, *[seg for seg in clean.split("/") if seg]))
    if real == base:
        return ""
    inside = base.rstrip(os.sep) + os.sep
    if not real.startswith(inside):
        return None
    return real[len(inside) :].replace(os.sep, "/")


def room_matches(pattern: str, room: str) -> bool:
    """Same rule as roomMatches in token.ts: ``*`` covers all, ``x*`` is a prefix, else exact."""
    if pattern == "*":
        return True
    if pattern.endswith("*"):
        return room.startswith(pattern[:-1])
    return pattern == room


def secret_file() -> Path:
    """Where the rooms secret lives when LATHE_ROOMS_SECRET is not set."""
    data_dir = os.environ.get("LATHE_ROOMS_DIR") or str(REPO_ROOT / ".lathe" / "rooms")
    return Path(data_dir).resolve() / "secret"


_cache: dict[str, tuple[float, str]] = {}


def load_secret() -> str:
    """The signing secret, re-read when the file changes (deleting it and restarting the room
    server rotates it, which voids every share link)."""
    env = os.environ.get("LATHE_ROOMS_SECRET")
    if env:
        return env
    path = secret_file()
    try:
        mtime = path.stat().st_mtime
    except FileNotFoundError:
        raise ShareTokenError(f"no rooms secret at {path}: mint a link with `lathe rooms share` first") from None
    hit = _cache.get(str(path))
    if hit and hit[0] == mtime:
        return hit[1]
    secret = path.read_text("utf-8").strip()
    if len(secret) < 16:
        raise ShareTokenError(f"{path}: the rooms secret must be at least 16 characters")
    _cache[str(path)] = (mtime, secret)
    return secret


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def sign(secret: str, data: str) -> str:
    return _b64url(hmac.new(secret.encode("utf-8"), data.encode("utf-8"), hashlib.sha256).digest())


def verify_share_token(token: str, secret: str | None = None, now: float | None = None) -> ShareGrant:
    """Checks a share token; returns its grant or raises ShareTokenError with the reason."""
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != PREFIX:
        raise ShareTokenError(f"malformed share token (expected {PREFIX}.<payload>.<signature>)")
    secret = secret if secret is not None else load_secret()
    expected = sign(secret, f"{PREFIX}.{parts[1]}")
    if not hmac.compare_digest(expected.encode(), parts[2].encode()):
        raise ShareTokenError("share token signature is wrong (minted with another secret, or altered)")
    try:
        pad = "=" * (-len(parts[1]) % 4)
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + pad))
    except (ValueError, UnicodeDecodeError):
        raise ShareTokenError("share token payload is not valid") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("room"), str) or not isinstance(payload.get("exp"), (int, float)):
        raise ShareTokenError("share token payload is not valid")
    if payload.get("role") != "read":
        # A write token is a producer's credential, never a view link.
        raise ShareTokenError(f"share token role is {payload.get('role')!r}: a share link needs a read token")
    scope = payload["room"]
    if scope != "*" and not scope.startswith("notebook:"):
        raise ShareTokenError(f"token is for room {scope!r}, not a notebook: mint one with `lathe rooms share <path>`")
    exp = int(payload["exp"])
    if exp <= (time.time() if now is None else now):
        expired = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(exp))
        raise ShareTokenError(f"share token expired at {expired}; ask for a new link")
    sub = payload.get("sub") if isinstance(payload.get("sub"), str) else None
    return ShareGrant(scope=scope, exp=exp, sub=sub)
