#!/usr/bin/env python3
"""Act as OpenHands against a running identity-broker, through python-keycloak.

Signs a user in through the broker's Keycloak-compatible endpoints the way
OpenHands does (python-keycloak's ``KeycloakOpenID`` for every server call, a
cookie-keeping browser session for the redirect chain), then checks every
answer OpenHands relies on.

Exit status: 0 when every step passed, 1 at the first failure (with the reason
printed), 2 for bad command-line usage (argparse).

Only python-keycloak (and its jwcrypto) and requests are needed.

Example:
    python3 tests/python/keycloak_client.py \
        --server-url http://127.0.0.1:8080/ --realm allhands \
        --client-id allhands --client-secret s3cret \
        --redirect-uri http://127.0.0.1:3000/oauth/keycloak/callback \
        --expect-email alice@contoso.com --expect-username alice@contoso.com
"""

from __future__ import annotations

import argparse
import base64
import json
import secrets
import sys
import traceback
import uuid
from html.parser import HTMLParser
from urllib.parse import parse_qs, urljoin, urlparse

import requests
from jwcrypto import jwk
from keycloak import KeycloakOpenID
from keycloak.exceptions import KeycloakAuthenticationError, KeycloakError

MAX_HOPS = 15
REDIRECT_STATUSES = {301, 302, 303, 307, 308}


class StepFailed(Exception):
    """A check failed; the message says why."""


def ok(step: str, detail: str = "") -> None:
    print(f"[ok]   {step}" + (f": {detail}" if detail else ""), flush=True)


def info(line: str) -> None:
    print(f"       {line}", flush=True)


def require(condition: bool, message: str) -> None:
    if not condition:
        raise StepFailed(message)


