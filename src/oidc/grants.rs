//! Token-endpoint grants, and the session check behind every token the broker accepts.

use std::sync::Arc;

use crate::config::{ClientSettings, RealmSettings};
use crate::crypto::{PKCE_S256, PasswordError, constant_time_eq, pkce_s256, token_hash};
use crate::store::{CodeRedemption, SessionRow, Store, StoreError, UserRow};

use super::error::OAuthError;
use super::sessions::{Ending, Sessions};
use super::tokens::{
    AccessClaims, Grant, IssuedTokens, RefreshClaims, TYP_OFFLINE, TokenError, TokenService, UserClaims,
};

#[derive(Debug, thiserror::Error)]
pub(crate) enum GrantError {
    #[error(transparent)]
    OAuth(#[from] OAuthError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error(transparent)]
    Password(#[from] PasswordError),
    /// The password grant's one refusal for every wrong name, password or lockout (Keycloak
    /// answers it 401).
    #[error("Invalid user credentials")]
    InvalidUserCredentials,
}

/// The grants the token endpoint serves, by their `grant_type`: one list for its dispatch and
/// for discovery's `grant_types_supported`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GrantType {
    AuthorizationCode,
    RefreshToken,
    /// A service account's token; applications have no service account.
    ClientCredentials,
    /// A user's password, for clients with `direct_access_grants`.
    Password,
}

impl GrantType {
    pub(crate) const ALL: [GrantType; 4] =
        [GrantType::AuthorizationCode, GrantType::RefreshToken, GrantType::ClientCredentials, GrantType::Password];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            GrantType::AuthorizationCode => "authorization_code",
            GrantType::RefreshToken => "refresh_token",
            GrantType::ClientCredentials => "client_credentials",
            GrantType::Password => "password",
        }
    }

    /// The grant a `grant_type` names, if the token endpoint serves it.
    pub(crate) fn from_wire(name: &str) -> Option<GrantType> {
        GrantType::ALL.into_iter().find(|grant| grant.as_str() == name)
    }
}

/// The user facts tokens carry, from the stored profile.
pub(crate) fn user_claims(user: &UserRow, identity_provider: &str) -> UserClaims {
    UserClaims {
        email: user.email.clone(),
        email_verified: user.email_verified,
        preferred_username: user.username.clone(),
        name: user.full_name.clone(),
        given_name: user.first_name.clone(),
        family_name: user.last_name.clone(),
        identity_provider: identity_provider.to_owned(),
    }
}

/// An active token as RFC 7662 describes it: its own claims, and who holds it.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Introspection {
    pub(crate) active: bool,
    pub(crate) client_id: String,
    pub(crate) token_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) username: Option<String>,
    #[serde(flatten)]
    pub(crate) claims: IntrospectedClaims,
}

#[derive(Debug, Clone, serde::Serialize)]
#[serde(untagged)]
pub(crate) enum IntrospectedClaims {
    Access(Box<AccessClaims>),
    Refresh(RefreshClaims),
}

/// True when a scope asks for an offline token.
pub(super) fn wants_offline(scope: &str) -> bool {
    scope.split_whitespace().any(|s| s == OFFLINE_ACCESS)
}

const OFFLINE_ACCESS: &str = "offline_access";

pub(crate) struct CodeExchange<'a> {
    pub(crate) code: &'a str,
    pub(crate) redirect_uri: Option<&'a str>,
    pub(crate) code_verifier: Option<&'a str>,
}

impl std::fmt::Debug for CodeExchange<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CodeExchange").field("redirect_uri", &self.redirect_uri).finish_non_exhaustive()
    }
}

/// The token endpoint's grants over the sessions and the store; cheap to clone (handles).
#[derive(Debug, Clone)]
pub(crate) struct Grants {
    pub(crate) store: Store,
    pub(crate) sessions: Sessions,
    pub(crate) tokens: Arc<TokenService>,
    /// The default roles and the password grant's lockout.
    pub(crate) realm: Arc<RealmSettings>,
}

