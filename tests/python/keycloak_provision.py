#!/usr/bin/env python3
"""Provision users as OpenHands Enterprise's newest Keycloak mode does, through python-keycloak.

``create_keycloak_user`` posts ``{"email", "username": email, "enabled": true, "emailVerified":
true, "credentials": [{"type": "password", "value": …, "temporary": false}]}`` with
``KeycloakAdmin.create_user`` (sync and async) and reads the new id from ``Location``; a 409
means "account exists". ``request_offline_token`` then asks ``KeycloakOpenID.token(email,
password, scope="openid offline_access")`` for an offline token, whose userinfo carries the
``roles`` its ``ROLE_CHECK_ENABLED`` reads. An administrator's
``set_user_password`` sets temporary and permanent passwords, and a temporary one keeps the
password grant shut ("Account is not fully set up"); realm roles are listed, granted and taken
back through python-keycloak's role calls.

Prints ``USER_ID=<id>`` for the first user created. Exit status 0 when every step passed.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import traceback

import base64
import json

from keycloak import KeycloakAdmin, KeycloakOpenID
from keycloak.exceptions import KeycloakAuthenticationError, KeycloakPostError


class StepFailed(Exception):
    """A check failed; the message says why."""


def ok(step: str) -> None:
    print(f"[ok]   {step}", flush=True)


def require(condition: bool, message: str) -> None:
    if not condition:
        raise StepFailed(message)


def openhands_admin(args: argparse.Namespace) -> KeycloakAdmin:
    """The admin client exactly as OpenHands' get_keycloak_admin builds it."""
    admin = KeycloakAdmin(
        server_url=args.server_url,
        username="admin",
        password=args.password,
        realm_name="master",
        client_id="admin-cli",
        verify=True,
    )
    admin.get_realm(args.realm)
    admin.change_current_realm(args.realm)
    return admin


def provisioning_payload(email: str, password: str) -> dict:
    """create_keycloak_user's body, field for field."""
    return {
        "email": email,
        "username": email,
        "enabled": True,
        "emailVerified": True,
        "credentials": [{"type": "password", "value": password, "temporary": False}],
    }


def expect_conflict(call, words: str, what: str) -> None:
    try:
        call()
    except KeycloakPostError as err:
        require(err.response_code == 409, f"{what}: expected 409, got {err.response_code}: {err}")
        require(words in str(err.error_message), f"{what}: expected {words!r}, got {err.error_message!r}")
        ok(f"{what}: 409 {words}")
        return
    raise StepFailed(f"{what}: expected a 409, the call succeeded")


def jwt_claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def check_password_grant(args: argparse.Namespace, user_id: str) -> None:
    """request_offline_token: the password grant with offline_access, as OpenHands sends it."""
    openid = KeycloakOpenID(
        server_url=args.server_url,
        realm_name=args.realm,
        client_id=args.client_id,
        client_secret_key=args.client_secret,
    )
    tokens = openid.token(args.email, args.user_password, scope="openid offline_access")
    require(jwt_claims(tokens["refresh_token"])["typ"] == "Offline", f"an offline token: {tokens}")
    require("offline_access" in tokens["scope"].split(), f"the scope granted: {tokens['scope']}")
    info = openid.userinfo(tokens["access_token"])
    require(info["sub"] == user_id and info["email"] == args.email, f"userinfo names the user: {info}")
    require("identity_provider" not in info, f"no provider for a password sign-in: {info}")
    roles = info.get("roles", [])
    require({"offline_access", "uma_authorization"} <= set(roles), f"ROLE_CHECK_ENABLED reads roles: {info}")
    refreshed = openid.refresh_token(tokens["refresh_token"])
    require(jwt_claims(refreshed["access_token"])["sub"] == user_id, "the offline token refreshes")
    ok("KeycloakOpenID.token(email, password, scope='openid offline_access'): an offline token")
    try:
        openid.token(args.email, "not the password", scope="openid offline_access")
        raise StepFailed("a wrong password got tokens")
    except KeycloakAuthenticationError as err:
        require(err.response_code == 401, f"401 for a wrong password: {err.response_code}")
        require(b"Invalid user credentials" in err.response_body, f"Keycloak's words: {err.response_body!r}")
    ok("a wrong password: 401 invalid_grant Invalid user credentials")