def short(value: object, limit: int = 160) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_canonical_uuid(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


def realm_issuer_suffix(realm: str) -> str:
    return f"/realms/{realm}"


# --------------------------------------------------------------------------
# JWT helpers (no verification: OpenHands decodes its tokens this way)
# --------------------------------------------------------------------------


def b64url_json(segment: str) -> dict:
    padded = segment + "=" * (-len(segment) % 4)
    value = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    if not isinstance(value, dict):
        raise ValueError("segment is not a JSON object")
    return value


def decode_unverified(token: str, what: str) -> tuple[dict, dict]:
    """Header and payload of a compact JWS, without checking the signature."""
    require(isinstance(token, str) and token, f"{what} is missing or not a string")
    parts = token.split(".")
    require(len(parts) == 3, f"{what} is not a compact JWS (has {len(parts)} parts)")
    try:
        header = b64url_json(parts[0])
        payload = b64url_json(parts[1])
    except (ValueError, UnicodeDecodeError) as exc:
        raise StepFailed(f"{what} does not decode as a JWT: {exc}") from exc
    return header, payload


# --------------------------------------------------------------------------
# Browser: follow the sign-in redirect chain by hand
# --------------------------------------------------------------------------


class FormPostParser(HTMLParser):
    """Finds the first <form method="post"> and its hidden inputs."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.action: str | None = None
        self.fields: dict[str, str] = {}
        self.found = False
        self._in_form = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k.lower(): (v or "") for k, v in attrs}
        if tag.lower() == "form" and not self.found and a.get("method", "").lower() == "post":
            self.found = True
            self._in_form = True
            self.action = a.get("action", "")
        elif tag.lower() == "input" and self._in_form:
            name = a.get("name")
            if name and a.get("type", "").lower() == "hidden":
                self.fields[name] = a.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag.lower() == "form":
            self._in_form = False


def new_browser() -> requests.Session:
    session = requests.Session()
    session.headers["User-Agent"] = "identity-broker-test-browser/1.0"
    return session


def browser_sign_in(
    kc: KeycloakOpenID,
    args: argparse.Namespace,
    session: requests.Session,
    scope: str = "openid email profile",
    extra: str = "",
) -> tuple[str, dict, list[str]]:
    """Run the authorization-code sign-in as a browser would (``session`` keeps the
    broker's cookies, so a second sign-in in it may be answered by SSO).

    Returns (code, the redirect's query, visited URLs). Never requests the redirect_uri.
    """
    state = secrets.token_urlsafe(24)
    url = kc.auth_url(redirect_uri=args.redirect_uri, scope=scope, state=state)
    url += f"&kc_idp_hint={args.idp_hint}{extra}"
    info(f"auth url: {short(url, 240)}")
    method, data = "GET", None
    visited: list[str] = []

    for hop in range(1, MAX_HOPS + 1):
        if url.startswith(args.redirect_uri):
            return finish_sign_in(url, state, args, visited)
        visited.append(url)
        try:
            resp = session.request(method, url, data=data, allow_redirects=False, timeout=30)
        except requests.RequestException as exc:
            raise StepFailed(f"hop {hop}: {method} {short(url)} failed: {exc}") from exc
        info(f"hop {hop}: {method} {short(url, 120)} -> {resp.status_code}")

        if resp.status_code in REDIRECT_STATUSES:
            location = resp.headers.get("Location")
            require(bool(location), f"hop {hop}: {resp.status_code} without a Location header")
            url = urljoin(resp.url, location)
            if resp.status_code in (307, 308):
                pass  # method and body are preserved
            else:
                method, data = "GET", None
            continue

        if resp.status_code == 200 and 'method="post"' in resp.text.lower().replace("'", '"'):
            form = FormPostParser()
            form.feed(resp.text)
            require(form.found, f"hop {hop}: page mentions method=post but no form was parsed")
            url = urljoin(resp.url, form.action or resp.url)
            method, data = "POST", dict(form.fields)
            info(f"       form_post to {short(url, 100)} with fields {sorted(data)}")
            continue

        raise StepFailed(
            f"hop {hop}: {method} {short(url)} answered {resp.status_code} "
            f"(expected a redirect or a form_post page); body: {short(resp.text, 400)}"
        )

    raise StepFailed(f"no redirect to {args.redirect_uri} within {MAX_HOPS} hops; visited {visited}")


def finish_sign_in(
    final_url: str, sent_state: str, args: argparse.Namespace, visited: list[str]
) -> tuple[str, dict, list[str]]:
    query = parse_qs(urlparse(final_url).query, keep_blank_values=True)
    if "error" in query:
        raise StepFailed(
            f"broker redirected back with error={query['error'][0]!r} "
            f"error_description={query.get('error_description', [''])[0]!r}"
        )
    codes = query.get("code", [])
    require(len(codes) == 1 and codes[0], f"redirect back has no single code: {short(final_url)}")
    states = query.get("state", [])
    require(states == [sent_state], f"state mismatch: sent {sent_state!r}, got {states!r}")
    return codes[0], {k: v[0] for k, v in query.items()}, visited


def passed_upstream(args: argparse.Namespace, visited: list[str]) -> bool:
    endpoint_path = f"/realms/{args.realm}/broker/{args.idp_hint}/endpoint"
    return any(urlparse(u).path.endswith(endpoint_path) for u in visited)


# --------------------------------------------------------------------------
# Checks, one per OpenHands interaction
# --------------------------------------------------------------------------


def check_well_known(kc: KeycloakOpenID, realm: str) -> dict:
    wk = kc.well_known()
    issuer = wk.get("issuer")
    require(isinstance(issuer, str), f"well_known has no issuer: {short(wk)}")
    require(
        issuer.rstrip("/").endswith(realm_issuer_suffix(realm)) and not issuer.endswith("/"),
        f"issuer {issuer!r} does not end with {realm_issuer_suffix(realm)!r}",
    )
    for field in ("authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri"):
        require(isinstance(wk.get(field), str) and wk[field], f"well_known lacks {field}")
    ok("well_known", f"issuer {issuer}")
    return wk


def check_token_response(token: dict) -> None:
    for field in ("access_token", "refresh_token", "id_token"):
        require(isinstance(token.get(field), str) and token[field], f"token response lacks {field}")
    require(is_int(token.get("expires_in")) and token["expires_in"] > 0,
            f"expires_in is not a positive integer: {token.get('expires_in')!r}")
    require(is_int(token.get("refresh_expires_in")) and token["refresh_expires_in"] >= 0,
            f"refresh_expires_in is not an integer: {token.get('refresh_expires_in')!r}")
    require(str(token.get("token_type", "")).lower() == "bearer",
            f"token_type is {token.get('token_type')!r}, expected Bearer")


def exchange_code(kc: KeycloakOpenID, code: str, redirect_uri: str) -> dict:
    token = kc.token(grant_type="authorization_code", code=code, redirect_uri=redirect_uri)
    check_token_response(token)
    ok("token (authorization_code)",
       f"expires_in={token['expires_in']} refresh_expires_in={token['refresh_expires_in']} "
       f"sizes access={len(token['access_token'])} refresh={len(token['refresh_token'])}")
    return token


def check_userinfo(kc: KeycloakOpenID, access_token: str, args: argparse.Namespace) -> dict:
    ui = kc.userinfo(access_token)
    require(isinstance(ui, dict), f"userinfo is not a JSON object: {short(ui)}")
    require(is_canonical_uuid(ui.get("sub")), f"userinfo sub is not a UUID: {ui.get('sub')!r}")
    require(isinstance(ui.get("email_verified"), bool),
            f"email_verified is not a JSON boolean: {ui.get('email_verified')!r}")
    require(ui.get("identity_provider") == args.idp_hint,
            f"identity_provider is {ui.get('identity_provider')!r}, expected {args.idp_hint!r}")
    username = ui.get("preferred_username")
    require(isinstance(username, str) and username, f"preferred_username missing: {username!r}")
    require(username == username.lower(), f"preferred_username is not lower-case: {username!r}")
    if args.expect_email is not None:
        require(ui.get("email") == args.expect_email,
                f"email is {ui.get('email')!r}, expected {args.expect_email!r}")
    if args.expect_username is not None:
        require(username == args.expect_username,
                f"preferred_username is {username!r}, expected {args.expect_username!r}")
    ok("userinfo", f"sub={ui['sub']} preferred_username={username} email={ui.get('email')!r}")
    return ui


# The JWK key type each realm.signature_algorithm publishes.
KEY_TYPES = {"RS256": "RSA", "ES256": "EC", "EdDSA": "OKP"}


def check_keys(kc: KeycloakOpenID, algorithm: str) -> None:
    kty = KEY_TYPES[algorithm]
    certs = kc.certs()
    keys = certs.get("keys")
    require(isinstance(keys, list) and keys, f"certs has no keys: {short(certs)}")
    require(all(k.get("kty") != "oct" and "k" not in k for k in keys), "certs publishes a secret key")
    published = [k for k in keys if isinstance(k, dict) and k.get("kty") == kty and k.get("kid")]
    require(bool(published), f"certs has no {kty} key with a kid: {short(certs)}")
    require(keys[0].get("kty") == kty and keys[0].get("alg") == algorithm,
            f"the active (first) key is not an {algorithm} {kty} key: {short(keys[0])}")
    ok("certs", f"{len(keys)} key(s), {kty} kids {[k['kid'] for k in published]}")

    public_key = kc.public_key()
    require(isinstance(public_key, str) and public_key.strip(), "realm public_key is empty")
    require("BEGIN" not in public_key, "realm public_key carries PEM armour; Keycloak gives bare base64")
    pem = f"-----BEGIN PUBLIC KEY-----\n{public_key}\n-----END PUBLIC KEY-----"
    try:
        realm_key = jwk.JWK.from_pem(pem.encode("ascii"))
    except Exception as exc:  # noqa: BLE001
        raise StepFailed(f"realm public_key is not base64 DER SubjectPublicKeyInfo: {exc}") from exc
    thumbs = set()
    for k in published:
        try:
            thumbs.add(jwk.JWK(**k).thumbprint())
        except Exception as exc:  # noqa: BLE001
            raise StepFailed(f"JWKS key {k.get('kid')!r} does not import in jwcrypto: {exc}") from exc
    require(realm_key.thumbprint() in thumbs, f"realm public_key matches no {kty} key in the JWKS")
    ok("public_key", f"{len(public_key)} base64 chars, matches a JWKS key")


def check_access_token(
    kc: KeycloakOpenID, access_token: str, userinfo: dict, issuer: str, client_id: str, algorithm: str
) -> dict:
    # python-keycloak 7.1.1 fetches certs() itself and verifies with a jwcrypto JWKSet.
    header, _payload = decode_unverified(access_token, "access token")
    require(header.get("alg") == algorithm, f"access token alg is {header.get('alg')!r}, expected {algorithm!r}")
    claims = kc.decode_token(access_token, validate=True)
    require(claims.get("sub") == userinfo["sub"],
            f"access token sub {claims.get('sub')!r} differs from userinfo sub {userinfo['sub']!r}")
    require(claims.get("typ") == "Bearer", f"access token typ is {claims.get('typ')!r}")
    roles = ((claims.get("resource_access") or {}).get("broker") or {}).get("roles")
    require(isinstance(roles, list) and "read-token" in roles,
            f"resource_access.broker.roles lacks read-token: {roles!r}")
    require(claims.get("azp") == client_id, f"azp is {claims.get('azp')!r}, expected {client_id!r}")
    require(claims.get("iss") == issuer, f"iss is {claims.get('iss')!r}, expected {issuer!r}")
    require(is_int(claims.get("exp")), f"access token exp is not an integer: {claims.get('exp')!r}")
    # OpenHands' cookie path reads payload['email'] and payload['email_verified'] directly.
    require("email" in claims, "access token has no email claim (OpenHands indexes it)")
    require(isinstance(claims.get("email_verified"), bool),
            f"access token email_verified is not a boolean: {claims.get('email_verified')!r}")
    ok("decode_token (verified)", f"typ={claims['typ']} azp={claims['azp']} roles={roles}")
    return claims


def check_refresh_token(refresh_token: str, sub: str, expected_typ: str = "Refresh") -> dict:
    header, payload = decode_unverified(refresh_token, "refresh token")
    # Only the broker verifies refresh tokens, as Keycloak's: signed with its HMAC key.
    require(header.get("alg") == "HS512", f"refresh token alg is {header.get('alg')!r}, expected 'HS512'")
    require(payload.get("sub") == sub,
            f"refresh token sub {payload.get('sub')!r} differs from access token sub {sub!r}")
    require(is_int(payload.get("exp")), f"refresh token exp is not an integer: {payload.get('exp')!r}")
    require(payload.get("typ") == expected_typ,
            f"refresh token typ is {payload.get('typ')!r}, expected {expected_typ!r}")
    ok("refresh token (unverified decode)", f"typ={payload['typ']} exp={payload['exp']}")
    return payload


def check_broker_token(args: argparse.Namespace, access_token: str) -> None:
    """OpenHands fetches the user's Azure DevOps token from Keycloak's broker endpoint."""
    url = urljoin(args.server_url, f"realms/{args.realm}/broker/{args.idp_hint}/token")
    resp = requests.get(url, headers={"Authorization": f"Bearer {access_token}"}, timeout=30)
    require(resp.status_code == 200, f"broker token answered {resp.status_code}: {short(resp.text)}")
    body = resp.json()
    for field in ("access_token", "refresh_token"):
        require(isinstance(body.get(field), str) and body[field], f"broker token lacks {field}")
    require(is_int(body.get("expires_in")) and body["expires_in"] > 0,
            f"broker token expires_in is not positive: {body.get('expires_in')!r}")
    ok("broker token", f"expires_in={body['expires_in']}")


def check_linking(kc: KeycloakOpenID, args: argparse.Namespace, browser: requests.Session, sub: str) -> None:
    """Settings' "link Azure DevOps": kc_action=idp_link for the signed-in user."""
    code, query, visited = browser_sign_in(kc, args, browser, extra=f"&kc_action=idp_link:{args.idp_hint}")
    require(passed_upstream(args, visited), "linking must run the provider's sign-in")
    require(query.get("kc_action_status") == "success",
            f"kc_action_status is {query.get('kc_action_status')!r}, expected 'success'")
    token = kc.token(grant_type="authorization_code", code=code, redirect_uri=args.redirect_uri)
    _, payload = decode_unverified(token["access_token"], "access token after linking")
    require(payload.get("sub") == sub, "linking signed in another user")
    ok("kc_action=idp_link", "kc_action_status=success, same user")


def check_offline_token(kc: KeycloakOpenID, args: argparse.Namespace, browser: requests.Session, sub: str) -> str:
    """An offline token for background jobs, taken in the same browser (SSO answers)."""
    code, _query, visited = browser_sign_in(kc, args, browser, scope="openid offline_access")
    require(not passed_upstream(args, visited), "with a live SSO session the provider is not asked again")
    token = kc.token(grant_type="authorization_code", code=code, redirect_uri=args.redirect_uri)
    check_refresh_token(token["refresh_token"], sub, expected_typ="Offline")
    introspected = kc.introspect(token["refresh_token"])
    require(introspected.get("active") is True, f"introspect of an offline token: {short(introspected)}")
    ok("offline token", "typ=Offline, introspect active, obtained by SSO")
    return token["refresh_token"]


def check_offline_survives(kc: KeycloakOpenID, offline_token: str, sub: str) -> None:
    refreshed = kc.refresh_token(offline_token)
    check_refresh_token(refreshed["refresh_token"], sub, expected_typ="Offline")
    info_claims = kc.userinfo(refreshed["access_token"])
    require(info_claims.get("sub") == sub, "userinfo with the offline-derived token names another user")
    ok("offline token after logout", "refresh and userinfo still work")


def check_session_lifecycle(kc: KeycloakOpenID, token: dict, sub: str) -> None:
    """Refresh (twice with one refresh token, as OpenHands' parallel requests do),
    introspect, log out, and see every token of the session stop working."""
    refresh_token = token["refresh_token"]
    first = kc.refresh_token(refresh_token)
    second = kc.refresh_token(refresh_token)
    for refreshed in (first, second):
        require(isinstance(refreshed.get("access_token"), str) and isinstance(refreshed.get("refresh_token"), str),
                f"refresh answer lacks tokens: {short(refreshed)}")
        _, payload = decode_unverified(refreshed["access_token"], "refreshed access token")
        require(payload.get("sub") == sub, "refreshed access token has another sub")
    ok("refresh_token (twice with the same refresh token)")

    active = kc.introspect(first["access_token"])
    require(active.get("active") is True, f"introspect of a live access token: {short(active)}")
    active_refresh = kc.introspect(refresh_token)
    require(active_refresh.get("active") is True, f"introspect of a live refresh token: {short(active_refresh)}")
    ok("introspect (active)")

    answer = kc.logout(refresh_token)
    require(answer == {}, f"logout should answer 204 with no body, got {short(answer)}")
    ok("logout (204)")

    try:
        kc.userinfo(first["access_token"])
    except KeycloakAuthenticationError:
        pass
    else:
        raise StepFailed("userinfo still accepted an access token after logout")
    inactive = kc.introspect(first["access_token"])
    require(inactive.get("active") is False, f"introspect after logout: {short(inactive)}")
    try:
        kc.refresh_token(second["refresh_token"])
    except KeycloakError as exc:
        require(exc.response_code == 400, f"refresh after logout answered {exc.response_code}")
    else:
        raise StepFailed("a refresh token of the ended session still worked")
    ok("after logout", "userinfo 401, introspect inactive, refresh invalid_grant")


# --------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--server-url", required=True, help="broker base URL, e.g. http://127.0.0.1:8080/")
    p.add_argument("--realm", default="allhands")
    p.add_argument("--client-id", required=True)
    p.add_argument("--client-secret", required=True)
    p.add_argument("--redirect-uri", required=True, help="a redirect URI registered for the client")
    p.add_argument("--idp-hint", default="azure_devops")
    p.add_argument("--expect-email", default=None)
    p.add_argument("--expect-username", default=None)
    p.add_argument("--signature-algorithm", default="RS256", choices=sorted(KEY_TYPES),
                   help="the broker's realm.signature_algorithm")
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> None:
    kc = KeycloakOpenID(
        server_url=args.server_url,
        realm_name=args.realm,
        client_id=args.client_id,
        client_secret_key=args.client_secret,
    )
    wk = check_well_known(kc, args.realm)
    issuer = wk["issuer"]

    browser = new_browser()
    code, _query, visited = browser_sign_in(kc, args, browser)
    require(passed_upstream(args, visited), f"the first sign-in never reached the provider; visited {visited}")
    ok("browser sign-in", f"{len(visited)} hops, code received, state matches")

    token = exchange_code(kc, code, args.redirect_uri)
    userinfo = check_userinfo(kc, token["access_token"], args)
    require(wk.get("id_token_signing_alg_values_supported") == [args.signature_algorithm],
            f"discovery's id_token_signing_alg_values_supported is "
            f"{wk.get('id_token_signing_alg_values_supported')!r}, expected [{args.signature_algorithm!r}]")
    check_keys(kc, args.signature_algorithm)
    claims = check_access_token(
        kc, token["access_token"], userinfo, issuer, args.client_id, args.signature_algorithm
    )
    check_refresh_token(token["refresh_token"], claims["sub"])
    check_broker_token(args, token["access_token"])
    offline_token = check_offline_token(kc, args, browser, claims["sub"])
    check_linking(kc, args, browser, claims["sub"])
    check_session_lifecycle(kc, token, claims["sub"])
    check_offline_survives(kc, offline_token, claims["sub"])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        run(args)
    except StepFailed as exc:
        print(f"[FAIL] {exc}", flush=True)
        return 1
    except KeycloakError as exc:
        body = exc.response_body.decode("utf-8", "replace") if exc.response_body else ""
        print(f"[FAIL] python-keycloak {type(exc).__name__}: status={exc.response_code} "
              f"body={short(body, 400)}", flush=True)
        traceback.print_exc(limit=3)
        return 1
    except Exception as exc:  # noqa: BLE001
        print(f"[FAIL] unexpected {type(exc).__name__}: {exc}", flush=True)
        traceback.print_exc()
        return 1
    print("[ok]   all steps passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
