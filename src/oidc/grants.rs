//! Token-endpoint grants and the session checks behind every token the broker accepts.

use crate::config::{ClientSettings, RealmSettings};
use crate::crypto::{constant_time_eq, pkce_s256, token_hash};
use crate::store::{CodeRedemption, SessionRow, Store, StoreError, UserRow};

use super::error::OAuthError;
use super::tokens::{AccessClaims, Grant, IssuedTokens, RefreshClaims, TokenError, TokenService, UserClaims};

#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    #[error(transparent)]
    OAuth(#[from] OAuthError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Token(#[from] TokenError),
}

/// The user facts tokens carry, from the stored profile.
pub fn user_claims(user: &UserRow, identity_provider: &str) -> UserClaims {
    UserClaims {
        email: user.email.clone(),
        email_verified: user.email_verified != 0,
        preferred_username: user.username.clone(),
        name: user.full_name.clone(),
        given_name: user.first_name.clone(),
        family_name: user.last_name.clone(),
        identity_provider: identity_provider.to_owned(),
    }
}

/// True while the SSO session is neither ended nor past its idle or maximum lifetime.
pub fn session_is_live(session: &SessionRow, realm: &RealmSettings, now: i64) -> bool {
    session.ended_at.is_none()
        && now < session.last_seen_at + realm.sso_session_idle_seconds
        && now < session.created_at + realm.sso_session_max_seconds
}

pub struct CodeExchange<'a> {
    pub code: &'a str,
    pub redirect_uri: Option<&'a str>,
    pub code_verifier: Option<&'a str>,
}

impl std::fmt::Debug for CodeExchange<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CodeExchange").field("redirect_uri", &self.redirect_uri).finish_non_exhaustive()
    }
}

