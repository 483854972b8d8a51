#!/usr/bin/env python3
"""Act as OpenHands' admin client against a running identity-broker, through python-keycloak.

Builds ``KeycloakAdmin`` exactly as OpenHands does (user ``admin``, realm ``master``, client
``admin-cli``), then ``get_realm('allhands')`` and ``change_current_realm('allhands')``, and
drives every admin call OpenHands makes, sync and async, plus the refusals around them.

The server must hold: the signed-in user ``--user-id`` (linked to ``azure_devops`` with
attribute ``azure_devops_id`` = ``--user-subject``), whose tokens are ``--user-access-token``
and ``--user-refresh-token``; and users ``--prefix``1..``--seeded`` as the store's
``seed_users`` writes them (username ``{prefix}{i}``, e-mail ``{prefix}{i}@example.test``,
attribute ``azure_devops_id`` = ``{prefix}-sub-{i}``).

Exit status: 0 when every step passed, 1 at the first failure (with the reason printed).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import traceback

import requests
from keycloak import KeycloakAdmin, KeycloakOpenID
from keycloak.exceptions import (
    KeycloakAuthenticationError,
    KeycloakDeleteError,
    KeycloakGetError,
    KeycloakPostError,
    KeycloakPutError,
)


class StepFailed(Exception):
    """A check failed; the message says why."""


def ok(step: str) -> None:
    print(f"[ok]   {step}", flush=True)


def require(condition: bool, message: str) -> None:
    if not condition:
        raise StepFailed(message)


def seed_id(i: int) -> str:
    return f"00000000-0000-4000-8000-{100000000000 + i}"


def expect_error(kind: type, code: int, call, what: str) -> Exception:
    try:
        call()
    except kind as err:  # noqa: PERF203
        require(err.response_code == code, f"{what}: expected {code}, got {err.response_code}: {err}")
        return err
    raise StepFailed(f"{what}: expected {kind.__name__} {code}, the call succeeded")


def openhands_admin(args: argparse.Namespace, password: str | None = None) -> KeycloakAdmin:
    """The admin client exactly as OpenHands' get_keycloak_admin builds it."""
    admin = KeycloakAdmin(
        server_url=args.server_url,
        username="admin",
        password=password if password is not None else args.password,
        realm_name="master",
        client_id="admin-cli",
        verify=True,
    )
    admin.get_realm(args.realm)
    admin.change_current_realm(args.realm)
    return admin


def check_sign_in_and_realm(args: argparse.Namespace) -> KeycloakAdmin:
    admin = KeycloakAdmin(
        server_url=args.server_url,
        username="admin",
        password=args.password,
        realm_name="master",
        client_id="admin-cli",
        verify=True,
    )
    realm = admin.get_realm(args.realm)
    require(isinstance(realm, dict) and realm.get("realm") == args.realm, f"get_realm: {realm}")
    admin.change_current_realm(args.realm)
    token = admin.connection.token
    for key in ("access_token", "expires_in", "refresh_token", "refresh_expires_in", "token_type"):
        require(key in token, f"the master token answer lacks {key}: {sorted(token)}")
    ok("KeycloakAdmin signs in as admin/admin-cli on master, get_realm, change_current_realm")
    expect_error(KeycloakGetError, 404, lambda: admin.get_realm("nowhere"), "an unknown realm")
    ok("an unknown realm is 404")
    return admin


def check_wrong_password(args: argparse.Namespace) -> None:
    try:
        openhands_admin(args, password=args.password + "-wrong")
    except KeycloakAuthenticationError as err:
        require(err.response_code == 401, f"wrong password: {err.response_code}")
        require(b"Invalid user credentials" in (err.response_body or b""), f"wrong password body: {err.response_body}")
        ok("a wrong password raises KeycloakAuthenticationError (401 invalid_grant)")
        return
    raise StepFailed("a wrong password signed in")