def expect_not_fully_set_up(args: argparse.Namespace, username: str, password: str) -> None:
    openid = KeycloakOpenID(
        server_url=args.server_url,
        realm_name=args.realm,
        client_id=args.client_id,
        client_secret_key=args.client_secret,
    )
    try:
        openid.token(username, password, scope="openid offline_access")
        raise StepFailed("a user with a temporary password got tokens")
    except KeycloakPostError as err:
        require(err.response_code == 400, f"400 for a temporary password: {err.response_code}")
        require(b"Account is not fully set up" in err.response_body, f"Keycloak's words: {err.response_body!r}")
    ok("a temporary password: 400 Account is not fully set up")


def run(args: argparse.Namespace) -> None:
    admin = openhands_admin(args)
    ok("KeycloakAdmin built as OpenHands builds it")

    user_id = admin.create_user(provisioning_payload(args.email, args.user_password))
    require(len(user_id) == 36, f"the id from Location is a UUID: {user_id!r}")
    user = admin.get_user(user_id)
    require(user["username"] == args.email.lower(), f"username kept in lower case: {user}")
    require(user["email"] == args.email, f"e-mail as given: {user}")
    require(user["enabled"] is True and user["emailVerified"] is True, f"enabled and verified: {user}")
    require(user["requiredActions"] == [], f"no required action: {user}")
    require("credentials" not in user, f"credentials never read back: {user}")
    ok(f"create_user as create_keycloak_user: 201, id {user_id} from Location")
    print(f"USER_ID={user_id}", flush=True)
    check_password_grant(args, user_id)

    expect_conflict(
        lambda: admin.create_user(provisioning_payload(args.email.upper(), "another password")),
        "User exists with same username",
        "the same username in other case",
    )
    expect_conflict(
        lambda: admin.create_user({**provisioning_payload(args.email, "x"), "username": "someone-else"}),
        "User exists with same email",
        "another username with the same e-mail",
    )

    second = asyncio.run(admin.a_create_user(provisioning_payload("second." + args.email, args.user_password)))
    require(admin.get_user(second)["username"] == "second." + args.email.lower(), "the async call's user")
    ok("a_create_user (httpx) creates too")

    admin.set_user_password(second, "a temporary one", temporary=True)
    require(admin.get_user(second)["requiredActions"] == ["UPDATE_PASSWORD"], "temporary: UPDATE_PASSWORD")
    expect_not_fully_set_up(args, "second." + args.email, "a temporary one")
    admin.set_user_password(second, "a permanent one", temporary=False)
    require(admin.get_user(second)["requiredActions"] == [], "permanent: no required action")
    ok("set_user_password: temporary adds UPDATE_PASSWORD, permanent lifts it")

    answer = admin.connection.raw_put(
        f"admin/realms/{args.realm}/users/{second}/reset-password", data='{"type": "password"}'
    )
    require(answer.status_code == 400, f"400 for a credential without a value: {answer.status_code}")
    require("No password provided" in answer.text, f"Keycloak's words: {answer.text}")
    ok("reset-password without a value: 400 No password provided")

    realm_roles = [role["name"] for role in admin.get_realm_roles()]
    require({"offline_access", "uma_authorization"} <= set(realm_roles), f"the default roles: {realm_roles}")
    admin.assign_realm_roles(user_id, [{"id": "org-admin", "name": "org-admin"}])
    held = [role["name"] for role in admin.get_realm_roles_of_user(user_id)]
    require("org-admin" in held and "offline_access" in held, f"the granted and default roles: {held}")
    members = [user["id"] for user in admin.get_realm_role_members("org-admin")]
    require(members == [user_id], f"the role's members: {members}")
    admin.delete_realm_roles_of_user(user_id, [{"name": "org-admin"}])
    held = [role["name"] for role in admin.get_realm_roles_of_user(user_id)]
    require("org-admin" not in held, f"the grant taken back: {held}")
    ok("realm roles: get_realm_roles, assign_realm_roles, get_realm_role_members, delete_realm_roles_of_user")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--server-url", required=True)
    parser.add_argument("--realm", required=True)
    parser.add_argument("--password", required=True, help="the administrator's password")
    parser.add_argument("--email", required=True)
    parser.add_argument("--user-password", required=True)
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--client-secret", required=True)
    args = parser.parse_args()
    try:
        run(args)
    except StepFailed as failure:
        print(f"[FAIL] {failure}", flush=True)
        return 1
    except Exception:  # noqa: BLE001 - any other error fails the run with its trace
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