impl Grants {
    /// `grant_type=authorization_code`: single use, bound to client, redirect URI and PKCE.
    pub(crate) async fn exchange_authorization_code(
        &self,
        client: &ClientSettings,
        exchange: &CodeExchange<'_>,
        now: i64,
    ) -> Result<IssuedTokens, GrantError> {
        let row = match self.store.redeem_authorization_code(&token_hash(exchange.code), now).await? {
            CodeRedemption::Redeemed(row) => row,
            CodeRedemption::Replayed(row) => {
                tracing::warn!(client_id = %row.client_id, session_id = %row.session_id, "authorization code replayed; its session was ended");
                return Err(OAuthError::invalid_grant("Code not valid").into());
            }
            CodeRedemption::Unknown => return Err(OAuthError::invalid_grant("Code not valid").into()),
        };
        if row.expires_at <= now {
            return Err(OAuthError::invalid_grant("Code is expired").into());
        }
        if row.client_id != client.client_id {
            return Err(OAuthError::invalid_grant("Code was issued to another client").into());
        }
        if exchange.redirect_uri != Some(row.redirect_uri.as_str()) {
            return Err(OAuthError::invalid_grant("Incorrect redirect_uri").into());
        }
        verify_pkce(row.code_challenge.as_deref(), row.code_challenge_method.as_deref(), exchange.code_verifier)?;
        let Some(session) = self.sessions.live(&row.session_id, now).await? else {
            return Err(OAuthError::invalid_grant("Session not active").into());
        };
        // `offline_access` opens an offline session beside the browser's SSO session: its
        // tokens outlive logout and the SSO session's limits.
        let session =
            if wants_offline(&row.scope) { self.sessions.start_offline(&session, now).await? } else { session };
        self.issue(client, &session, &row.user_id, &row.scope, row.nonce.clone(), now).await
    }

    /// `grant_type=refresh_token` with Keycloak's semantics: the refresh token stays usable for
    /// the life of its session (OpenHands reuses it from parallel requests), and the new access
    /// token carries the user's current profile.
    ///
    /// A client configured with `rotate_refresh_tokens` gets a new refresh token each time and
    /// the old one is revoked; presenting a revoked one again is taken as theft and ends the
    /// session (reuse detection).
    pub(crate) async fn refresh(
        &self,
        client: &ClientSettings,
        refresh_token: &str,
        now: i64,
    ) -> Result<IssuedTokens, GrantError> {
        let reused = || OAuthError::invalid_grant("Refresh token was already used; the session has been ended");
        if client.rotate_refresh_tokens
            && let Ok(claims) = self.tokens.verify_refresh(refresh_token, now)
            && claims.azp == client.client_id
            && self.store.is_token_revoked(&claims.jti).await?
        {
            self.sessions.end_by_id(&claims.sid, Ending::RefreshTokenReused, Some(&client.client_id), now).await?;
            tracing::warn!(client_id = %client.client_id, session_id = %claims.sid, "a rotated refresh token was reused; its session was ended");
            return Err(reused().into());
        }
        let (claims, session) = self.client_refresh_token(client, refresh_token, now).await?;
        // Two uses racing: only one revokes the token; the other is a reuse.
        if client.rotate_refresh_tokens && !self.store.revoke_token(&claims.jti, claims.exp).await? {
            self.sessions.end(&session, Ending::RefreshTokenReused, Some(&client.client_id), now).await?;
            return Err(reused().into());
        }
        self.sessions.touch(&session, now).await?;
        self.issue(client, &session, &claims.sub, &claims.scope, None, now).await
    }

    /// Back-channel logout: ends the session of a refresh token the client itself holds.
    pub(crate) async fn logout(
        &self,
        client: &ClientSettings,
        refresh_token: &str,
        now: i64,
    ) -> Result<(), GrantError> {
        let (_, session) = self.client_refresh_token(client, refresh_token, now).await?;
        self.sessions.end(&session, Ending::BackChannelLogout, Some(&client.client_id), now).await?;
        Ok(())
    }