def check_listing_and_paging(admin: KeycloakAdmin, args: argparse.Namespace) -> None:
    total = args.seeded + 1
    users = admin.get_users()
    require(len(users) == total, f"get_users() paged {len(users)} users, expected {total}")
    names = [u["username"] for u in users]
    require(names == sorted(names), "users are ordered by username")
    require(len({u["id"] for u in users}) == total, "no user twice across pages")
    require(all("federatedIdentities" not in u for u in users), "list items never carry federatedIdentities")
    ok(f"get_users() pages {total} users 100 at a time, ordered by username, none twice")

    count = admin.users_count()
    require(count == total, f"users_count() = {count!r}, expected {total}")
    ok("users_count() is a bare integer")

    page = admin.get_users({"first": 0, "max": 100, "briefRepresentation": False})
    require(isinstance(page, list) and len(page) == 100, f"one page of 100: {len(page)}")
    seeded = next(u for u in page if u["id"] == seed_id(1))
    require(seeded["attributes"]["azure_devops_id"] == [f"{args.prefix}-sub-1"], f"attributes: {seeded}")
    last = admin.get_users({"first": 200, "max": 100})
    require(len(last) == total - 200, f"the third page holds {total - 200}: {len(last)}")
    brief = admin.get_users({"first": 0, "max": 5, "briefRepresentation": True})
    require(len(brief) == 5 and all("attributes" not in u for u in brief), "brief representation")
    ok("first/max pages and briefRepresentation (False as requests sends it)")


async def check_lookups_async(admin: KeycloakAdmin, args: argparse.Namespace) -> None:
    everyone = await admin.a_get_users()
    require(len(everyone) == args.seeded + 1, f"a_get_users() paged {len(everyone)} users")
    require(len({u["id"] for u in everyone}) == args.seeded + 1, "a_get_users(): no user twice across pages")
    ok("a_get_users() pages every user as httpx sends it")

    mine = await admin.a_get_users({"q": f"azure_devops_id:{args.user_subject}"})
    require([u["id"] for u in mine] == [args.user_id], f"q=azure_devops_id finds exactly the user: {mine}")
    one = await admin.a_get_users({"q": f"azure_devops_id:{args.prefix}-sub-1"})
    require([u["id"] for u in one] == [seed_id(1)], f"sub-1 must not find sub-10, sub-11, …: {[u['id'] for u in one]}")
    upper = await admin.a_get_users({"q": f"azure_devops_id:{args.prefix.upper()}-SUB-1"})
    require([u["id"] for u in upper] == [seed_id(1)], "the value matches ignoring case")
    for value in (f"{args.prefix}-sub-", f"{args.prefix}-sub-1%", f"{args.prefix}-sub-_", "%", "_", "*"):
        found = await admin.a_get_users({"q": f"azure_devops_id:{value}"})
        require(found == [], f"q=azure_devops_id:{value} must find nobody: {[u['id'] for u in found]}")
    other = await admin.a_get_users({"q": f"github_id:{args.prefix}-sub-1"})
    require(other == [], "another attribute's name finds nobody")
    ok("a_get_users(q=azure_devops_id:…): exact, ignoring case, never a prefix, a wildcard or another user")

    email = f"{args.prefix}2@example.test"
    by_email = await admin.a_get_users({"q": f"email:{email.upper()}"})
    require([u["id"] for u in by_email] == [seed_id(2)], f"q=email: whole e-mail ignoring case: {by_email}")
    partial = await admin.a_get_users({"q": "email:2@example.test"})
    require(partial == [], "q=email: is not a substring (unlike Keycloak)")
    substring = admin.get_users({"email": "2@example.test", "max": 1000})
    require(len(substring) > 1, "the plain email parameter is a substring, as in Keycloak")
    exact = admin.get_users({"email": email, "exact": True})
    require([u["id"] for u in exact] == [seed_id(2)], "exact=true matches the whole e-mail")
    ok("a_get_users(q=email:…) whole e-mail; email= substring unless exact")

    user = await admin.a_get_user(args.user_id)
    for key in ("id", "username", "email", "emailVerified", "enabled", "createdTimestamp", "attributes",
                "federatedIdentities", "requiredActions", "notBefore", "totp", "disableableCredentialTypes", "access"):
        require(key in user, f"a_get_user lacks {key}: {sorted(user)}")
    require(user["createdTimestamp"] > 10**12, "createdTimestamp is in milliseconds")
    links = user["federatedIdentities"]
    require(links and links[0]["identityProvider"] == "azure_devops" and links[0]["userId"] == args.user_subject,
            f"federatedIdentities: {links}")
    ok("a_get_user(id) is the full representation with federatedIdentities")

    count = await admin.a_users_count({"q": f"azure_devops_id:{args.prefix}-sub-3"})
    require(count == 1, f"a_users_count with q: {count}")
    search = await admin.a_get_users({"search": f"{args.prefix}10", "max": 100})
    require({u["username"] for u in search} == {f"{args.prefix}10"} | {f"{args.prefix}10{d}" for d in range(10)},
            f"search is a prefix: {[u['username'] for u in search]}")
    ok("a_users_count with filters; search= is a prefix")


