//! E-mail verification as Keycloak's `send-verify-email` does it: a single-use, expiring link
//! sent to the user's address, which verifies that address when opened. No HTTP here: the
//! admin API calls [`EmailVerification::send_verify_email`], the public listener
//! [`EmailVerification::redeem`].

use lettre::message::Mailbox;

use crate::audit::{AuditLog, Event};
use crate::clock::Clock;
use crate::crypto::{random_token, token_hash};
use crate::mail::{MailError, Mailer, OutgoingMessage};
use crate::oidc::clients::ClientRegistry;
use crate::store::{NewVerifyEmailToken, Redemption, Store, StoreError};
use crate::telemetry::Chain;

/// Keycloak's "user-initiated action lifespan" for links an administrator sends: 12 hours.
pub(crate) const DEFAULT_LIFESPAN_SECONDS: u64 = 12 * 3600;
/// A link that lives longer than this is refused: a year is beyond any use, and the bound
/// keeps `now + lifespan` far from overflowing.
pub(crate) const MAX_LIFESPAN_SECONDS: u64 = 365 * 24 * 3600;
/// Keycloak's subject for this message.
pub(crate) const SUBJECT: &str = "Verify email";

/// Why a link was not sent. `Display` is the message for the caller: Keycloak's own
/// `errorMessage` where Keycloak has one. Nothing is stored and nothing is sent in any case.
#[derive(Debug, thiserror::Error)]
pub enum VerifyEmailError {
    /// 404, Keycloak's `User not found`.
    #[error("User not found")]
    UserNotFound,
    /// 400.
    #[error("User email missing")]
    NoEmail,
    /// 400.
    #[error("User is disabled")]
    UserDisabled,
    /// 400: a `redirect_uri` without the `client_id` it belongs to.
    #[error("Client id missing")]
    ClientIdMissing,
    /// 400.
    #[error("Client doesn't exist")]
    UnknownClient,
    /// 400: not one of the client's registered redirect URIs, compared exactly.
    #[error("Invalid redirect uri.")]
    InvalidRedirectUri,
    /// 400.
    #[error("lifespan must be between 1 and {MAX_LIFESPAN_SECONDS} seconds")]
    InvalidLifespan,
    /// 400: the stored address is not one a message can be sent to.
    #[error("User email is not a valid address")]
    InvalidEmail,
    /// 500, as Keycloak answers a realm without e-mail settings; the message names the keys.
    #[error(
        "Failed to send execute actions email: e-mail is not configured on this server; set [smtp] host and from (and smtp.username with env BROKER_SMTP_PASSWORD if the server wants a login)"
    )]
    SmtpNotConfigured,
    /// 500, Keycloak's message; the cause (for the log) is the SMTP server's answer.
    #[error("Failed to send execute actions email")]
    Send(#[source] MailError),
    /// 500: the database failed.
    #[error("cannot store the verification link")]
    Store(#[from] StoreError),
}

/// Why an opened link did nothing; `Display` is the sentence shown to the person.
#[derive(Debug, thiserror::Error)]
pub enum RedeemError {
    #[error("This link is not valid. Ask for a new verification e-mail.")]
    Unknown,
    #[error("This link has already been used. If you opened it before, your e-mail address is verified.")]
    AlreadyUsed,
    #[error("This link has expired. Ask for a new verification e-mail.")]
    Expired,
    #[error("Your account's e-mail address has changed since this link was sent. Ask for a new verification e-mail.")]
    EmailChanged,
    #[error("This account is disabled.")]
    UserDisabled,
    #[error("cannot verify the e-mail address")]
    Store(#[from] StoreError),
}

/// Where the browser goes once the address is verified.
#[derive(Debug, PartialEq, Eq)]
pub enum Verified {
    /// The redirect URI the link was sent with: one of its client's, checked when sent.
    Redirect(String),
    /// No redirect was asked for: the broker says so on a page of its own.
    Done,
}

/// Sends and redeems verification links; cheap to clone.
#[derive(Debug, Clone)]
pub struct EmailVerification {
    store: Store,
    audit: AuditLog,
    clients: ClientRegistry,
    /// `None` without `[smtp]`: every send is refused with [`VerifyEmailError::SmtpNotConfigured`].
    mailer: Option<Mailer>,
    clock: Clock,
    realm_name: String,
    /// The link's address without its key: `{hostname}/realms/{realm}/login-actions/action-token`.
    action_url: String,
}

/// A send that passed every check: what goes into the row and the message.
struct Checked {
    to: Mailbox,
    email: String,
    client_id: Option<String>,
    redirect_uri: Option<String>,
    lifespan: u64,
}

impl EmailVerification {
    pub(crate) fn new(
        store: Store,
        audit: AuditLog,
        clients: ClientRegistry,
        mailer: Option<Mailer>,
        clock: Clock,
        realm_name: String,
        action_url: String,
    ) -> Self {
        EmailVerification { store, audit, clients, mailer, clock, realm_name, action_url }
    }

    /// Keycloak's `PUT /admin/realms/{realm}/users/{id}/send-verify-email`: checks the user,
    /// the client and the redirect URI, stores the hash of a fresh key and sends the link.
    /// Without `client_id`, `redirect_uri` must be absent too, and the link ends on the
    /// broker's own "verified" page (Keycloak would use its `account` console, which the
    /// broker does not have); with `client_id` and no `redirect_uri`, likewise. `lifespan`
    /// defaults to Keycloak's 12 hours. On any error nothing is stored.
    pub async fn send_verify_email(
        &self,
        user_id: &str,
        client_id: Option<&str>,
        redirect_uri: Option<&str>,
        lifespan_seconds: Option<u64>,
    ) -> Result<(), VerifyEmailError> {
        let checked = self.check(user_id, client_id, redirect_uri, lifespan_seconds).await?;
        let mailer = self.mailer.as_ref().ok_or(VerifyEmailError::SmtpNotConfigured)?;
        let now = self.clock.now();
        let key = random_token();
        let hash = token_hash(&key);
        let expires_at = now.saturating_add(i64::try_from(checked.lifespan).unwrap_or(i64::MAX));
        self.store
            .insert_verify_email_token(&NewVerifyEmailToken {
                token_hash: &hash,
                user_id,
                email: &checked.email,
                client_id: checked.client_id.as_deref(),
                redirect_uri: checked.redirect_uri.as_deref(),
                created_at: now,
                expires_at,
            })
            .await?;
        let message = self.message(checked.to, &key, checked.lifespan);
        let sent = mailer.send(message).await;
        let client_id = checked.client_id.as_deref();
        let event = |error| Event::SendVerifyEmail { client_id, user_id, expires_at, error };
        if let Err(err) = sent {
            // The message never left: the link must not outlive it.
            self.store.delete_verify_email_token(&hash).await?;
            let error = Chain(&err).to_string();
            self.audit.event(now, event(Some(error))).await;
            return Err(VerifyEmailError::Send(err));
        }
        self.audit.event(now, event(None)).await;
        Ok(())
    }

    async fn check(
        &self,
        user_id: &str,
        client_id: Option<&str>,
        redirect_uri: Option<&str>,
        lifespan_seconds: Option<u64>,
    ) -> Result<Checked, VerifyEmailError> {
        // Keycloak's order: the user, the address, enabled, then the client and its redirect.
        let user = self.store.find_mailable_user(user_id).await?.ok_or(VerifyEmailError::UserNotFound)?;
        let email = user.email.filter(|e| !e.trim().is_empty()).ok_or(VerifyEmailError::NoEmail)?;
        if !user.enabled {
            return Err(VerifyEmailError::UserDisabled);
        }
        let client = match (client_id, redirect_uri) {
            (None, Some(_)) => return Err(VerifyEmailError::ClientIdMissing),
            (None, None) => None,
            (Some(id), _) => Some(self.clients.find(id).ok_or(VerifyEmailError::UnknownClient)?),
        };
        if let (Some(client), Some(uri)) = (client, redirect_uri)
            && !client.allows_redirect(uri)
        {
            return Err(VerifyEmailError::InvalidRedirectUri);
        }
        let lifespan = lifespan_seconds.unwrap_or(DEFAULT_LIFESPAN_SECONDS);
        if lifespan == 0 || lifespan > MAX_LIFESPAN_SECONDS {
            return Err(VerifyEmailError::InvalidLifespan);
        }
        let to = email.parse::<lettre::Address>().map_err(|_| VerifyEmailError::InvalidEmail)?;
        Ok(Checked {
            to: Mailbox::new(None, to),
            email,
            client_id: client.map(|c| c.client_id.clone()),
            redirect_uri: redirect_uri.map(str::to_owned),
            lifespan,
        })
    }

    /// The message: Keycloak's subject, the link in plain text and in HTML.
    fn message(&self, to: Mailbox, key: &str, lifespan: u64) -> OutgoingMessage {
        let link = format!("{}?key={key}", self.action_url);
        let within = describe_duration(lifespan);
        let realm = &self.realm_name;
        let text = format!(
            "Someone asked to verify this e-mail address for an account of {realm}. If this was you, open the link \
             below to verify your e-mail address.\n\n{link}\n\nThis link will expire within {within}.\n\n\
             If you did not ask for this, you can ignore this message.\n"
        );
        let html = format!(
            "<!doctype html><html><body><p>Someone asked to verify this e-mail address for an account of {realm}. \
             If this was you, open the link below to verify your e-mail address.</p>\
             <p><a href=\"{href}\">Verify e-mail address</a></p><p>This link will expire within {within}.</p>\
             <p>If you did not ask for this, you can ignore this message.</p></body></html>",
            realm = html_escape::encode_text(realm),
            href = html_escape::encode_double_quoted_attribute(&link),
        );
        OutgoingMessage { to, subject: SUBJECT.to_owned(), text, html: Some(html) }
    }

    /// Opens a link: verifies the address it was sent to, once, before it expires. A refused
    /// link names no user, so it is audited as an anonymous failure of `client`'s address.
    pub async fn redeem(&self, key: &str, client: &str) -> Result<Verified, RedeemError> {
        let now = self.clock.now();
        let outcome = self.store.redeem_verify_email_token(&token_hash(key), now).await?;
        let (result, user_id, client_id) = match outcome {
            Redemption::Verified(token) => {
                let verified = token.redirect_uri.map_or(Verified::Done, Verified::Redirect);
                (Ok(verified), Some(token.user_id), token.client_id)
            }
            Redemption::Unknown => (Err(RedeemError::Unknown), None, None),
            Redemption::AlreadyUsed => (Err(RedeemError::AlreadyUsed), None, None),
            Redemption::Expired => (Err(RedeemError::Expired), None, None),
            Redemption::EmailChanged => (Err(RedeemError::EmailChanged), None, None),
            Redemption::UserDisabled => (Err(RedeemError::UserDisabled), None, None),
        };
        let event = Event::VerifyEmail {
            client_id: client_id.as_deref(),
            user_id: user_id.as_deref(),
            refused: result.as_ref().err().map(refusal),
        };
        if result.is_ok() {
            self.audit.event(now, event).await;
        } else {
            self.audit.anonymous_failure(now, event, client).await;
        }
        result
    }
}

fn refusal(err: &RedeemError) -> &'static str {
    match err {
        RedeemError::Unknown => "unknown",
        RedeemError::AlreadyUsed => "already_used",
        RedeemError::Expired => "expired",
        RedeemError::EmailChanged => "email_changed",
        RedeemError::UserDisabled => "user_disabled",
        RedeemError::Store(_) => "store",
    }
}

/// `43200` as `12 hours`, as Keycloak words a link's lifetime.
fn describe_duration(seconds: u64) -> String {
    let unit = |n: u64, one: &str| if n == 1 { format!("1 {one}") } else { format!("{n} {one}s") };
    match seconds {
        s if s % 86_400 == 0 => unit(s / 86_400, "day"),
        s if s % 3600 == 0 => unit(s / 3600, "hour"),
        s if s % 60 == 0 => unit(s / 60, "minute"),
        s => unit(s, "second"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_read_as_keycloak_words_them() {
        for (seconds, expected) in [
            (43_200, "12 hours"),
            (3600, "1 hour"),
            (86_400, "1 day"),
            (172_800, "2 days"),
            (300, "5 minutes"),
            (90, "90 seconds"),
            (1, "1 second"),
        ] {
            assert_eq!(describe_duration(seconds), expected, "{seconds} s");
        }
    }
}
