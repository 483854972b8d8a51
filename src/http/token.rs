//! The token endpoint, userinfo, introspection and revocation: the OAuth client's surface.

use axum::Json;
use axum::extract::{FromRef, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use super::admin::{MasterTokenRequest, master_token};
use super::client_address::ClientAddress;
use super::params::{Bearer, Form, OAuth, form_bearer};
use super::realm::{OwnRealm, TokenRealm};
use super::{AppError, AppState, error::no_store};
use crate::clock::Clock;
use crate::config::ClientSettings;
use crate::oidc::admin::AdminRequest;
use crate::oidc::clients::{
    ClientRegistry, IntrospectionRefusal, PresentedCredentials, ServiceAccountRegistry, may_introspect,
};
use crate::oidc::error::{ErrorCode, OAuthError};
use crate::oidc::grants::{CodeExchange, GrantType, Grants};
use crate::oidc::password_grant::PasswordRequest;
use crate::oidc::tokens::{IssuedTokens, UserClaims};

/// What the token endpoint and its siblings use.
#[derive(Debug, Clone)]
pub(crate) struct TokenEndpoint {
    clients: ClientRegistry,
    accounts: ServiceAccountRegistry,
    grants: Grants,
    clock: Clock,
}

impl FromRef<AppState> for TokenEndpoint {
    fn from_ref(state: &AppState) -> Self {
        TokenEndpoint {
            clients: FromRef::from_ref(state),
            accounts: FromRef::from_ref(state),
            grants: FromRef::from_ref(state),
            clock: FromRef::from_ref(state),
        }
    }
}

/// Every parameter the token endpoint and its siblings read, the master realm's `admin-cli`
/// included.
#[derive(Default, Deserialize)]
pub(crate) struct TokenForm {
    pub(super) grant_type: Option<String>,
    pub(super) client_id: Option<String>,
    client_secret: Option<String>,
    code: Option<String>,
    redirect_uri: Option<String>,
    code_verifier: Option<String>,
    pub(super) refresh_token: Option<String>,
    /// Introspection and revocation: the token in question.
    token: Option<String>,
    /// The password grant's, and the master realm's.
    pub(super) username: Option<String>,
    pub(super) password: Option<String>,
    /// The password grant's scope (`offline_access` for an offline token).
    scope: Option<String>,
}

debug_showing!(TokenForm { grant_type, client_id, redirect_uri });

/// The answer to a user's grant, as Keycloak shapes it.
#[derive(Debug, Serialize)]
struct TokenResponse<'a> {
    access_token: &'a str,
    expires_in: i64,
    refresh_expires_in: i64,
    refresh_token: &'a str,
    token_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id_token: Option<&'a str>,
    #[serde(rename = "not-before-policy")]
    not_before_policy: i64,
    session_state: &'a str,
    scope: &'a str,
}

/// A service account's token: no refresh token, as Keycloak does.
#[derive(Debug, Serialize)]
struct ServiceTokenResponse {
    access_token: String,
    expires_in: i64,
    refresh_expires_in: i64,
    token_type: &'static str,
    #[serde(rename = "not-before-policy")]
    not_before_policy: i64,
    scope: &'static str,
}

#[derive(Debug, Serialize)]
struct Userinfo<'a> {
    sub: &'a str,
    #[serde(flatten)]
    claims: &'a UserClaims,
    #[serde(skip_serializing_if = "Option::is_none")]
    roles: Option<&'a [String]>,
}

#[derive(Debug, Serialize)]
struct Inactive {
    active: bool,
}

fn token_response(issued: &IssuedTokens) -> Response {
    let body = TokenResponse {
        access_token: &issued.access_token,
        expires_in: issued.expires_in,
        refresh_expires_in: issued.refresh_expires_in,
        refresh_token: &issued.refresh_token,
        token_type: "Bearer",
        id_token: issued.id_token.as_deref(),
        not_before_policy: 0,
        session_state: &issued.session_id,
        scope: &issued.scope,
    };
    (StatusCode::OK, no_store(), Json(body)).into_response()
}

fn invalid_request(message: impl ToString) -> AppError {
    AppError::oauth(OAuthError::invalid_request(message.to_string()))
}

/// A required parameter, or `invalid_request` naming it as Keycloak does.
fn required<'a>(value: &'a Option<String>, name: &str) -> Result<&'a str, AppError> {
    value.as_deref().ok_or_else(|| invalid_request(format!("Missing parameter: {name}")))
}

