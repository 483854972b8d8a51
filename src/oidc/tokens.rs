//! The JWTs the broker issues and accepts: access, refresh and ID tokens shaped as Keycloak's.
//!
//! Access, ID and service-account tokens are signed with the realm's public-key algorithm;
//! refresh and offline tokens with its HMAC key (HS512), as Keycloak does, since only the
//! broker checks them. Signing runs on threads of its own, one per core (`crypto::Signers`), so
//! that a burst of grants never holds the async workers that answer everything else.

use std::sync::Arc;

use quick_cache::sync::Cache;

use jsonwebtoken::Validation;
use serde::{Deserialize, Serialize};

use super::keys::{Generation, KeySet};
use crate::crypto::{JwsAlgorithm, Signers, random_token};
use crate::urls::Urls;

pub(crate) const TYP_BEARER: &str = "Bearer";
pub(crate) const TYP_REFRESH: &str = "Refresh";
pub(crate) const TYP_OFFLINE: &str = "Offline";
pub(crate) const TYP_ID: &str = "ID";
pub(crate) const READ_TOKEN_ROLE: &str = "read-token";
/// The audience of service-account tokens: only the internal API accepts them.
pub(crate) const INTERNAL_AUDIENCE: &str = "identity-broker-internal";
/// Keycloak's audience for user access tokens; a token without it is not one of ours.
const BROKER_AUDIENCE: &str = "broker";
/// The audience of the master-realm administrator's tokens, as in Keycloak: only the admin
/// REST API accepts them.
const ADMIN_AUDIENCE: &str = "master-realm";
/// Keycloak's public client for administrators, the one python-keycloak's `KeycloakAdmin` uses.
pub(crate) const ADMIN_CLIENT_ID: &str = "admin-cli";

/// The user facts that go into tokens and userinfo.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct UserClaims {
    pub email: Option<String>,
    pub email_verified: bool,
    pub preferred_username: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub given_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub family_name: Option<String>,
    /// The provider the session signed in through; none (left out) for a password grant's.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub identity_provider: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct AccessClaims {
    pub(crate) exp: i64,
    pub(crate) iat: i64,
    pub(crate) jti: String,
    pub(crate) iss: String,
    pub(crate) aud: Vec<String>,
    pub(crate) sub: String,
    pub(crate) typ: String,
    pub(crate) azp: String,
    pub(crate) sid: String,
    pub(crate) scope: String,
    /// Keycloak's `realm_access`: the user's realm roles when the token was issued.
    #[serde(default)]
    pub(crate) realm_access: RealmAccess,
    pub(crate) resource_access: ResourceAccess,
    /// The same roles as a flat claim, for clients with `roles_claim` (OpenHands' role check).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) roles: Option<Vec<String>>,
    #[serde(flatten)]
    pub(crate) user: UserClaims,
}

/// Keycloak's `realm_access`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct RealmAccess {
    pub(crate) roles: Vec<String>,
}

/// Keycloak's `resource_access`: roles per client; the broker's own are `broker`'s.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct ResourceAccess {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) broker: Option<ClientRoles>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ClientRoles {
    pub(crate) roles: Vec<String>,
}

