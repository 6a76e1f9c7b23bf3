"""Who is calling the API: named API keys (`Authorization: Bearer <key>`, each with a role) and the
Alertmanager receiver's own bearer or basic credentials, as Alertmanager's http_config sends them.

Every configured secret is compared, in constant time over SHA-256 digests, so neither the answer's
timing nor its length tells which key came close. No key, token or password is ever logged.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from aiohttp import web

from bot.api.http import ApiError, client_address
from core.config import ApiKey, Config
from core.rbac import Actor

ALERTMANAGER_IDENTITY = "api:alertmanager"
"""The actor of requests carrying alertmanager.bearer_token or its basic credentials (role operator)."""


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8")).digest()


def same_secret(presented: str, configured: str) -> bool:
    """Constant-time equality; an empty configured secret (an unset ${VAR:-}) never matches."""
    equal = hmac.compare_digest(_digest(presented), _digest(configured))
    return equal and bool(configured) and bool(presented)


def match_api_key(cfg: Config, token: str) -> ApiKey | None:
    """The key whose value is `token`; every key is compared so timing does not depend on which."""
    found: ApiKey | None = None
    for key in cfg.api.keys:
        if same_secret(token, key.key.get_secret_value()) and found is None:
            found = key
    return found


def _credentials(request: web.Request) -> tuple[str, str]:
    scheme, _, cred = request.headers.get("Authorization", "").strip().partition(" ")
    return scheme.lower(), cred.strip()


def _unauthorized(message: str, challenge: str) -> ApiError:
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": challenge})


def api_actor(request: web.Request, cfg: Config) -> Actor:
    """The caller of /api/v1/events and the incident read API, by API key; 401 otherwise."""
    challenge = 'Bearer realm="tocsin"'
    scheme, token = _credentials(request)
    if scheme != "bearer" or not token:
        raise _unauthorized("send an API key as `Authorization: Bearer <key>`", challenge)
    key = match_api_key(cfg, token)
    if key is None:
        raise _unauthorized("the API key is not valid", challenge)
    return Actor(f"api:{key.name}", source=client_address(request))


def alertmanager_actor(request: web.Request, cfg: Config) -> Actor:
    """The caller of /api/v1/alertmanager: alertmanager.bearer_token, alertmanager.username/password
    (basic auth), or any API key as a bearer token (its own role applies); 401 otherwise."""
    am = cfg.alertmanager
    challenge = 'Bearer realm="tocsin", Basic realm="tocsin"'
    scheme, cred = _credentials(request)
    if scheme == "bearer" and cred:
        configured = am.bearer_token.get_secret_value() if am.bearer_token else ""
        is_receiver_token = same_secret(cred, configured)
        key = match_api_key(cfg, cred)
        if is_receiver_token:
            return Actor(ALERTMANAGER_IDENTITY, source=client_address(request))
        if key is not None:
            return Actor(f"api:{key.name}", source=client_address(request))
        raise _unauthorized("the bearer token is not valid", challenge)
    if scheme == "basic" and cred:
        try:
            user, sep, password = base64.b64decode(cred, validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise _unauthorized("the basic credentials are not base64 of user:password", challenge) from None
        user_ok = same_secret(user, am.username or "")
        password_ok = same_secret(password, am.password.get_secret_value() if am.password else "")
        if sep and user_ok and password_ok:
            return Actor(ALERTMANAGER_IDENTITY, source=client_address(request))
        raise _unauthorized("the basic credentials are not valid", challenge)
    raise _unauthorized("send Alertmanager's http_config credentials (bearer token or basic auth)", challenge)