def check_updates(admin: KeycloakAdmin, args: argparse.Namespace) -> None:
    target = seed_id(5)
    before = admin.get_user(target)
    changed = f"changed.{args.prefix}5@example.test"
    answer = admin.update_user(
        user_id=target,
        payload={"email": changed, "emailVerified": False, "enabled": before["enabled"], "username": before["username"]},
    )
    require(answer == {}, f"update_user answers 204 (python-keycloak's {{}}): {answer!r}")
    after = admin.get_user(target)
    require(after["email"] == changed and after["emailVerified"] is False, f"the e-mail changed: {after}")
    require(after["attributes"] == before["attributes"], "attributes left out are kept")
    ok("update_user as routes/email.py sends it: 204, fields changed, attributes kept")

    expect_error(KeycloakPutError, 409, lambda: admin.update_user(target, {"email": f"{args.prefix}6@example.test"}),
                 "another user's e-mail")
    expect_error(KeycloakPutError, 400, lambda: admin.update_user(target, {"email": "not an e-mail"}), "a bad e-mail")
    expect_error(KeycloakPutError, 400, lambda: admin.update_user(target, {"username": "someone-else"}),
                 "a changed username")
    expect_error(KeycloakPutError, 400,
                 lambda: admin.update_user(target, {"attributes": {f"a{i}": ["v"] for i in range(100)}}),
                 "too many attributes")
    expect_error(KeycloakPutError, 404, lambda: admin.update_user(seed_id(999999), {"enabled": True}), "unknown user")
    ok("update_user: 409 for a taken e-mail, 400 for an invalid one, a new username, too many attributes; 404")

    admin.update_user(target, {"attributes": {"azure_devops_id": [f"{args.prefix}-sub-5"], "team": ["a", "b"]}})
    require(admin.get_user(target)["attributes"]["team"] == ["a", "b"], "attributes replaced, values in order")

    admin.update_user(target, {"enabled": False})
    require(admin.get_user(target)["enabled"] is False, "disabled")
    disabled = admin.get_users({"enabled": False})
    require([u["id"] for u in disabled] == [target], f"enabled=False (requests' spelling) finds it: {disabled}")
    require(admin.users_count({"enabled": False}) == 1, "and counts it")
    ok("update_user(enabled=False) disables; enabled=False filters")


async def check_updates_async(admin: KeycloakAdmin, args: argparse.Namespace) -> None:
    target = seed_id(5)
    disabled = await admin.a_get_users({"enabled": False})
    require([u["id"] for u in disabled] == [target], f"enabled=false (httpx' spelling): {disabled}")
    await admin.a_update_user(target, {"enabled": True, "emailVerified": True})
    user = await admin.a_get_user(target)
    require(user["enabled"] is True and user["emailVerified"] is True, f"a_update_user: {user}")
    require(await admin.a_get_users({"enabled": False}) == [], "nobody is disabled any more")
    ok("a_update_user enables again; a_get_users(enabled=false)")


def check_logout_unlink_delete(admin: KeycloakAdmin, args: argparse.Namespace) -> None:
    realm_client = KeycloakOpenID(server_url=args.server_url, realm_name=args.realm, client_id=args.client_id,
                                  client_secret_key=args.client_secret)
    realm_client.userinfo(args.user_access_token)
    answer = admin.user_logout(args.user_id)
    require(answer == {}, f"user_logout answers 204: {answer!r}")
    try:
        realm_client.refresh_token(args.user_refresh_token)
        raise StepFailed("the user's refresh token still works after the logout")
    except KeycloakPostError as err:
        require(err.response_code == 400, f"refresh after logout: {err.response_code}")
    try:
        realm_client.userinfo(args.user_access_token)
        raise StepFailed("the user's access token still works after the logout")
    except KeycloakAuthenticationError:
        pass
    ok("user_logout ends every session: refresh token and access token refused")

    links = admin.get_user_social_logins(args.user_id)
    require([link["identityProvider"] for link in links] == ["azure_devops"], f"federated-identity: {links}")
    admin.delete_user_social_login(args.user_id, "azure_devops")
    require(admin.get_user_social_logins(args.user_id) == [], "unlinked")
    expect_error(KeycloakDeleteError, 404, lambda: admin.delete_user_social_login(args.user_id, "azure_devops"),
                 "unlinking again")
    ok("get_user_social_logins / delete_user_social_login: unlinked through the vault")

    victim = seed_id(7)
    admin.delete_user(victim)
    err = expect_error(KeycloakGetError, 404, lambda: admin.get_user(victim), "a deleted user")
    require(b"User not found" in (err.response_body or b""), f"404 body: {err.response_body}")
    require(admin.get_users({"q": f"azure_devops_id:{args.prefix}-sub-7"}) == [], "its attributes went with it")
    expect_error(KeycloakDeleteError, 404, lambda: admin.delete_user(victim), "deleting twice")
    ok("delete_user: gone, with its attributes; 404 after")