impl AccessClaims {
    pub(crate) fn has_broker_role(&self, role: &str) -> bool {
        self.resource_access.broker.as_ref().is_some_and(|broker| broker.roles.iter().any(|r| r == role))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RefreshClaims {
    pub(crate) exp: i64,
    pub(crate) iat: i64,
    pub(crate) jti: String,
    pub(crate) iss: String,
    pub(crate) aud: String,
    pub(crate) sub: String,
    pub(crate) typ: String,
    pub(crate) azp: String,
    pub(crate) sid: String,
    pub(crate) scope: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct IdClaims {
    pub(crate) exp: i64,
    pub(crate) iat: i64,
    pub(crate) auth_time: i64,
    pub(crate) jti: String,
    pub(crate) iss: String,
    pub(crate) aud: String,
    pub(crate) sub: String,
    pub(crate) typ: String,
    pub(crate) azp: String,
    pub(crate) sid: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) nonce: Option<String>,
    #[serde(flatten)]
    pub(crate) user: UserClaims,
}

/// An access token from the `client_credentials` grant of a service account.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ServiceClaims {
    pub(crate) exp: i64,
    pub(crate) iat: i64,
    pub(crate) jti: String,
    pub(crate) iss: String,
    pub(crate) aud: String,
    pub(crate) sub: String,
    pub(crate) typ: String,
    pub(crate) azp: String,
    pub(crate) scope: String,
    /// The providers whose tokens the account could read when the token was issued; the
    /// internal API checks the configuration again on every call.
    pub(crate) allowed_providers: Vec<String>,
}

/// An access token of the master realm's administrator (the `password` grant of `admin-cli`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct AdminClaims {
    pub(crate) exp: i64,
    pub(crate) iat: i64,
    pub(crate) jti: String,
    pub(crate) iss: String,
    pub(crate) aud: String,
    pub(crate) sub: String,
    pub(crate) typ: String,
    pub(crate) azp: String,
    pub(crate) sid: String,
    pub(crate) preferred_username: String,
}

/// The administrator's tokens, as the master realm's token endpoint answers them.
#[derive(Debug, Clone)]
pub(crate) struct AdminTokens {
    pub(crate) access_token: String,
    pub(crate) expires_in: i64,
    pub(crate) refresh_token: String,
    pub(crate) refresh_expires_in: i64,
}

/// Lifetimes of the administrator's tokens, in seconds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AdminLifespans {
    pub(crate) access: i64,
    pub(crate) refresh: i64,
}

/// What a session grants: enough to mint any of the three tokens.
#[derive(Debug, Clone)]
pub struct Grant {
    pub user_id: String,
    pub client_id: String,
    pub session_id: String,
    pub scope: String,
    pub nonce: Option<String>,
    pub auth_time: i64,
    pub user: UserClaims,
    /// Whether the access token carries `broker.read-token`.
    pub read_token: bool,
    /// The user's realm roles, default roles included, in name order.
    pub realm_roles: Vec<String>,
    /// Whether the access token carries them as a flat `roles` claim too.
    pub roles_claim: bool,
    /// The refresh token is an offline token (`typ: Offline`) of an offline session.
    pub offline: bool,
}

#[derive(Debug, Clone)]
pub struct IssuedTokens {
    pub access_token: String,
    pub(crate) expires_in: i64,
    pub(crate) refresh_token: String,
    pub(crate) refresh_expires_in: i64,
    pub(crate) id_token: Option<String>,
    pub(crate) scope: String,
    pub(crate) session_id: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("the token is malformed or its signature is invalid")]
    Invalid,
    #[error("the token has expired")]
    Expired,
    #[error("the token is of the wrong type")]
    WrongType,
    #[error("signing failed")]
    Signing,
}

/// Mints and checks the realm's tokens; the issuer is fixed so it never depends on which
/// host name or listener a request came through.
#[derive(Clone)]
pub struct TokenService {
    issuer: String,
    /// The master realm's issuer, `{hostname}/realms/master`: the administrator's tokens.
    master_issuer: String,
    keys: Arc<KeySet>,
    access_lifespan: i64,
    refresh_lifespan: i64,
    offline_lifespan: i64,
    /// Access tokens already checked, with the key that signed them: services and OpenHands
    /// send the same token on every call for its minutes of life, and an RSA check costs more
    /// than the rest of a token read.
    verified_services: Arc<Verified<ServiceClaims>>,
    verified_access: Arc<Verified<AccessClaims>>,
    /// One permit per core: the grants signing at once on the blocking pool.
    signers: Signers,
    verified_admin: Arc<Verified<AdminClaims>>,
}

/// Tokens whose signature, issuer and type were found good, by token, with their key's id;
/// a hit costs two reference counts, no copy.
type Verified<T> = Cache<String, (Arc<str>, Arc<T>)>;

impl std::fmt::Debug for TokenService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenService").field("issuer", &self.issuer).finish_non_exhaustive()
    }
}

/// Tokens remembered as checked, of each kind.
const VERIFIED_TOKENS: usize = 1024;

