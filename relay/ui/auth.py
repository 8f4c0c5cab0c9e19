"""The dashboard's credentials: signed session cookies, CSRF tokens bound to a session, a bound
on failed logins per client, and `wabus dev`'s one-time login link.

Sessions are signed, not stored: with a password, the signing key is derived from it, so every
worker and replica of the relay accepts the same cookie, and changing the password ends every
session. Logout clears the cookie and forgets the session in this process (a stolen cookie
stays valid elsewhere until it expires: `WABUS_DASHBOARD_SESSION_HOURS`).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from wabus.settings import Settings

_KEY_CONTEXT = b"wabus-dashboard-session-v1"
MAX_FAILURES = 5
"""Failed logins a client may make per `FAILURE_WINDOW`; then 429 until the window passes."""
FAILURE_WINDOW = 300.0
_MAX_CLIENTS = 10_000
_MAX_REVOKED = 10_000


@dataclass(frozen=True)
class Session:
    nonce: str
    expires: int


def fingerprint(secret: str) -> str:
    """What a log may say about a secret: the first hex digits of its SHA-256."""
    return hashlib.sha256(secret.encode()).hexdigest()[:10]


@dataclass
class Throttle:
    """Failed logins per client, in a bounded table (oldest clients forgotten first)."""

    limit: int = MAX_FAILURES
    window: float = FAILURE_WINDOW
    _failures: OrderedDict[str, list[float]] = field(default_factory=OrderedDict)

    def retry_after(self, client: str, now: float) -> float:
        """Seconds until `client` may try again; 0 when it may now."""
        recent = [at for at in self._failures.get(client, []) if at > now - self.window]
        if len(recent) < self.limit:
            return 0.0
        return max(1.0, recent[0] + self.window - now)

    def failed(self, client: str, now: float) -> None:
        recent = [at for at in self._failures.pop(client, []) if at > now - self.window]
        self._failures[client] = [*recent, now][-self.limit :]
        while len(self._failures) > _MAX_CLIENTS:
            self._failures.popitem(last=False)

    def succeeded(self, client: str) -> None:
        self._failures.pop(client, None)


class Gate:
    """Who may use the dashboard: checks the password or a one-time token, issues and verifies
    session cookies and the CSRF token of each session."""

    def __init__(self, settings: Settings) -> None:
        password = settings.dashboard_password
        token = settings.dashboard_login_token
        self._password = password.get_secret_value().encode() if password else None
        self._login_token = token.get_secret_value() if token else None
        self.lifetime = int(settings.dashboard_session_hours * 3600)
        self._key = (
            hmac.new(self._password, _KEY_CONTEXT, hashlib.sha256).digest()
            if self._password
            else secrets.token_bytes(32)  # one process (`wabus dev`): sessions end with it
        )
        self._revoked: OrderedDict[str, None] = OrderedDict()
        self.throttle = Throttle()

    @property
    def enabled(self) -> bool:
        """Off when neither a password nor a login link exists: nobody could log in."""
        return self._password is not None or self._login_token is not None

    @property
    def has_password(self) -> bool:
        return self._password is not None

    def password_matches(self, given: str) -> bool:
        """Constant-time comparison (of digests, so the length does not show either)."""
        if self._password is None:
            return False
        want = hashlib.sha256(self._password).digest()
        return hmac.compare_digest(hashlib.sha256(given.encode()).digest(), want)

    def redeem(self, token: str) -> bool:
        """True once for the one-time login token; it is spent by the first correct use."""
        if self._login_token is None:
            return False
        if not hmac.compare_digest(token.encode(), self._login_token.encode()):
            return False
        self._login_token = None
        return True

    def _sign(self, text: str) -> str:
        return hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()

    def issue(self, now: float | None = None) -> str:
        """A new session's cookie value: `<nonce>.<expiry>.<signature>`."""
        expires = int((now or time.time()) + self.lifetime)
        body = f"{secrets.token_urlsafe(18)}.{expires}"
        return f"{body}.{self._sign(body)}"

    def verify(self, cookie: str | None, now: float | None = None) -> Session | None:
        """The session a cookie carries, or None (absent, forged, expired or logged out)."""
        if not cookie or cookie.count(".") != 2:
            return None
        nonce, expires, signature = cookie.split(".")
        if not hmac.compare_digest(signature, self._sign(f"{nonce}.{expires}")):
            return None
        if not expires.isdigit() or int(expires) < (now or time.time()):
            return None
        if nonce in self._revoked:
            return None
        return Session(nonce, int(expires))

    def revoke(self, session: Session) -> None:
        self._revoked[session.nonce] = None
        while len(self._revoked) > _MAX_REVOKED:
            self._revoked.popitem(last=False)

    def csrf_token(self, session: Session) -> str:
        """The token every state-changing request of this session must carry."""
        return self._sign(f"csrf:{session.nonce}")

    def csrf_ok(self, session: Session, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(str(given), self.csrf_token(session))

    def login_form_token(self, now: float | None = None) -> str:
        """The login form's own CSRF token (there is no session yet): signed, valid an hour."""
        issued = str(int(now or time.time()))
        return f"{issued}.{self._sign('login:' + issued)}"

    def login_form_ok(self, given: str | None, now: float | None = None) -> bool:
        if not given or given.count(".") != 1:
            return False
        issued, signature = given.split(".")
        if not issued.isdigit() or int(issued) < (now or time.time()) - 3600:
            return False
        return hmac.compare_digest(signature, self._sign("login:" + issued))