/// The client credentials of a request, by `client_secret_basic` or `client_secret_post` (the
/// form's `client_id` and `client_secret`).
fn presented_credentials(
    headers: &HeaderMap,
    client_id: Option<&str>,
    client_secret: Option<&str>,
) -> Result<PresentedCredentials, AppError> {
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    PresentedCredentials::from_parts(authorization, client_id, client_secret).map_err(invalid_request)
}

fn invalid_client(credentials: &PresentedCredentials) -> AppError {
    AppError::OAuth {
        status: StatusCode::UNAUTHORIZED,
        error: OAuthError::invalid_client(),
        basic_challenge: credentials.via_basic,
    }
}

/// Authenticates the calling client application.
pub(super) fn authenticate_client<'a>(
    clients: &'a ClientRegistry,
    headers: &HeaderMap,
    client_id: Option<&str>,
    client_secret: Option<&str>,
) -> Result<&'a ClientSettings, AppError> {
    let credentials = presented_credentials(headers, client_id, client_secret)?;
    clients.authenticate(&credentials).ok_or_else(|| invalid_client(&credentials))
}

impl TokenEndpoint {
    fn authenticate_client(&self, headers: &HeaderMap, form: &TokenForm) -> Result<&ClientSettings, AppError> {
        authenticate_client(&self.clients, headers, form.client_id.as_deref(), form.client_secret.as_deref())
    }

    /// `grant_type=client_credentials`: a service account's short-lived token for the internal
    /// API. Client applications have no service account, as in Keycloak by default.
    async fn client_credentials(&self, headers: &HeaderMap, form: &TokenForm) -> Result<Response, AppError> {
        let credentials = presented_credentials(headers, form.client_id.as_deref(), form.client_secret.as_deref())?;
        let Some(account) = self.accounts.authenticate(&credentials) else {
            if self.clients.authenticate(&credentials).is_some() {
                return Err(AppError::oauth(OAuthError::new(
                    ErrorCode::UnauthorizedClient,
                    "Client not enabled to retrieve service account",
                )));
            }
            return Err(invalid_client(&credentials));
        };
        let (access_token, expires_in) = self
            .grants
            .tokens
            .issue_service_token(&account.client_id, &account.allowed_providers, self.clock.now())
            .await
            .map_err(AppError::internal)?;
        let body = ServiceTokenResponse {
            access_token,
            expires_in,
            refresh_expires_in: 0,
            token_type: "Bearer",
            not_before_policy: 0,
            scope: "tokens",
        };
        Ok((StatusCode::OK, no_store(), Json(body)).into_response())
    }
}

pub(crate) async fn token(
    State(endpoint): State<TokenEndpoint>,
    realm: TokenRealm,
    client: ClientAddress,
    headers: HeaderMap,
    Form(form, _): Form<TokenForm, OAuth>,
) -> Result<Response, AppError> {
    if let TokenRealm::Master(admin) = realm {
        let client = client.budget_key();
        let request = AdminRequest {
            store: &endpoint.grants.store,
            tokens: &endpoint.grants.tokens,
            client: &client,
            now: endpoint.clock.now(),
        };
        let master = MasterTokenRequest {
            client_id: form.client_id.as_deref(),
            grant_type: form.grant_type.as_deref(),
            username: form.username.as_deref(),
            password: form.password.as_deref(),
            refresh_token: form.refresh_token.as_deref(),
        };
        return master_token(&admin, request, master).await;
    }
    // The grant type is checked before the client, as Keycloak does.
    let grant_type = match form.grant_type.as_deref() {
        Some(name) => GrantType::from_wire(name).ok_or_else(|| {
            AppError::oauth(OAuthError::new(ErrorCode::UnsupportedGrantType, "Unsupported grant_type"))
        })?,
        None => return Err(invalid_request("Missing form parameter: grant_type")),
    };
    let now = endpoint.clock.now();
    let issued = match grant_type {
        GrantType::ClientCredentials => return endpoint.client_credentials(&headers, &form).await,
        GrantType::AuthorizationCode => {
            let client = endpoint.authenticate_client(&headers, &form)?;
            let exchange = CodeExchange {
                code: required(&form.code, "code")?,
                redirect_uri: form.redirect_uri.as_deref(),
                code_verifier: form.code_verifier.as_deref(),
            };
            endpoint.grants.exchange_authorization_code(client, &exchange, now).await?
        }
        GrantType::RefreshToken => {
            let client = endpoint.authenticate_client(&headers, &form)?;
            let token = required(&form.refresh_token, "refresh_token")?;
            endpoint.grants.refresh(client, token, now).await?
        }
        GrantType::Password => {
            let client = endpoint.authenticate_client(&headers, &form)?;
            // A missing name or password is a wrong one, as Keycloak answers it.
            let request = PasswordRequest {
                username: form.username.as_deref().unwrap_or_default(),
                password: SecretString::from(form.password.clone().unwrap_or_default()),
                scope: form.scope.as_deref(),
            };
            endpoint.grants.password(client, request, now).await?
        }
    };
    Ok(token_response(&issued))
}