fn sign<T: Serialize>(key: &crate::crypto::JwsKey, claims: &T) -> Result<String, TokenError> {
    key.sign_jwt(claims).map_err(|_| TokenError::Signing)
}

/// Which keys may have signed a token of a kind: access, ID and service-account tokens come
/// from the public keys only; refresh tokens from the HMAC keys, or from a public key when
/// issued before refresh tokens moved to HS512.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SignedBy {
    PublicKey,
    AnyKey,
}

impl TokenService {
    pub(crate) fn new(
        urls: &Urls,
        keys: Arc<KeySet>,
        access_lifespan: i64,
        refresh_lifespan: i64,
        offline_lifespan: i64,
    ) -> Self {
        TokenService {
            issuer: urls.issuer().to_owned(),
            master_issuer: urls.master_issuer(),
            keys,
            access_lifespan,
            refresh_lifespan,
            offline_lifespan,
            verified_services: Arc::new(Cache::new(VERIFIED_TOKENS)),
            verified_access: Arc::new(Cache::new(VERIFIED_TOKENS)),
            signers: Signers::start(),
            verified_admin: Arc::new(Cache::new(VERIFIED_TOKENS)),
        }
    }

    pub fn keys(&self) -> &KeySet {
        &self.keys
    }

    /// Runs `sign` on a signing thread.
    async fn off_the_workers<R: Send + 'static>(
        &self,
        sign: impl FnOnce(&Generation) -> Result<R, TokenError> + Send + 'static,
    ) -> Result<R, TokenError> {
        // Kids and keys from one read, so a key reload meanwhile cannot mismatch them.
        let keys = self.keys.current();
        self.signers.run(move || sign(&keys)).await.map_err(|_| TokenError::Signing)?
    }

    pub async fn issue(&self, grant: &Grant, now: i64) -> Result<IssuedTokens, TokenError> {
        let access = AccessClaims {
            exp: now + self.access_lifespan,
            iat: now,
            jti: random_token(),
            iss: self.issuer.clone(),
            aud: vec![BROKER_AUDIENCE.to_owned(), "account".to_owned()],
            sub: grant.user_id.clone(),
            typ: TYP_BEARER.to_owned(),
            azp: grant.client_id.clone(),
            sid: grant.session_id.clone(),
            scope: grant.scope.clone(),
            realm_access: RealmAccess { roles: grant.realm_roles.clone() },
            resource_access: ResourceAccess {
                broker: grant.read_token.then(|| ClientRoles { roles: vec![READ_TOKEN_ROLE.to_owned()] }),
            },
            roles: grant.roles_claim.then(|| grant.realm_roles.clone()),
            user: grant.user.clone(),
        };
        let (refresh_typ, refresh_lifespan) =
            if grant.offline { (TYP_OFFLINE, self.offline_lifespan) } else { (TYP_REFRESH, self.refresh_lifespan) };
        let refresh = RefreshClaims {
            exp: now + refresh_lifespan,
            iat: now,
            jti: random_token(),
            iss: self.issuer.clone(),
            aud: self.issuer.clone(),
            sub: grant.user_id.clone(),
            typ: refresh_typ.to_owned(),
            azp: grant.client_id.clone(),
            sid: grant.session_id.clone(),
            scope: grant.scope.clone(),
        };
        let wants_id_token = grant.scope.split_whitespace().any(|s| s == "openid");
        let id = wants_id_token.then(|| IdClaims {
            exp: now + self.access_lifespan,
            iat: now,
            auth_time: grant.auth_time,
            jti: random_token(),
            iss: self.issuer.clone(),
            aud: grant.client_id.clone(),
            sub: grant.user_id.clone(),
            typ: TYP_ID.to_owned(),
            azp: grant.client_id.clone(),
            sid: grant.session_id.clone(),
            nonce: grant.nonce.clone(),
            user: grant.user.clone(),
        });
        let (access_token, refresh_token, id_token) = self
            .off_the_workers(move |keys| {
                let id_token = id.as_ref().map(|id| sign(keys.signer(), id)).transpose()?;
                Ok((sign(keys.signer(), &access)?, sign(keys.refresh_signer(), &refresh)?, id_token))
            })
            .await?;
        Ok(IssuedTokens {
            access_token,
            expires_in: self.access_lifespan,
            refresh_token,
            refresh_expires_in: refresh_lifespan,
            id_token,
            scope: grant.scope.clone(),
            session_id: grant.session_id.clone(),
        })
    }

    /// A short-lived token for a service account; no refresh token, as Keycloak does.
    pub(crate) async fn issue_service_token(
        &self,
        client_id: &str,
        allowed_providers: &[String],
        now: i64,
    ) -> Result<(String, i64), TokenError> {
        let claims = ServiceClaims {
            exp: now + self.access_lifespan,
            iat: now,
            jti: random_token(),
            iss: self.issuer.clone(),
            aud: INTERNAL_AUDIENCE.to_owned(),
            sub: format!("service-account-{client_id}"),
            typ: TYP_BEARER.to_owned(),
            azp: client_id.to_owned(),
            scope: "tokens".to_owned(),
            allowed_providers: allowed_providers.to_vec(),
        };
        let token = self.off_the_workers(move |keys| sign(keys.signer(), &claims)).await?;
        Ok((token, self.access_lifespan))
    }

    /// Signs `claims` with the realm's public key, as refresh tokens were signed before they
    /// moved to HS512: what a database from an earlier release holds.
    #[cfg(feature = "testing")]
    pub fn sign_with_public_key(&self, claims: &serde_json::Value) -> Result<String, TokenError> {
        sign(self.keys.current().signer(), claims)
    }

    /// The administrator's access and refresh tokens for the admin session `session_id`,
    /// issued by the master realm to `admin-cli`.
    pub(crate) async fn issue_admin(
        &self,
        username: &str,
        session_id: &str,
        lifespans: AdminLifespans,
        now: i64,
    ) -> Result<AdminTokens, TokenError> {
        let subject = format!("admin-{username}");
        let access = AdminClaims {
            exp: now + lifespans.access,
            iat: now,
            jti: random_token(),
            iss: self.master_issuer.clone(),
            aud: ADMIN_AUDIENCE.to_owned(),
            sub: subject.clone(),
            typ: TYP_BEARER.to_owned(),
            azp: ADMIN_CLIENT_ID.to_owned(),
            sid: session_id.to_owned(),
            preferred_username: username.to_owned(),
        };
        let refresh = RefreshClaims {
            exp: now + lifespans.refresh,
            iat: now,
            jti: random_token(),
            iss: self.master_issuer.clone(),
            aud: self.master_issuer.clone(),
            sub: subject,
            typ: TYP_REFRESH.to_owned(),
            azp: ADMIN_CLIENT_ID.to_owned(),
            sid: session_id.to_owned(),
            scope: "openid profile email".to_owned(),
        };
        let (access_token, refresh_token) = self
            .off_the_workers(move |keys| Ok((sign(keys.signer(), &access)?, sign(keys.refresh_signer(), &refresh)?)))
            .await?;
        Ok(AdminTokens {
            access_token,
            expires_in: lifespans.access,
            refresh_token,
            refresh_expires_in: lifespans.refresh,
        })
    }

    /// Checks an administrator's access token: signature, the master realm's issuer, audience,
    /// type and expiry.
    pub(crate) fn verify_admin(&self, token: &str, now: i64) -> Result<Arc<AdminClaims>, TokenError> {
        let claims =
            self.verify_remembered(&self.verified_admin, token, &self.master_issuer, |claims: &AdminClaims| {
                claims.typ == TYP_BEARER && claims.aud == ADMIN_AUDIENCE && claims.azp == ADMIN_CLIENT_ID
            })?;
        if claims.exp <= now {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }

    /// Checks an administrator's refresh token: the master realm's, for `admin-cli`, unexpired.
    pub(crate) fn verify_admin_refresh(&self, token: &str, now: i64) -> Result<RefreshClaims, TokenError> {
        let (_, claims): (String, RefreshClaims) = self.verify_signed(token, SignedBy::AnyKey, &self.master_issuer)?;
        if claims.typ != TYP_REFRESH || claims.azp != ADMIN_CLIENT_ID || claims.aud != self.master_issuer {
            return Err(TokenError::WrongType);
        }
        if claims.exp <= now {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }

    /// Checks a service-account token: signature, issuer, audience, type and expiry.
    pub(crate) fn verify_service(&self, token: &str, now: i64) -> Result<Arc<ServiceClaims>, TokenError> {
        let claims =
            self.verify_remembered(&self.verified_services, token, &self.issuer, |claims: &ServiceClaims| {
                claims.typ == TYP_BEARER && claims.aud == INTERNAL_AUDIENCE
            })?;
        if claims.exp <= now {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }

    /// The claims of a token of the kind `is_kind` accepts, signed by one of the realm's keys.
    /// A token found good before is only checked for its key still being known; expiry is
    /// the caller's to check, every time.
    fn verify_remembered<T: serde::de::DeserializeOwned>(
        &self,
        verified: &Verified<T>,
        token: &str,
        issuer: &str,
        is_kind: impl Fn(&T) -> bool,
    ) -> Result<Arc<T>, TokenError> {
        if let Some((kid, claims)) = verified.get(token)
            && self.keys.current().verifier(&kid).is_some()
        {
            return Ok(claims);
        }
        let (kid, claims) = self.verify_signed::<T>(token, SignedBy::PublicKey, issuer)?;
        if !is_kind(&claims) {
            return Err(TokenError::WrongType);
        }
        let claims = Arc::new(claims);
        verified.insert(token.to_owned(), (kid.into(), claims.clone()));
        Ok(claims)
    }

    /// Checks an `id_token_hint`: our signature, our issuer, an ID token. Expiry is not
    /// checked, as in Keycloak: a user may sign out long after signing in.
    pub(crate) fn verify_id_token_hint(&self, token: &str) -> Result<IdClaims, TokenError> {
        let (_, claims): (_, IdClaims) = self.verify_signed(token, SignedBy::PublicKey, &self.issuer)?;
        if claims.typ != TYP_ID {
            return Err(TokenError::WrongType);
        }
        Ok(claims)
    }

    /// Checks signature, issuer, type and expiry against `now`.
    pub(crate) fn verify_access(&self, token: &str, now: i64) -> Result<Arc<AccessClaims>, TokenError> {
        let claims = self.verify_remembered(&self.verified_access, token, &self.issuer, |claims: &AccessClaims| {
            claims.typ == TYP_BEARER && claims.aud.iter().any(|aud| aud == BROKER_AUDIENCE)
        })?;
        if claims.exp <= now {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }

    /// Checks a refresh or offline token's signature, issuer, type and expiry.
    pub(crate) fn verify_refresh(&self, token: &str, now: i64) -> Result<RefreshClaims, TokenError> {
        let (_, claims): (_, RefreshClaims) = self.verify_signed(token, SignedBy::AnyKey, &self.issuer)?;
        if claims.typ != TYP_REFRESH && claims.typ != TYP_OFFLINE {
            return Err(TokenError::WrongType);
        }
        if claims.exp <= now {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }

    /// The claims of a token for `issuer` signed by one of the realm's keys that `signed_by`
    /// allows, with that key's id.
    fn verify_signed<T: serde::de::DeserializeOwned>(
        &self,
        token: &str,
        signed_by: SignedBy,
        issuer: &str,
    ) -> Result<(String, T), TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Invalid)?;
        let kid = header.kid.ok_or(TokenError::Invalid)?;
        let keys = self.keys.current();
        let key = keys.verifier(&kid).ok_or(TokenError::Invalid)?;
        let algorithm: JwsAlgorithm = key.algorithm();
        // The header's `alg` must be the key's own: a public key is never taken as an HMAC
        // secret, nor the HMAC key as anything but HS512.
        if header.alg != algorithm.jsonwebtoken() || (signed_by == SignedBy::PublicKey && !algorithm.is_public()) {
            return Err(TokenError::Invalid);
        }
        let mut validation = Validation::new(header.alg);
        // Expiry is checked against the caller's `now`, not the library's clock.
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        validation.set_issuer(&[issuer]);
        let claims =
            jsonwebtoken::decode::<T>(token, key.decoding(), &validation).map_err(|_| TokenError::Invalid)?.claims;
        Ok((kid, claims))
    }
}