/// `grant_type=authorization_code`: single use, bound to client, redirect URI and PKCE.
pub async fn exchange_authorization_code(
    store: &Store,
    tokens: &TokenService,
    realm: &RealmSettings,
    client: &ClientSettings,
    exchange: &CodeExchange<'_>,
    now: i64,
) -> Result<IssuedTokens, GrantError> {
    let refused = || OAuthError::invalid_grant("Code not valid");
    let row = match store.redeem_authorization_code(&token_hash(exchange.code), now).await? {
        CodeRedemption::Redeemed(row) => row,
        CodeRedemption::Replayed(row) => {
            tracing::warn!(client_id = %row.client_id, session_id = %row.session_id, "authorization code replayed; its session was ended");
            return Err(OAuthError::invalid_grant("Code not valid").into());
        }
        CodeRedemption::Unknown => return Err(refused().into()),
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
    let session = store.find_session(&row.session_id).await?.filter(|s| session_is_live(s, realm, now));
    let Some(session) = session else {
        return Err(OAuthError::invalid_grant("Session not active").into());
    };
    let user = store.find_user(&row.user_id).await?.ok_or_else(|| OAuthError::invalid_grant("User not found"))?;
    let grant = Grant {
        user_id: user.id.clone(),
        client_id: client.client_id.clone(),
        session_id: session.id.clone(),
        scope: row.scope.clone(),
        nonce: row.nonce.clone(),
        auth_time: session.created_at,
        user: user_claims(&user, &session.identity_provider),
    };
    Ok(tokens.issue(&grant, now)?)
}

/// A refresh token that is signed, unexpired, not revoked and whose session is live.
async fn live_refresh_token(
    store: &Store,
    tokens: &TokenService,
    realm: &RealmSettings,
    token: &str,
    now: i64,
) -> Result<Option<(RefreshClaims, SessionRow)>, StoreError> {
    let Ok(claims) = tokens.verify_refresh(token, now) else {
        return Ok(None);
    };
    if store.is_token_revoked(&claims.jti).await? {
        return Ok(None);
    }
    let session = store.find_session(&claims.sid).await?.filter(|s| session_is_live(s, realm, now));
    Ok(session.map(|session| (claims, session)))
}

/// A live refresh token that was issued to `client`, or `invalid_grant`.
async fn client_refresh_token(
    store: &Store,
    tokens: &TokenService,
    realm: &RealmSettings,
    client: &ClientSettings,
    refresh_token: &str,
    now: i64,
) -> Result<(RefreshClaims, SessionRow), GrantError> {
    let Some((claims, session)) = live_refresh_token(store, tokens, realm, refresh_token, now).await? else {
        return Err(OAuthError::invalid_grant("Invalid refresh token").into());
    };
    if claims.azp != client.client_id {
        return Err(
            OAuthError::invalid_grant("Invalid refresh token. Token client and authorized client don't match").into()
        );
    }
    Ok((claims, session))
}

/// `grant_type=refresh_token` with Keycloak's semantics: the refresh token stays usable for
/// the life of its session (OpenHands reuses it from parallel requests), and the new access
/// token carries the user's current profile.
pub async fn refresh(
    store: &Store,
    tokens: &TokenService,
    realm: &RealmSettings,
    client: &ClientSettings,
    refresh_token: &str,
    now: i64,
) -> Result<IssuedTokens, GrantError> {
    let (claims, session) = client_refresh_token(store, tokens, realm, client, refresh_token, now).await?;
    let user = store.find_user(&claims.sub).await?.ok_or_else(|| OAuthError::invalid_grant("User not found"))?;
    store.touch_session(&session.id, now).await?;
    let grant = Grant {
        user_id: user.id.clone(),
        client_id: client.client_id.clone(),
        session_id: session.id.clone(),
        scope: claims.scope.clone(),
        nonce: None,
        auth_time: session.created_at,
        user: user_claims(&user, &session.identity_provider),
    };
    Ok(tokens.issue(&grant, now)?)
}

/// Back-channel logout: ends the session of a refresh token the client itself holds.
pub async fn logout(
    store: &Store,
    tokens: &TokenService,
    realm: &RealmSettings,
    client: &ClientSettings,
    refresh_token: &str,
    now: i64,
) -> Result<(), GrantError> {
    let (_, session) = client_refresh_token(store, tokens, realm, client, refresh_token, now).await?;
    store.end_session(&session.id, now).await?;
    Ok(())
}

/// RFC 7009: revokes a refresh token of this client; unknown or foreign tokens are ignored,
/// as the RFC asks, so revocation cannot probe for valid tokens.
pub async fn revoke(
    store: &Store,
    tokens: &TokenService,
    client: &ClientSettings,
    token: &str,
    now: i64,
) -> Result<(), GrantError> {
    if let Ok(claims) = tokens.verify_refresh(token, now)
        && claims.azp == client.client_id
    {
        store.revoke_token(&claims.jti, claims.exp).await?;
    }
    Ok(())
}

/// RFC 7662: what an active token says about itself; `None` when it is not active.
pub async fn introspect(
    store: &Store,
    tokens: &TokenService,
    realm: &RealmSettings,
    token: &str,
    now: i64,
) -> Result<Option<serde_json::Value>, StoreError> {
    if let Some(claims) = authenticate_bearer(store, tokens, realm, token, now).await? {
        let mut body = serde_json::to_value(&claims).unwrap_or_default();
        body["active"] = serde_json::Value::Bool(true);
        body["client_id"] = serde_json::Value::String(claims.azp.clone());
        body["username"] = serde_json::Value::String(claims.user.preferred_username.clone());
        body["token_type"] = serde_json::Value::String("Bearer".into());
        return Ok(Some(body));
    }
    if let Some((claims, _)) = live_refresh_token(store, tokens, realm, token, now).await? {
        let mut body = serde_json::to_value(&claims).unwrap_or_default();
        body["active"] = serde_json::Value::Bool(true);
        body["client_id"] = serde_json::Value::String(claims.azp.clone());
        body["token_type"] = serde_json::Value::String(claims.typ.clone());
        return Ok(Some(body));
    }
    Ok(None)
}

fn verify_pkce(challenge: Option<&str>, method: Option<&str>, verifier: Option<&str>) -> Result<(), OAuthError> {
    let Some(challenge) = challenge else {
        return Ok(());
    };
    let verifier = verifier.ok_or_else(|| OAuthError::invalid_grant("PKCE code verifier not specified"))?;
    if !(43..=128).contains(&verifier.len()) {
        return Err(OAuthError::invalid_grant("PKCE verification failed: invalid code verifier"));
    }
    let computed = match method {
        Some("S256") => pkce_s256(verifier),
        _ => verifier.to_owned(),
    };
    if constant_time_eq(&computed, challenge) {
        Ok(())
    } else {
        Err(OAuthError::invalid_grant("PKCE verification failed: code verifier does not match"))
    }
}

/// A bearer access token that is valid now and whose session is still live.
pub async fn authenticate_bearer(
    store: &Store,
    tokens: &TokenService,
    realm: &RealmSettings,
    bearer: &str,
    now: i64,
) -> Result<Option<AccessClaims>, StoreError> {
    let Ok(claims) = tokens.verify_access(bearer, now) else {
        return Ok(None);
    };
    let live = store.find_session(&claims.sid).await?.is_some_and(|s| session_is_live(&s, realm, now));
    Ok(live.then_some(claims))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_is_checked_when_a_challenge_was_sent() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWjOEjXk";
        let challenge = "VYFANLqdx_HDV6BqEhluZJ63rtrIPROSSFdB3P6G83I";
        assert!(verify_pkce(None, None, None).is_ok(), "no challenge, no check");
        assert!(verify_pkce(Some(challenge), Some("S256"), Some(verifier)).is_ok());
        let bad = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWjOEjXX";
        assert!(verify_pkce(Some(challenge), Some("S256"), Some(bad)).is_err(), "wrong verifier");
        assert!(verify_pkce(Some(challenge), Some("S256"), None).is_err(), "missing verifier");
        assert!(verify_pkce(Some(verifier), Some("plain"), Some(verifier)).is_ok(), "plain method");
    }
}