    /// RFC 7009: revokes an access or refresh token of this client; unknown or foreign tokens
    /// are ignored, as the RFC asks, so revocation cannot probe for valid tokens.
    pub(crate) async fn revoke(&self, client: &ClientSettings, token: &str, now: i64) -> Result<(), GrantError> {
        if let Ok(claims) = self.tokens.verify_access(token, now) {
            if claims.azp == client.client_id {
                self.store.revoke_token(&claims.jti, claims.exp).await?;
            }
            return Ok(());
        }
        if let Ok(claims) = self.tokens.verify_refresh(token, now)
            && claims.azp == client.client_id
        {
            self.store.revoke_token(&claims.jti, claims.exp).await?;
            // Revoking an offline token ends its offline session, as in Keycloak.
            if claims.typ == TYP_OFFLINE {
                self.sessions.end_by_id(&claims.sid, Ending::OfflineTokenRevoked, Some(&client.client_id), now).await?;
            }
        }
        Ok(())
    }

    /// RFC 7662: what an active token says about itself; `None` when it is not active.
    pub(crate) async fn introspect(&self, token: &str, now: i64) -> Result<Option<Introspection>, StoreError> {
        if let Some(claims) = self.authenticate_bearer(token, now).await? {
            return Ok(Some(Introspection {
                active: true,
                client_id: claims.azp.clone(),
                token_type: "Bearer".to_owned(),
                username: Some(claims.user.preferred_username.clone()),
                claims: IntrospectedClaims::Access(Box::new(AccessClaims::clone(&claims))),
            }));
        }
        Ok(self.live_refresh_token(token, now).await?.map(|(claims, _)| Introspection {
            active: true,
            client_id: claims.azp.clone(),
            token_type: claims.typ.clone(),
            username: None,
            claims: IntrospectedClaims::Refresh(claims),
        }))
    }

    /// What userinfo answers for a bearer access token: the user's id and current claims, and
    /// the current realm roles when the token carries a flat `roles` claim (its client's
    /// `roles_claim`).
    pub(crate) async fn userinfo(
        &self,
        bearer: &str,
        now: i64,
    ) -> Result<Option<(String, UserClaims, Option<Vec<String>>)>, StoreError> {
        let Some(claims) = self.authenticate_bearer(bearer, now).await? else {
            return Ok(None);
        };
        let Some(user) = self.store.find_user(&claims.sub).await?.filter(|user| user.enabled) else {
            return Ok(None);
        };
        let roles = match claims.roles {
            Some(_) => Some(self.realm_roles(&user.id).await?),
            None => None,
        };
        let current = user_claims(&user, &claims.user.identity_provider);
        Ok(Some((user.id, current, roles)))
    }

    /// The user's realm roles: the realm's default roles and those stored for the user, in
    /// name order, once each.
    pub(crate) async fn realm_roles(&self, user_id: &str) -> Result<Vec<String>, StoreError> {
        Ok(self.realm.with_default_roles(self.store.user_roles(user_id).await?))
    }

    /// A bearer access token that is valid now, not revoked, and whose session is still live.
    /// Its signature may have been checked before (`TokenService`), its revocation is asked
    /// about on every use.
    pub(crate) async fn authenticate_bearer(
        &self,
        bearer: &str,
        now: i64,
    ) -> Result<Option<Arc<AccessClaims>>, StoreError> {
        let Ok(claims) = self.tokens.verify_access(bearer, now) else {
            return Ok(None);
        };
        if self.sessions.live(&claims.sid, now).await?.is_none() || self.store.is_token_revoked(&claims.jti).await? {
            return Ok(None);
        }
        Ok(Some(claims))
    }

    /// A refresh token that is signed, unexpired, not revoked and whose session is live.
    async fn live_refresh_token(
        &self,
        token: &str,
        now: i64,
    ) -> Result<Option<(RefreshClaims, Arc<SessionRow>)>, StoreError> {
        let Ok(claims) = self.tokens.verify_refresh(token, now) else {
            return Ok(None);
        };
        if self.store.is_token_revoked(&claims.jti).await? {
            return Ok(None);
        }
        Ok(self.sessions.live(&claims.sid, now).await?.map(|session| (claims, session)))
    }

