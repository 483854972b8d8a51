//! What the audit trail records, one variant per kind of event: the kind decides the facts an
//! event carries, its row's `kind` and the shape of its `detail`, so that no caller spells a
//! kind or builds a detail by hand. A detail is serialized straight from borrowed facts.

use serde::Serialize;

use crate::store::AuditEvent;

/// One event, borrowing its facts from the caller.
#[derive(Debug)]
pub(crate) enum Event<'a> {
    /// A browser sign-in, or the linking of a further provider, completed.
    SignIn { link: bool, user_id: &'a str, client_id: &'a str, alias: &'a str, session_id: &'a str },
    /// A user's session ended: `revoked` when a token's revocation or reuse ended it, else a
    /// logout; `cause` says which.
    SessionEnded {
        revoked: bool,
        cause: &'static str,
        user_id: &'a str,
        client_id: Option<&'a str>,
        alias: &'a str,
        session_id: &'a str,
    },
    /// A read of a user's stored upstream tokens (`outcome`: `ok`, `refreshed` or the refusal).
    TokenRead {
        outcome: &'static str,
        surface: &'static str,
        client_id: &'a str,
        user_id: &'a str,
        alias: &'a str,
        min_validity: i64,
    },
    /// A provider unlinked from a user, or asked to be while it was not linked.
    Unlink { outcome: &'static str, surface: &'static str, client_id: &'a str, user_id: &'a str, alias: &'a str },
    /// A refresh of stored upstream tokens, by a read or by keep-alive (`trigger`).
    TokenRefresh { outcome: &'static str, trigger: &'static str, user_id: &'a str, alias: &'a str, latency_ms: u64 },
    /// `admin-cli`'s sign-in at the master realm, or its refusal.
    AdminLogin { outcome: &'static str, client_id: &'a str, grant_type: &'static str, fact: AdminLoginFact<'a> },
    /// The end of an administrator's session, or a refused attempt to end one.
    AdminLogout { outcome: &'static str, client_id: &'a str, session_id: Option<&'a str>, cause: &'a str },
    /// An admin API caller without `manage-users` tried `operation` on a user.
    AdminWriteForbidden { client_id: &'a str, user_id: &'a str, operation: &'a str },
    /// A user updated through the admin API (`conflict`: refused, the e-mail is taken).
    AdminUserUpdate {
        conflict: bool,
        client_id: &'a str,
        user_id: &'a str,
        fields: &'a [&'a str],
        enabled: Option<bool>,
    },
    /// A user created through the admin API (`outcome`: `created`, `username_taken`,
    /// `email_taken`; `user_id` only when created), with or without a password.
    AdminUserCreate {
        outcome: &'static str,
        client_id: &'a str,
        user_id: Option<&'a str>,
        password: bool,
        required_actions: &'a [String],
    },
    /// Realm roles granted to a user (`granted`) or taken back through the admin API.
    AdminRoleMapping { granted: bool, client_id: &'a str, user_id: &'a str, roles: &'a [String] },
    /// A user's password set through the admin API (never the password itself).
    AdminPasswordReset { client_id: &'a str, user_id: &'a str, temporary: bool },
    /// An upstream account linked to a user through the admin API (`outcome`: `linked`,
    /// `already_linked`, `linked_to_another_user`).
    AdminLink { outcome: &'static str, client_id: &'a str, user_id: &'a str, alias: &'a str },
    /// A user erased through the admin API, with the identities and sessions that went too.
    AdminUserDelete { client_id: &'a str, user_id: &'a str, identities: &'a [String], sessions: usize },
    /// Every session of a user ended through the admin API.
    AdminUserLogout { client_id: &'a str, user_id: &'a str, sessions: usize },
    /// A verification e-mail sent (`error: None`, the link expiring at `expires_at`) or not.
    SendVerifyEmail { client_id: Option<&'a str>, user_id: &'a str, expires_at: i64, error: Option<String> },
    /// A verification link opened: `refused` names why it did not verify (then nobody is named).
    VerifyEmail { client_id: Option<&'a str>, user_id: Option<&'a str>, refused: Option<&'static str> },
    /// A sign-in through `alias` brought an e-mail address user `holder_id` already holds:
    /// `refused` (a proven address, the holder not linked to the provider: the sign-in ended on
    /// a page) or the address left off user `user_id`.
    EmailConflict { refused: bool, user_id: &'a str, holder_id: &'a str, alias: &'a str },
    /// `import keycloak` wrote a realm's users (and tokens).
    KeycloakImport { created: u64, updated: u64, unchanged: u64, skipped: usize, tokens_sealed: Option<u64> },
}

/// What an administrator's sign-in came to, beside its grant type.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub(crate) enum AdminLoginFact<'a> {
    Issued { session_id: &'a str },
    Throttled { wait_seconds: i64 },
    WrongCredentials { username_known: bool },
    Refused { cause: &'a str },
}

/// The `detail` column's object for each kind.
#[derive(Serialize)]
#[serde(untagged)]
enum Detail<'a> {
    Session {
        session_id: &'a str,
    },
    SessionEnded {
        session_id: &'a str,
        cause: &'a str,
    },
    Surface {
        surface: &'a str,
    },
    Read {
        surface: &'a str,
        min_validity: i64,
    },
    Refresh {
        trigger: &'a str,
        latency_ms: u64,
    },
    AdminLogin {
        grant_type: &'a str,
        #[serde(flatten)]
        fact: &'a AdminLoginFact<'a>,
    },
    AdminLogout {
        #[serde(skip_serializing_if = "Option::is_none")]
        session_id: Option<&'a str>,
        cause: &'a str,
    },
    Operation {
        operation: &'a str,
    },
    Update {
        fields: &'a [&'a str],
        enabled: Option<bool>,
    },
    Created {
        password: bool,
        required_actions: &'a [String],
    },
    Password {
        temporary: bool,
    },
    Roles {
        roles: &'a [String],
    },
    Delete {
        identities: &'a [String],
        sessions: usize,
    },
    Sessions {
        sessions: usize,
    },
    Sent {
        expires_at: i64,
    },
    NotSent {
        error: &'a str,
    },
    Refused {
        reason: &'a str,
    },
    Nothing {},
    Holder {
        holder_user_id: &'a str,
    },
    Import {
        created: u64,
        updated: u64,
        unchanged: u64,
        skipped: usize,
        tokens_sealed: Option<u64>,
    },
}

/// The columns of a row, before its detail is serialized.
struct Row<'a> {
    kind: &'static str,
    outcome: &'a str,
    user_id: Option<&'a str>,
    client_id: Option<&'a str>,
    alias: Option<&'a str>,
    detail: Detail<'a>,
}

impl Event<'_> {
    /// The row the audit table keeps of this event, at `at` (Unix seconds).
    pub(crate) fn row(&self, at: i64) -> AuditEvent {
        let row = self.columns();
        AuditEvent {
            at,
            kind: row.kind.to_owned(),
            outcome: row.outcome.to_owned(),
            user_id: row.user_id.map(str::to_owned),
            client_id: row.client_id.map(str::to_owned),
            alias: row.alias.map(str::to_owned),
            // Serializing borrowed strings and numbers into a String cannot fail.
            detail: serde_json::to_string(&row.detail).unwrap_or_default(),
        }
    }

    fn columns(&self) -> Row<'_> {
        match *self {
            Event::SignIn { link, user_id, client_id, alias, session_id } => Row {
                kind: if link { "link" } else { "sign_in" },
                outcome: "success",
                user_id: Some(user_id),
                client_id: Some(client_id),
                alias: Some(alias),
                detail: Detail::Session { session_id },
            },
            Event::SessionEnded { revoked, cause, user_id, client_id, alias, session_id } => Row {
                kind: if revoked { "session_revoked" } else { "logout" },
                outcome: "success",
                user_id: Some(user_id),
                client_id,
                alias: Some(alias),
                detail: Detail::SessionEnded { session_id, cause },
            },
            Event::TokenRead { outcome, surface, client_id, user_id, alias, min_validity } => Row {
                kind: "token_read",
                outcome,
                user_id: Some(user_id),
                client_id: Some(client_id),
                alias: Some(alias),
                detail: Detail::Read { surface, min_validity },
            },
            Event::Unlink { outcome, surface, client_id, user_id, alias } => Row {
                kind: "unlink",
                outcome,
                user_id: Some(user_id),
                client_id: Some(client_id),
                alias: Some(alias),
                detail: Detail::Surface { surface },
            },
            Event::TokenRefresh { outcome, trigger, user_id, alias, latency_ms } => Row {
                kind: "token_refresh",
                outcome,
                user_id: Some(user_id),
                client_id: None,
                alias: Some(alias),
                detail: Detail::Refresh { trigger, latency_ms },
            },
            Event::AdminLogin { outcome, client_id, grant_type, ref fact } => Row {
                kind: "admin_login",
                outcome,
                user_id: None,
                client_id: Some(client_id),
                alias: None,
                detail: Detail::AdminLogin { grant_type, fact },
            },
            Event::AdminLogout { outcome, client_id, session_id, cause } => Row {
                kind: "admin_logout",
                outcome,
                user_id: None,
                client_id: Some(client_id),
                alias: None,
                detail: Detail::AdminLogout { session_id, cause },
            },
            Event::AdminWriteForbidden { client_id, user_id, operation } => Row {
                kind: "admin_write",
                outcome: "forbidden",
                user_id: Some(user_id),
                client_id: Some(client_id),
                alias: None,
                detail: Detail::Operation { operation },
            },
            Event::AdminUserUpdate { conflict, client_id, user_id, fields, enabled } => Row {
                kind: "admin_user_update",
                outcome: if conflict { "conflict" } else { "success" },
                user_id: Some(user_id),
                client_id: Some(client_id),
                alias: None,
                detail: Detail::Update { fields, enabled },
            },
            Event::AdminUserCreate { outcome, client_id, user_id, password, required_actions } => Row {
                kind: "admin_user_create",
                outcome,
                user_id,
                client_id: Some(client_id),
                alias: None,
                detail: Detail::Created { password, required_actions },
            },
            Event::AdminRoleMapping { granted, client_id, user_id, roles } => Row {
                kind: "admin_role_mapping",
                outcome: if granted { "granted" } else { "revoked" },
                user_id: Some(user_id),
                client_id: Some(client_id),
                alias: None,
                detail: Detail::Roles { roles },
            },
            Event::AdminPasswordReset { client_id, user_id, temporary } => Row {
                kind: "admin_password_reset",
                outcome: "success",
                user_id: Some(user_id),
                client_id: Some(client_id),
                alias: None,
                detail: Detail::Password { temporary },
            },
            Event::AdminLink { outcome, client_id, user_id, alias } => Row {
                kind: "admin_link",
                outcome,
                user_id: Some(user_id),
                client_id: Some(client_id),
                alias: Some(alias),
                detail: Detail::Nothing {},
            },
            Event::AdminUserDelete { client_id, user_id, identities, sessions } => Row {
                kind: "admin_user_delete",
                outcome: "success",
                user_id: Some(user_id),
                client_id: Some(client_id),
                alias: None,
                detail: Detail::Delete { identities, sessions },
            },
            Event::AdminUserLogout { client_id, user_id, sessions } => Row {
                kind: "admin_user_logout",
                outcome: "success",
                user_id: Some(user_id),
                client_id: Some(client_id),
                alias: None,
                detail: Detail::Sessions { sessions },
            },
            Event::SendVerifyEmail { client_id, user_id, expires_at, ref error } => Row {
                kind: "send_verify_email",
                outcome: if error.is_some() { "failure" } else { "success" },
                user_id: Some(user_id),
                client_id,
                alias: None,
                detail: match error {
                    Some(error) => Detail::NotSent { error },
                    None => Detail::Sent { expires_at },
                },
            },
            Event::VerifyEmail { client_id, user_id, refused } => Row {
                kind: "verify_email",
                outcome: if refused.is_some() { "refused" } else { "success" },
                user_id,
                client_id,
                alias: None,
                detail: match refused {
                    Some(reason) => Detail::Refused { reason },
                    None => Detail::Nothing {},
                },
            },
            Event::EmailConflict { refused, user_id, holder_id, alias } => Row {
                kind: "email_conflict",
                outcome: if refused { "refused" } else { "email_withheld" },
                user_id: Some(user_id),
                client_id: None,
                alias: Some(alias),
                detail: Detail::Holder { holder_user_id: holder_id },
            },
            Event::KeycloakImport { created, updated, unchanged, skipped, tokens_sealed } => Row {
                kind: "keycloak_import",
                outcome: "success",
                user_id: None,
                client_id: None,
                alias: None,
                detail: Detail::Import { created, updated, unchanged, skipped, tokens_sealed },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detail(event: Event<'_>) -> String {
        event.row(0).detail
    }

    #[test]
    fn details_keep_the_shapes_the_audit_trail_has_always_had() {
        let login = Event::AdminLogin {
            outcome: "failure",
            client_id: "admin-cli",
            grant_type: "refresh_token",
            fact: AdminLoginFact::Refused { cause: "expired" },
        };
        assert_eq!(detail(login), r#"{"grant_type":"refresh_token","cause":"expired"}"#);
        let throttled = Event::AdminLogin {
            outcome: "throttled",
            client_id: "admin-cli",
            grant_type: "password",
            fact: AdminLoginFact::Throttled { wait_seconds: 4 },
        };
        assert_eq!(detail(throttled), r#"{"grant_type":"password","wait_seconds":4}"#);
        let read = Event::TokenRead {
            outcome: "ok",
            surface: "internal",
            client_id: "svc",
            user_id: "u",
            alias: "azure_devops",
            min_validity: 60,
        };
        assert_eq!(detail(read), r#"{"surface":"internal","min_validity":60}"#);
        let logout = Event::AdminLogout { outcome: "failure", client_id: "admin-cli", session_id: None, cause: "x" };
        assert_eq!(detail(logout), r#"{"cause":"x"}"#);
        let opened = Event::VerifyEmail { client_id: None, user_id: Some("u"), refused: None };
        assert_eq!(detail(opened), "{}");
        let update =
            Event::AdminUserUpdate { conflict: true, client_id: "c", user_id: "u", fields: &["email"], enabled: None };
        assert_eq!(detail(update), r#"{"fields":["email"],"enabled":null}"#);
    }

    #[test]
    fn the_kind_and_outcome_follow_from_the_event() {
        let ended = Event::SessionEnded {
            revoked: true,
            cause: "refresh_token_reused",
            user_id: "u",
            client_id: None,
            alias: "azure_devops",
            session_id: "s",
        };
        let row = ended.row(7);
        assert_eq!((row.at, row.kind.as_str(), row.outcome.as_str()), (7, "session_revoked", "success"));
        assert_eq!(row.alias.as_deref(), Some("azure_devops"));
        let sent = Event::SendVerifyEmail { client_id: None, user_id: "u", expires_at: 9, error: Some("down".into()) };
        let row = sent.row(0);
        assert_eq!(
            (row.kind.as_str(), row.outcome.as_str(), row.detail.as_str()),
            ("send_verify_email", "failure", r#"{"error":"down"}"#)
        );
    }
}
