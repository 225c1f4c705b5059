"""Credential redaction: the one place that decides what of a URL, a header or a message is secret.

Used for everything the tool prints, logs or writes to an output: ``redact_url`` for a URL we show,
``redact_text`` for a message that may hold URLs, headers or keys, ``redact_headers`` for a header
mapping. What is masked (with ``***``):

- the password of a URL's user info (``http://user:PASS@host`` -> ``http://user:***@host``); a
  user name alone is masked too (``https://TOKEN@host`` -> ``https://***@host``: tokens travel so);
- the values of query parameters named like a credential (``api_key``, ``key``, ``token``,
  ``access_token``, ``password``, ``secret``, ``sig``, ``signature``, ``auth``, ...);
- ``Bearer|Basic|Digest <credential>`` values, and header values of ``Authorization``,
  ``Proxy-Authorization``, ``Cookie``, ``Set-Cookie``, ``X-Api-Key``, ``Api-Key``;
- anything shaped like an OpenAI-style key (``sk-...``), masked or not;
- every string in ``secrets`` (e.g. the API key read from the environment), raw and URL-encoded.

>>> redact_url("http://me:hunter2@example.org/v1?api_key=abc&x=1")
'http://me:***@example.org/v1?api_key=***&x=1'
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from urllib.parse import quote, unquote

MASK = "***"
SECRET_PARAMS = frozenset({
    "key", "api_key", "apikey", "api-key", "token", "access_token", "auth", "auth_token",
    "password", "passwd", "pwd", "secret", "client_secret", "sig", "signature", "session",
    "x-api-key", "code"})
SECRET_HEADERS = frozenset({
    "authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "api-key"})

# scheme://netloc: the netloc ends at the first / ? # or whitespace; user info is what precedes
# its LAST "@" (a raw "@" in a password is kept inside the user info).
_URL_AUTHORITY = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<netloc>[^\s/?#<>\"']*)")
_QUERY_PARAM = re.compile(r"(?P<sep>[?&;])(?P<name>[A-Za-z0-9_.\-]+)=(?P<value>[^&#;\s\"'<>]*)")
_AUTH_VALUE = re.compile(r"\b(?P<kind>[Bb]earer|Basic|Digest)\s+(?P<value>[A-Za-z0-9+/=._~\-]{8,})")
_HEADER_LINE = re.compile(
    r"(?im)(?P<name>\b(?:proxy-authorization|authorization|set-cookie|cookie|x-api-key|api-key))"
    r"(?P<sep>\s*[:=]\s*)(?P<value>[^\r\n,}]+)")
_KEY_LIKE = re.compile(r"\bsk-[A-Za-z0-9_\-*.]{4,}")


def _mask_userinfo(match: re.Match[str]) -> str:
    scheme, netloc = match.group("scheme"), match.group("netloc")
    if "@" not in netloc:
        return match.group(0)
    userinfo, host = netloc.rsplit("@", 1)
    user, has_password, _ = userinfo.partition(":")
    shown = f"{user}:{MASK}" if has_password and user else MASK
    return f"{scheme}{shown}@{host}"


def _mask_param(match: re.Match[str]) -> str:
    name = match.group("name")
    if name.lower() not in SECRET_PARAMS or not match.group("value"):
        return match.group(0)
    return f"{match.group('sep')}{name}={MASK}"


def redact_url(url: str) -> str:
    """``url`` with its user info and credential-like query values masked (see the module)."""
    return _QUERY_PARAM.sub(_mask_param, _URL_AUTHORITY.sub(_mask_userinfo, str(url)))


def _secret_forms(secret: str) -> list[str]:
    forms = {secret, quote(secret, safe=""), quote(secret), unquote(secret)}
    return sorted((f for f in forms if f), key=len, reverse=True)


def url_secrets(url: str | None) -> list[str]:
    """The user name and password of a URL's user info (raw and decoded), to mask elsewhere."""
    if not url:
        return []
    match = _URL_AUTHORITY.search(url)
    if match is None or "@" not in match.group("netloc"):
        return []
    userinfo = match.group("netloc").rsplit("@", 1)[0]
    user, _, password = userinfo.partition(":")
    return [s for s in (password, user if not password else "") if s]


def redact_text(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` with every known secret and every credential-shaped part masked."""
    text = str(text)
    for secret in secrets:
        if secret and len(secret) >= 3:
            for form in _secret_forms(secret):
                text = text.replace(form, MASK)
    text = redact_url(text)
    text = _HEADER_LINE.sub(lambda m: f"{m.group('name')}{m.group('sep')}{MASK}", text)
    text = _AUTH_VALUE.sub(lambda m: f"{m.group('kind')} {MASK}", text)
    return _KEY_LIKE.sub(MASK, text)


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """A copy of ``headers`` whose credential headers (``Authorization``, cookies, API keys) read
    ``***``; other values pass through ``redact_text``."""
    return {name: MASK if name.lower() in SECRET_HEADERS else redact_text(value)
            for name, value in headers.items()}


class RedactingFilter(logging.Filter):
    """A logging filter that masks credentials (and the ``secrets`` it was given) in every record
    it sees; ``redact_logs`` puts one on the HTTP client loggers, whose request lines hold the
    full URL (user info included)."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact_text(message, self.secrets)
        if clean != message:
            record.msg, record.args = clean, ()
        return True


_FILTER = RedactingFilter()


def redact_logs(secrets: Iterable[str | None] = (),
                loggers: Iterable[str] = ("httpx", "httpcore")) -> None:
    """Mask credentials, and ``secrets``, in what the named loggers emit (idempotent)."""
    _FILTER.secrets.update(s for s in secrets if s and len(s) >= 3)
    for name in loggers:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