    /// A live refresh token that was issued to `client`, or `invalid_grant`.
    async fn client_refresh_token(
        &self,
        client: &ClientSettings,
        refresh_token: &str,
        now: i64,
    ) -> Result<(RefreshClaims, Arc<SessionRow>), GrantError> {
        match self.live_refresh_token(refresh_token, now).await? {
            Some((claims, session)) if claims.azp == client.client_id => Ok((claims, session)),
            Some(_) => {
                Err(OAuthError::invalid_grant("Invalid refresh token. Token client and authorized client don't match")
                    .into())
            }
            None => Err(OAuthError::invalid_grant("Invalid refresh token").into()),
        }
    }

    /// Mints tokens for `user_id` in `session`, from the user's current profile.
    pub(super) async fn issue(
        &self,
        client: &ClientSettings,
        session: &SessionRow,
        user_id: &str,
        scope: &str,
        nonce: Option<String>,
        now: i64,
    ) -> Result<IssuedTokens, GrantError> {
        let user = self.store.find_user(user_id).await?.ok_or_else(|| OAuthError::invalid_grant("User not found"))?;
        if !user.enabled {
            // Keycloak's words: a disabled user's sessions yield no more tokens.
            return Err(OAuthError::invalid_grant("Account disabled").into());
        }
        let grant = Grant {
            user_id: user.id.clone(),
            client_id: client.client_id.clone(),
            session_id: session.id.clone(),
            scope: scope.to_owned(),
            nonce,
            auth_time: session.created_at,
            user: user_claims(&user, &session.identity_provider),
            read_token: client.read_token,
            realm_roles: self.realm_roles(&user.id).await?,
            roles_claim: client.roles_claim,
            offline: session.offline,
        };
        Ok(self.tokens.issue(&grant, now).await?)
    }
}

/// RFC 7636 §4.6, and RFC 9700 §4.8.2: a verifier for a code requested without a challenge
/// is refused, or an attacker could swap in a code of their own (a PKCE downgrade).
fn verify_pkce(challenge: Option<&str>, method: Option<&str>, verifier: Option<&str>) -> Result<(), OAuthError> {
    let (challenge, verifier) = match (challenge, verifier) {
        (None, None) => return Ok(()),
        (None, Some(_)) => {
            return Err(OAuthError::invalid_grant(
                "PKCE code verifier specified but challenge not present in authorization",
            ));
        }
        (Some(_), None) => return Err(OAuthError::invalid_grant("PKCE code verifier not specified")),
        (Some(challenge), Some(verifier)) => (challenge, verifier),
    };
    if !(43..=128).contains(&verifier.len()) {
        return Err(OAuthError::invalid_grant("PKCE verification failed: invalid code verifier"));
    }
    let computed = match method {
        Some(PKCE_S256) => pkce_s256(verifier),
        _ => verifier.to_owned(),
    };
    if constant_time_eq(&computed, challenge) {
        Ok(())
    } else {
        Err(OAuthError::invalid_grant("PKCE verification failed: code verifier does not match"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_is_checked_when_a_challenge_was_sent() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWjOEjXk";
        let challenge = "VYFANLqdx_HDV6BqEhluZJ63rtrIPROSSFdB3P6G83I";
        assert!(verify_pkce(None, None, None).is_ok(), "no challenge, no check");
        assert!(verify_pkce(None, None, Some(verifier)).is_err(), "a verifier without a challenge: a downgrade");
        assert!(verify_pkce(Some(challenge), Some("S256"), Some(verifier)).is_ok());
        let bad = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWjOEjXX";
        assert!(verify_pkce(Some(challenge), Some("S256"), Some(bad)).is_err(), "wrong verifier");
        assert!(verify_pkce(Some(challenge), Some("S256"), None).is_err(), "missing verifier");
        assert!(verify_pkce(Some(verifier), Some("plain"), Some(verifier)).is_ok(), "plain method");
    }
}