async def check_async_writes(admin: KeycloakAdmin, args: argparse.Namespace) -> None:
    victim = seed_id(8)
    await admin.a_user_logout(victim)
    await admin.a_delete_user(victim)
    require((await admin.a_get_users({"q": f"azure_devops_id:{args.prefix}-sub-8"})) == [], "a_delete_user")
    ok("a_user_logout, a_delete_user")


def check_token_refresh(admin: KeycloakAdmin, args: argparse.Namespace) -> None:
    first = dict(admin.connection.token)
    wait = int(0.9 * first["expires_in"]) + 0.3
    time.sleep(wait)
    admin.get_users({"first": 0, "max": 1})
    second = dict(admin.connection.token)
    require(second["access_token"] != first["access_token"], "the token was refreshed at 90% of its life")
    ok(f"the token is refreshed at 90% of its life ({wait:.1f} s)")

    admin.connection.add_param_headers("Authorization", "Bearer not-a-token")
    admin.get_users({"first": 0, "max": 1})
    third = dict(admin.connection.token)
    require(third["access_token"] != second["access_token"], "refreshed after a 401")
    ok("a 401 makes python-keycloak refresh and retry, and the retry succeeds")

    broken = dict(third)
    broken["refresh_token"] = "not-a-refresh-token"
    admin.connection.token = broken
    admin.connection.add_param_headers("Authorization", "Bearer not-a-token")
    admin.get_users({"first": 0, "max": 1})
    require(admin.connection.token["refresh_token"] != "not-a-refresh-token", "signed in again with the password")
    ok("a refused refresh (400 'Token is not active') makes python-keycloak sign in with the password again")


def check_refusals(admin: KeycloakAdmin, args: argparse.Namespace) -> None:
    users_url = f"{args.server_url.rstrip('/')}/admin/realms/{args.realm}/users"
    bare = requests.get(users_url, timeout=10)
    require(bare.status_code == 401, f"no bearer: {bare.status_code}")
    bogus = requests.get(users_url, headers={"Authorization": "Bearer abc.def.ghi"}, timeout=10)
    require(bogus.status_code == 401, f"a bad bearer: {bogus.status_code}")
    own = requests.get(users_url, headers={"Authorization": f"Bearer {args.user_access_token}"}, timeout=10)
    require(own.status_code == 403, f"a user's own token: {own.status_code} {own.text}")
    own_write = requests.put(f"{users_url}/{seed_id(9)}", json={"enabled": False},
                             headers={"Authorization": f"Bearer {args.user_access_token}"}, timeout=10)
    require(own_write.status_code == 403, f"a user's own token writing: {own_write.status_code}")
    ok("no bearer or a bad one: 401; a user's own token: 403")

    viewer = KeycloakAdmin(server_url=args.server_url, realm_name=args.realm, client_id=args.viewer_id,
                           client_secret_key=args.viewer_secret, verify=True)
    require(len(viewer.get_users({"first": 0, "max": 3})) == 3, "a view-users account reads")
    expect_error(KeycloakPutError, 403, lambda: viewer.update_user(seed_id(9), {"enabled": False}),
                 "a view-users account writing")
    expect_error(KeycloakDeleteError, 403, lambda: viewer.delete_user(seed_id(9)), "a view-users account deleting")
    manager = KeycloakAdmin(server_url=args.server_url, realm_name=args.realm, client_id=args.manager_id,
                            client_secret_key=args.manager_secret, verify=True)
    manager.update_user(seed_id(9), {"firstName": "Managed"})
    require(manager.get_user(seed_id(9))["firstName"] == "Managed", "a manage-users account writes")
    ok("service accounts: view-users reads but writing is 403; manage-users writes")