#[derive(Default, Deserialize)]
pub(crate) struct UserinfoForm {
    access_token: Option<String>,
}

debug_showing!(UserinfoForm {});

/// Claims for a bearer access token, from the user's current profile. The token comes in the
/// `Authorization` header or, for a POST, as `access_token` in the form (RFC 6750 §2.2).
pub(crate) async fn userinfo(
    _: OwnRealm,
    State(endpoint): State<TokenEndpoint>,
    Bearer(bearer): Bearer,
    headers: HeaderMap,
    form: Option<Form<UserinfoForm, OAuth>>,
) -> Result<Response, AppError> {
    let invalid =
        |description: &str| AppError::Bearer { error: ErrorCode::InvalidToken, description: description.to_owned() };
    let token = match bearer {
        Some(token) => token,
        None if headers.contains_key(header::AUTHORIZATION) => return Err(invalid("Token not provided")),
        None => {
            let access_token = form.and_then(|Form(form, _)| form.access_token);
            form_bearer(access_token).ok_or_else(|| invalid("Token not provided"))?
        }
    };
    let (user_id, claims, roles) = endpoint
        .grants
        .userinfo(&token, endpoint.clock.now())
        .await?
        .ok_or_else(|| invalid("Token verification failed"))?;
    let body = Userinfo { sub: &user_id, claims: &claims, roles: roles.as_deref() };
    Ok((no_store(), Json(body)).into_response())
}

/// RFC 7662 introspection, for confidential clients and service accounts; inactive tokens
/// answer 200 `{"active": false}`.
pub(crate) async fn introspect(
    _: OwnRealm,
    State(endpoint): State<TokenEndpoint>,
    headers: HeaderMap,
    Form(form, _): Form<TokenForm, OAuth>,
) -> Result<Response, AppError> {
    let credentials = presented_credentials(&headers, form.client_id.as_deref(), form.client_secret.as_deref())?;
    match may_introspect(&endpoint.clients, &endpoint.accounts, &credentials) {
        Ok(()) => {}
        Err(IntrospectionRefusal::Unauthenticated) => return Err(invalid_client(&credentials)),
        // Keycloak's answer to a public client.
        Err(IntrospectionRefusal::PublicClient) => {
            return Err(AppError::OAuth {
                status: StatusCode::FORBIDDEN,
                error: OAuthError::invalid_request("Client not allowed."),
                basic_challenge: false,
            });
        }
    }
    let token = form.token.as_deref().unwrap_or_default();
    Ok(match endpoint.grants.introspect(token, endpoint.clock.now()).await? {
        Some(active) => (no_store(), Json(active)).into_response(),
        None => (no_store(), Json(Inactive { active: false })).into_response(),
    })
}

/// RFC 7009 revocation of access and refresh tokens; answers 200 whether or not the token was
/// known.
pub(crate) async fn revoke(
    _: OwnRealm,
    State(endpoint): State<TokenEndpoint>,
    headers: HeaderMap,
    Form(form, _): Form<TokenForm, OAuth>,
) -> Result<Response, AppError> {
    let client = endpoint.authenticate_client(&headers, &form)?;
    let token = required(&form.token, "token")?;
    endpoint.grants.revoke(client, token, endpoint.clock.now()).await?;
    Ok(StatusCode::OK.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::params::parse;

    #[test]
    fn debug_output_never_shows_secrets_codes_or_tokens() {
        let raw = b"grant_type=authorization_code&client_id=app&client_secret=s3cret&code=c0de&code_verifier=v3rifier\
                    &refresh_token=r3fresh&token=t0ken&password=p4ssword";
        let form: TokenForm = parse(raw).expect("parses");
        let shown = format!("{form:?}");
        assert!(shown.contains("authorization_code") && shown.contains("app"), "{shown}");
        for secret in ["s3cret", "c0de", "v3rifier", "r3fresh", "t0ken", "p4ssword"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
    }
}