def check_hostile_parameters(admin: KeycloakAdmin, args: argparse.Namespace) -> None:
    users_path = f"admin/realms/{args.realm}/users"

    def get(path: str, params: dict) -> requests.Response:
        # Through python-keycloak's connection, which keeps the short-lived token fresh.
        return admin.connection.raw_get(path, **params)
    nobody = [
        {"q": "azure_devops_id:' OR '1'='1"},
        {"q": "azure_devops_id:1; DROP TABLE users; --"},
        {"q": "azure_devops_id:\"x\\\" OR 1=1 --\""},
        {"q": "email:%"},
        {"q": "email:_%"},
        {"q": "email:%@example.test"},
        {"q": "\"azure_devops_id\":\"%\""},
        {"username": "%", "exact": "true"},
        {"email": "_", "exact": "TRUE"},
        {"search": "\"%\""},
        {"search": "id:' OR 1=1 --"},
        {"idpAlias": "azure_devops", "idpUserId": "' OR 1=1 --"},
    ]
    for params in nobody:
        answer = get(users_path, params)
        require(answer.status_code == 200 and answer.json() == [], f"{params} must find nobody: {answer.status_code} {answer.text[:200]}")
    refused = [
        {"q": "azure_devops_id:"},
        {"q": "a:\"unclosed"},
        {"q": "a:1 b:2 c:3 d:4 e:5"},
        {"q": "x" * 10240},
        {"q": "azure_devops_id:" + "x" * 10000},
        {"max": "-1"},
        {"max": "1e9"},
        {"max": "99999999999999999999999"},
        {"max": "'"},
        {"first": "-5"},
        {"first": "1 OR 1=1"},
        {"enabled": "yes"},
        {"briefRepresentation": "0"},
        {"search": "x" * 10240},
        {"email": "a\x00b"},
    ]
    for params in refused:
        answer = get(users_path, params)
        require(400 <= answer.status_code < 500, f"{str(params)[:80]} must be a 4xx: {answer.status_code} {answer.text[:200]}")
    huge = get(users_path, {"max": "1000000"})
    require(huge.status_code == 200 and len(huge.json()) <= 1000, "an absurd max is served as at most 1000")
    far = get(users_path, {"first": str(2**62), "max": "10"})
    require(far.status_code == 200 and far.json() == [], f"a far first is an empty page: {far.status_code}")
    count = get(f"{users_path}/count", {"q": "azure_devops_id:%"})
    require(count.status_code == 200 and count.json() == 0, f"count with a wildcard value: {count.text}")
    ok(f"hostile q/max/first/search values: {len(nobody)} find nobody, {len(refused)} are 4xx, none a 5xx")


async def run(args: argparse.Namespace) -> None:
    """Every step in order, on one event loop (python-keycloak keeps one httpx client)."""
    check_wrong_password(args)
    admin = check_sign_in_and_realm(args)
    check_listing_and_paging(admin, args)
    await check_lookups_async(admin, args)
    check_refusals(admin, args)
    check_hostile_parameters(admin, args)
    check_updates(admin, args)
    await check_updates_async(admin, args)
    check_logout_unlink_delete(admin, args)
    await check_async_writes(admin, args)
    check_token_refresh(admin, args)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server-url", required=True)
    parser.add_argument("--realm", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--client-id", required=True)
    parser.add_argument("--client-secret", required=True)
    parser.add_argument("--user-id", required=True)
    parser.add_argument("--user-subject", required=True)
    parser.add_argument("--user-access-token", required=True)
    parser.add_argument("--user-refresh-token", required=True)
    parser.add_argument("--viewer-id", required=True)
    parser.add_argument("--viewer-secret", required=True)
    parser.add_argument("--manager-id", required=True)
    parser.add_argument("--manager-secret", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--seeded", type=int, required=True)
    args = parser.parse_args()
    try:
        asyncio.run(run(args))
    except StepFailed as err:
        print(f"[FAIL] {err}", flush=True)
        return 1
    except Exception:  # noqa: BLE001
        traceback.print_exc()
        return 1
    print("[ok]   all admin steps passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
