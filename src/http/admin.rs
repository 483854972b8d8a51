//! Keycloak's admin REST API as OpenHands calls it through python-keycloak's `KeycloakAdmin`:
//! the master realm's `admin-cli` sign-in and logout, the realm, its roles, and users (search,
//! count, create, read, change, delete, password, identities, logout, realm roles). Mounted only
//! when `admin.password` is set. `admin_openapi.json` beside this file describes it; a test holds
//! it against the router.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRef, FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::error::no_store;
use super::params::{Bearer, Keycloak, Query};
use super::{About, AppError, AppState, paths};
use crate::audit::{AuditLog, Event};
use crate::clock::Clock;
use crate::config::{AdminRole, RealmSettings, ServiceAccountSettings};
use crate::directory::{
    CredentialRequest, Directory, PageParams, RoleRequest, SearchParams, UserCreation, UserUpdate, WriteError,
    role_names,
};
use crate::oidc::admin::{AdminGrantError, AdminRequest, AdminSignIn};
use crate::oidc::clients::ServiceAccountRegistry;
use crate::oidc::error::{ErrorCode, OAuthError};
use crate::oidc::sessions::{Ending, Sessions};
use crate::oidc::tokens::{ADMIN_CLIENT_ID, AdminTokens, TokenService};
use crate::store::{ChangeWrite, Creation, DirectoryUser, IdentityKey, IdentityRow, Store, StoreError};
use crate::telemetry::Chain;
use crate::vault::{TokenReader, TokenVault, VaultError};
use crate::verification::{EmailVerification, VerifyEmailError};

/// The admin API's routes, for the public listener.
pub(crate) fn router() -> axum::Router<AppState> {
    use super::paths;
    use axum::routing::{get, post, put};
    axum::Router::new()
        .route(paths::ADMIN_REALM, get(realm))
        .route(paths::ADMIN_USERS, get(list_users).post(create_user))
        .route(paths::ADMIN_USERS_COUNT, get(count_users))
        .route(paths::ADMIN_USER, get(get_user).put(update_user).delete(delete_user))
        .route(paths::ADMIN_USER_IDENTITIES, get(list_identities))
        .route(paths::ADMIN_USER_IDENTITY, post(link_identity).delete(unlink_identity))
        .route(paths::ADMIN_USER_LOGOUT, post(logout_user))
        .route(paths::ADMIN_USER_SEND_VERIFY_EMAIL, put(send_verify_email))
        .route(paths::ADMIN_USER_RESET_PASSWORD, put(reset_password))
        .route(
            paths::ADMIN_USER_REALM_ROLES,
            get(user_role_mappings).post(add_role_mappings).delete(delete_role_mappings),
        )
        .route(paths::ADMIN_ROLES, get(list_roles))
        .route(paths::ADMIN_ROLE_USERS, get(role_users))
}

/// What the admin API's endpoints use.
#[derive(Debug, Clone)]
pub(crate) struct AdminApi {
    realm: Arc<RealmSettings>,
    store: Store,
    directory: Directory,
    sessions: Sessions,
    vault: TokenVault,
    email_verification: Arc<EmailVerification>,
    audit: AuditLog,
    clock: Clock,
    about: Arc<About>,
}

impl FromRef<AppState> for AdminApi {
    fn from_ref(state: &AppState) -> Self {
        AdminApi {
            realm: FromRef::from_ref(state),
            store: FromRef::from_ref(state),
            directory: FromRef::from_ref(state),
            sessions: FromRef::from_ref(state),
            vault: FromRef::from_ref(state),
            email_verification: FromRef::from_ref(state),
            audit: FromRef::from_ref(state),
            clock: FromRef::from_ref(state),
            about: FromRef::from_ref(state),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The master realm's token endpoint for `admin-cli`.

/// The master realm's token answer, as Keycloak shapes it.
#[derive(Debug, Serialize)]
struct AdminTokenResponse<'a> {
    access_token: &'a str,
    expires_in: i64,
    refresh_expires_in: i64,
    refresh_token: &'a str,
    token_type: &'static str,
    #[serde(rename = "not-before-policy")]
    not_before_policy: i64,
    scope: &'static str,
}

fn admin_token_response(tokens: &AdminTokens) -> Response {
    let body = AdminTokenResponse {
        access_token: &tokens.access_token,
        expires_in: tokens.expires_in,
        refresh_expires_in: tokens.refresh_expires_in,
        refresh_token: &tokens.refresh_token,
        token_type: "Bearer",
        not_before_policy: 0,
        scope: "openid profile email",
    };
    (StatusCode::OK, no_store(), Json(body)).into_response()
}

fn grant_error(err: AdminGrantError) -> AppError {
    match err {
        // Keycloak answers a failed direct grant 401 `invalid_grant`; python-keycloak raises
        // `KeycloakAuthenticationError` for it.
        AdminGrantError::InvalidCredentials => AppError::OAuth {
            status: StatusCode::UNAUTHORIZED,
            error: OAuthError::invalid_grant(err.to_string()),
            basic_challenge: false,
        },
        // python-keycloak matches `Token is not active` and signs in with the password again.
        AdminGrantError::NotActive | AdminGrantError::InvalidRefreshToken => {
            AppError::oauth(OAuthError::invalid_grant(err.to_string()))
        }
        AdminGrantError::Signing(_) | AdminGrantError::Store(_) => AppError::internal(err),
    }
}

/// The master realm's forms name `admin-cli`, and only that client.
fn require_admin_cli(client_id: Option<&str>) -> Result<(), AppError> {
    if client_id == Some(ADMIN_CLIENT_ID) { Ok(()) } else { Err(AppError::oauth(OAuthError::invalid_client())) }
}

/// What a token request to the master realm names, read from the token endpoint's form.
#[derive(Debug)]
pub(crate) struct MasterTokenRequest<'a> {
    pub(crate) client_id: Option<&'a str>,
    pub(crate) grant_type: Option<&'a str>,
    pub(crate) username: Option<&'a str>,
    pub(crate) password: Option<&'a str>,
    pub(crate) refresh_token: Option<&'a str>,
}

/// `POST /realms/master/protocol/openid-connect/token` for the public client `admin-cli`:
/// `grant_type=password` and `refresh_token`.
pub(crate) async fn master_token(
    admin: &AdminSignIn,
    request: AdminRequest<'_>,
    form: MasterTokenRequest<'_>,
) -> Result<Response, AppError> {
    require_admin_cli(form.client_id)?;
    let issued = match form.grant_type {
        Some("password") => {
            let username = form.username.unwrap_or_default();
            let password = form.password.unwrap_or_default();
            admin.password_grant(request, username, password).await
        }
        Some("refresh_token") => {
            let Some(token) = form.refresh_token else {
                return Err(AppError::oauth(OAuthError::invalid_request("Missing parameter: refresh_token")));
            };
            admin.refresh_grant(request, token).await
        }
        Some(_) => {
            return Err(AppError::oauth(OAuthError::new(ErrorCode::UnsupportedGrantType, "Unsupported grant_type")));
        }
        None => return Err(AppError::oauth(OAuthError::invalid_request("Missing form parameter: grant_type"))),
    };
    Ok(admin_token_response(&issued.map_err(grant_error)?))
}

/// `POST /realms/master/protocol/openid-connect/logout` for `admin-cli` with a refresh token
/// (python-keycloak's `KeycloakOpenID.logout`): ends that admin session; 204 as Keycloak.
pub(crate) async fn master_logout(
    admin: &AdminSignIn,
    request: AdminRequest<'_>,
    client_id: Option<&str>,
    refresh_token: Option<&str>,
) -> Result<Response, AppError> {
    require_admin_cli(client_id)?;
    let Some(token) = refresh_token else {
        return Err(AppError::oauth(OAuthError::invalid_request("Missing parameter: refresh_token")));
    };
    admin.logout(request, token).await.map_err(grant_error)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---------------------------------------------------------------------------------------------
// Who calls, and what they may do.

/// The caller of an admin request: the master realm's administrator, or a service account with
/// realm-management roles (`[[service_accounts]] admin_roles`), as configured now.
#[derive(Debug)]
pub(crate) enum AdminCaller {
    Administrator,
    Service(Arc<ServiceAccountSettings>),
}

fn unauthorized() -> AppError {
    AppError::Admin { status: StatusCode::UNAUTHORIZED, error: "HTTP 401 Unauthorized" }
}

fn forbidden() -> AppError {
    AppError::Admin { status: StatusCode::FORBIDDEN, error: "HTTP 403 Forbidden" }
}

impl<S: Send + Sync> FromRequestParts<S> for AdminCaller
where
    Option<Arc<AdminSignIn>>: FromRef<S>,
    Arc<TokenService>: FromRef<S>,
    ServiceAccountRegistry: FromRef<S>,
    Store: FromRef<S>,
    Clock: FromRef<S>,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        let Ok(Bearer(token)) = Bearer::from_request_parts(parts, state).await;
        let token = token.ok_or_else(unauthorized)?;
        let now = Clock::from_ref(state).now();
        let tokens = Arc::<TokenService>::from_ref(state);
        if let (Some(admin), Ok(claims)) =
            (Option::<Arc<AdminSignIn>>::from_ref(state), tokens.verify_admin(&token, now))
        {
            // An ended session's access tokens die with it (python-keycloak then refreshes,
            // is told `Token is not active`, and signs in again).
            let accepted =
                admin.is_administrator(&claims) && admin.session_is_live(&Store::from_ref(state), &claims, now).await?;
            return if accepted { Ok(AdminCaller::Administrator) } else { Err(unauthorized()) };
        }
        if let Ok(claims) = tokens.verify_service(&token, now) {
            let accounts = ServiceAccountRegistry::from_ref(state);
            return accounts.find(&claims.azp).cloned().map(AdminCaller::Service).ok_or_else(unauthorized);
        }
        // A user's own token of the realm is a valid token without the roles: 403, as Keycloak.
        if tokens.verify_access(&token, now).is_ok() {
            return Err(forbidden());
        }
        Err(unauthorized())
    }
}

impl AdminCaller {
    fn client_id(&self) -> &str {
        match self {
            AdminCaller::Administrator => ADMIN_CLIENT_ID,
            AdminCaller::Service(account) => &account.client_id,
        }
    }

    fn may(&self, role: AdminRole) -> bool {
        match self {
            AdminCaller::Administrator => true,
            // `manage-users` implies reading, as in Keycloak.
            AdminCaller::Service(account) => {
                let roles = &account.admin_roles;
                roles.contains(&AdminRole::ManageUsers) || (role == AdminRole::ViewUsers && roles.contains(&role))
            }
        }
    }

    fn require_view(&self) -> Result<(), AppError> {
        if self.may(AdminRole::ViewUsers) { Ok(()) } else { Err(forbidden()) }
    }

    /// Refuses a caller without `manage-users`, and records the refusal.
    async fn require_manage(&self, api: &AdminApi, what: &str, user_id: &str) -> Result<(), AppError> {
        if self.may(AdminRole::ManageUsers) {
            return Ok(());
        }
        api.audit(Event::AdminWriteForbidden { client_id: self.client_id(), user_id, operation: what }).await;
        Err(forbidden())
    }
}

impl AdminApi {
    async fn audit(&self, event: Event<'_>) {
        self.audit.event(self.clock.now(), event).await;
    }

    /// The realm of an admin path: the configured one only (Keycloak's `Realm not found.`).
    fn require_realm(&self, realm: &str) -> Result<(), AppError> {
        if self.realm.name == realm {
            Ok(())
        } else {
            Err(AppError::Admin { status: StatusCode::NOT_FOUND, error: "Realm not found." })
        }
    }
}

fn user_not_found() -> AppError {
    AppError::Admin { status: StatusCode::NOT_FOUND, error: "User not found" }
}

fn bad_request(message: impl Into<String>) -> AppError {
    AppError::keycloak(StatusCode::BAD_REQUEST, message)
}

// ---------------------------------------------------------------------------------------------
// Representations, as Keycloak's JSON names them.

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct RealmRepresentation<'a> {
    id: &'a str,
    realm: &'a str,
    enabled: bool,
    ssl_required: &'static str,
    registration_allowed: bool,
    login_with_email_allowed: bool,
    duplicate_emails_allowed: bool,
    edit_username_allowed: bool,
    verify_email: bool,
    access_token_lifespan: i64,
    sso_session_idle_timeout: i64,
    sso_session_max_lifespan: i64,
    offline_session_idle_timeout: i64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct UserAccess {
    manage_group_membership: bool,
    view: bool,
    map_roles: bool,
    impersonate: bool,
    manage: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct FederatedIdentity<'a> {
    identity_provider: &'a str,
    user_id: &'a str,
    user_name: &'a str,
}

/// Keycloak's user representation: brief (search results with `briefRepresentation=true`),
/// full, or full with the linked identities (`GET …/users/{id}` only).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct UserRepresentation<'a> {
    id: &'a str,
    username: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    first_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<&'a str>,
    email_verified: bool,
    enabled: bool,
    created_timestamp: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    attributes: Option<BTreeMap<&'a str, Vec<&'a str>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    federated_identities: Option<Vec<FederatedIdentity<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    totp: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    required_actions: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    not_before: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    disableable_credential_types: Option<[&'static str; 0]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    access: Option<UserAccess>,
}

fn federated_identity(identity: &IdentityRow) -> FederatedIdentity<'_> {
    FederatedIdentity {
        identity_provider: &identity.alias,
        user_id: &identity.subject,
        user_name: identity.username.as_deref().unwrap_or(&identity.subject),
    }
}

/// A user's representation; `details` (linked identities and required actions) only for
/// `GET …/users/{id}`, which reads them.
fn representation<'a>(
    found: &'a DirectoryUser,
    brief: bool,
    details: Option<(&'a [IdentityRow], &'a [String])>,
    caller: &AdminCaller,
) -> UserRepresentation<'a> {
    let user = &found.user;
    let mut attributes: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for attribute in &found.attributes {
        attributes.entry(attribute.name.as_str()).or_default().push(attribute.value.as_str());
    }
    let full = !brief;
    let manage = caller.may(AdminRole::ManageUsers);
    UserRepresentation {
        id: &user.id,
        username: &user.username,
        first_name: user.first_name.as_deref(),
        last_name: user.last_name.as_deref(),
        email: user.email.as_deref(),
        email_verified: user.email_verified,
        enabled: user.enabled,
        created_timestamp: user.created_at.saturating_mul(1000),
        // Keycloak leaves out an empty map.
        attributes: (full && !attributes.is_empty()).then_some(attributes),
        federated_identities: details.map(|(list, _)| list.iter().map(federated_identity).collect()),
        totp: full.then_some(false),
        required_actions: full.then_some(details.map_or(&[][..], |(_, actions)| actions)),
        not_before: full.then_some(0),
        disableable_credential_types: full.then_some([]),
        access: full.then_some(UserAccess {
            manage_group_membership: manage,
            view: true,
            map_roles: manage,
            impersonate: false,
            manage,
        }),
    }
}

// ---------------------------------------------------------------------------------------------
// The endpoints.

/// `GET /admin/realms/{realm}`
pub(crate) async fn realm(
    State(api): State<AdminApi>,
    caller: AdminCaller,
    Path(realm): Path<String>,
) -> Result<Response, AppError> {
    caller.require_view()?;
    api.require_realm(&realm)?;
    let settings = &api.realm;
    Ok(Json(RealmRepresentation {
        id: &settings.name,
        realm: &settings.name,
        enabled: true,
        ssl_required: "external",
        registration_allowed: false,
        login_with_email_allowed: true,
        duplicate_emails_allowed: false,
        edit_username_allowed: false,
        verify_email: false,
        access_token_lifespan: settings.access_token_lifespan_seconds,
        sso_session_idle_timeout: settings.sso_session_idle_seconds,
        sso_session_max_lifespan: settings.sso_session_max_seconds,
        offline_session_idle_timeout: settings.offline_session_idle_seconds,
    })
    .into_response())
}

/// A user id from the path; one holding a NUL character names no user.
fn path_user_id(id: &str) -> Result<&str, AppError> {
    if id.contains('\0') { Err(user_not_found()) } else { Ok(id) }
}

/// `GET /admin/realms/{realm}/users`: a page of users, ordered by username.
pub(crate) async fn list_users(
    State(api): State<AdminApi>,
    caller: AdminCaller,
    Path(realm): Path<String>,
    search: Result<Query<SearchParams, Keycloak>, AppError>,
) -> Result<Response, AppError> {
    caller.require_view()?;
    api.require_realm(&realm)?;
    // Read once the caller and the realm are accepted, as every query of this API: a caller
    // without the right learns nothing about its parameters.
    let Query(search, _) = search?;
    let search = search.read().map_err(|err| bad_request(err.0))?;
    let users = api.store.search_users(&search.criteria, search.first, search.max).await?;
    let body: Vec<UserRepresentation<'_>> =
        users.iter().map(|user| representation(user, search.brief, None, &caller)).collect();
    Ok((no_store(), Json(body)).into_response())
}

/// `GET /admin/realms/{realm}/users/count`: a bare integer.
pub(crate) async fn count_users(
    State(api): State<AdminApi>,
    caller: AdminCaller,
    Path(realm): Path<String>,
    search: Result<Query<SearchParams, Keycloak>, AppError>,
) -> Result<Response, AppError> {
    caller.require_view()?;
    api.require_realm(&realm)?;
    let Query(search, _) = search?;
    let criteria = search.criteria().map_err(|err| bad_request(err.0))?;
    Ok((no_store(), Json(api.store.count_users(&criteria).await?)).into_response())
}

/// `GET /admin/realms/{realm}/users/{id}`: the full representation with linked identities.
/// `userProfileMetadata` and any other parameter are ignored.
pub(crate) async fn get_user(
    State(api): State<AdminApi>,
    caller: AdminCaller,
    Path((realm, user_id)): Path<(String, String)>,
) -> Result<Response, AppError> {
    caller.require_view()?;
    api.require_realm(&realm)?;
    let found = api.store.find_directory_user(path_user_id(&user_id)?).await?.ok_or_else(user_not_found)?;
    let identities = api.store.list_identities(&user_id).await?;
    let actions = api.store.required_actions(&user_id).await?;
    Ok((no_store(), Json(representation(&found, false, Some((&identities, &actions)), &caller))).into_response())
}

fn write_error(err: WriteError) -> AppError {
    match err {
        WriteError::Store(err) => err.into(),
        err @ WriteError::Password(_) => AppError::internal(err),
    }
}

/// `POST /admin/realms/{realm}/users`: creates a user from Keycloak's representation, with a
/// password when `credentials` holds one; 201 with the new user's URL in `Location` (where
/// python-keycloak reads the id), 409 in Keycloak's words when the username or e-mail is taken.
pub(crate) async fn create_user(
    State(api): State<AdminApi>,
    caller: AdminCaller,
    Path(realm): Path<String>,
    body: Bytes,
) -> Result<Response, AppError> {
    api.require_realm(&realm)?;
    caller.require_manage(&api, "create", "").await?;
    // The position only: serde's words may quote the body, and it may hold a password.
    let creation: UserCreation = serde_json::from_slice(&body).map_err(|err| {
        bad_request(format!("unrecognized user representation at line {} column {}", err.line(), err.column()))
    })?;
    let checked = creation.checked().map_err(|invalid| bad_request(invalid.0))?;
    let (password, required_actions) = (checked.has_password(), checked.required_actions().to_vec());
    let (user_id, created) = api.directory.create(checked, api.clock.now()).await.map_err(write_error)?;
    let (outcome, refusal) = match created {
        Creation::Created => ("created", None),
        Creation::UsernameTaken => ("username_taken", Some("User exists with same username")),
        Creation::EmailTaken => ("email_taken", Some("User exists with same email")),
    };
    let event = Event::AdminUserCreate {
        outcome,
        client_id: caller.client_id(),
        user_id: refusal.is_none().then_some(user_id.as_str()),
        password,
        required_actions: &required_actions,
    };
    api.audit(event).await;
    if let Some(message) = refusal {
        return Err(AppError::keycloak(StatusCode::CONFLICT, message));
    }
    let location = api.about.urls.endpoint(paths::ADMIN_USER).replace("{user_id}", &user_id);
    let location = HeaderValue::try_from(location).map_err(AppError::internal)?;
    Ok((StatusCode::CREATED, [(header::LOCATION, location)]).into_response())
}

/// `PUT /admin/realms/{realm}/users/{id}/reset-password`: sets the user's password from
/// Keycloak's `CredentialRepresentation`; `temporary: true` makes the user change it
/// (`UPDATE_PASSWORD`), a permanent one lifts that. 204.
pub(crate) async fn reset_password(
    State(api): State<AdminApi>,
    caller: AdminCaller,
    Path((realm, user_id)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, AppError> {
    api.require_realm(&realm)?;
    caller.require_manage(&api, "reset_password", &user_id).await?;
    api.store.find_directory_user(path_user_id(&user_id)?).await?.ok_or_else(user_not_found)?;
    let credential: CredentialRequest = serde_json::from_slice(&body).map_err(|err| {
        bad_request(format!("unrecognized credential representation at line {} column {}", err.line(), err.column()))
    })?;
    let password = credential.reset().map_err(|invalid| bad_request(invalid.0))?;
    let temporary = password.temporary();
    if !api.directory.reset_password(&user_id, password, api.clock.now()).await.map_err(write_error)? {
        return Err(user_not_found());
    }
    api.audit(Event::AdminPasswordReset { client_id: caller.client_id(), user_id: &user_id, temporary }).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `PUT /admin/realms/{realm}/users/{id}`: a partial update, 204.
pub(crate) async fn update_user(
    State(api): State<AdminApi>,
    caller: AdminCaller,
    Path((realm, user_id)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, AppError> {
    api.require_realm(&realm)?;
    caller.require_manage(&api, "update", &user_id).await?;
    let update: UserUpdate =
        serde_json::from_slice(&body).map_err(|err| bad_request(format!("unrecognized user representation: {err}")))?;
    let changed: Vec<&str> = [
        ("email", update.email.is_some()),
        ("emailVerified", update.email_verified.is_some()),
        ("firstName", update.first_name.is_some()),
        ("lastName", update.last_name.is_some()),
        ("enabled", update.enabled.is_some()),
        ("attributes", update.attributes.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, given)| given.then_some(name))
    .collect();
    let enabled = update.enabled;
    let outcome = api.directory.update(path_user_id(&user_id)?, update, api.clock.now()).await?;
    let event = |conflict| Event::AdminUserUpdate {
        conflict,
        client_id: caller.client_id(),
        user_id: &user_id,
        fields: &changed,
        enabled,
    };
    match outcome {
        Ok(ChangeWrite::Done) => {
            api.audit(event(false)).await;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        Ok(ChangeWrite::NotFound) => Err(user_not_found()),
        Ok(ChangeWrite::EmailTaken) => {
            api.audit(event(true)).await;
            Err(AppError::keycloak(StatusCode::CONFLICT, "User exists with same email"))
        }
        Err(invalid) => Err(bad_request(invalid.0)),
    }
}

/// `DELETE /admin/realms/{realm}/users/{id}`: the user, their identities, sealed tokens and
/// sessions are erased.
pub(crate) async fn delete_user(
    State(api): State<AdminApi>,
    caller: AdminCaller,
    Path((realm, user_id)): Path<(String, String)>,
) -> Result<Response, AppError> {
    api.require_realm(&realm)?;
    caller.require_manage(&api, "delete", &user_id).await?;
    let deleted = api.store.delete_directory_user(path_user_id(&user_id)?).await?.ok_or_else(user_not_found)?;
    let event = Event::AdminUserDelete {
        client_id: caller.client_id(),
        user_id: &user_id,
        identities: &deleted.aliases,
        sessions: deleted.session_ids.len(),
    };
    api.audit(event).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /admin/realms/{realm}/users/{id}/federated-identity`
pub(crate) async fn list_identities(
    State(api): State<AdminApi>,
    caller: AdminCaller,
    Path((realm, user_id)): Path<(String, String)>,
) -> Result<Response, AppError> {
    caller.require_view()?;
    api.require_realm(&realm)?;
    api.store.find_directory_user(path_user_id(&user_id)?).await?.ok_or_else(user_not_found)?;
    let identities = api.store.list_identities(&user_id).await?;
    let body: Vec<FederatedIdentity<'_>> = identities.iter().map(federated_identity).collect();
    Ok((no_store(), Json(body)).into_response())
}

/// Keycloak's `FederatedIdentityRepresentation`, as an administrator posts it to link.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LinkRequest {
    identity_provider: Option<String>,
    user_id: Option<String>,
    user_name: Option<String>,
}

/// `POST /admin/realms/{realm}/users/{id}/federated-identity/{alias}`: links an upstream
/// account (its subject, `userId`) to an existing user, as Keycloak's admin console does; the
/// account's next sign-in lands on this user and stores its tokens. 204; 409 (Keycloak's
/// words) when the user is linked to the provider already or the account to another user.
pub(crate) async fn link_identity(
    State(api): State<AdminApi>,
    caller: AdminCaller,
    Path((realm, user_id, alias)): Path<(String, String, String)>,
    body: Bytes,
) -> Result<Response, AppError> {
    api.require_realm(&realm)?;
    caller.require_manage(&api, "link", &user_id).await?;
    api.store.find_directory_user(path_user_id(&user_id)?).await?.ok_or_else(user_not_found)?;
    if !api.vault.knows_provider(&alias) {
        return Err(AppError::Admin { status: StatusCode::NOT_FOUND, error: "Identity Provider not found" });
    }
    let link: LinkRequest = serde_json::from_slice(&body)
        .map_err(|err| bad_request(format!("unrecognized federated identity representation: {err}")))?;
    if link.identity_provider.as_deref().is_some_and(|given| given != alias) {
        return Err(bad_request(format!("identityProvider must be `{alias}`, the provider of the path")));
    }
    let subject = link.user_id.as_deref().map(str::trim).filter(|s| !s.is_empty() && !s.contains('\0'));
    let Some(subject) = subject.filter(|s| s.len() <= 255) else {
        return Err(bad_request("userId, the account's subject at the provider (1 to 255 characters), is required"));
    };
    let username = link.user_name.as_deref().filter(|u| !u.is_empty() && u.len() <= 255 && !u.contains('\0'));
    let identity = IdentityKey { user_id: &user_id, alias: &alias };
    let linked = match api.store.link_identity(identity, subject, username, api.clock.now()).await {
        Ok(true) => "linked",
        Ok(false) => "already_linked",
        Err(StoreError::Conflict(_)) => "linked_to_another_user",
        Err(err) => return Err(err.into()),
    };
    let event = Event::AdminLink { outcome: linked, client_id: caller.client_id(), user_id: &user_id, alias: &alias };
    api.audit(event).await;
    match linked {
        "linked" => Ok(StatusCode::NO_CONTENT.into_response()),
        "already_linked" => Err(AppError::keycloak(StatusCode::CONFLICT, "User is already linked with provider")),
        _ => Err(AppError::keycloak(
            StatusCode::CONFLICT,
            format!("The {alias} account is already linked to another user"),
        )),
    }
}

/// `DELETE /admin/realms/{realm}/users/{id}/federated-identity/{alias}`: unlinks through the
/// vault, as the internal API's unlink does (identity and sealed tokens erased, audited).
pub(crate) async fn unlink_identity(
    State(api): State<AdminApi>,
    caller: AdminCaller,
    Path((realm, user_id, alias)): Path<(String, String, String)>,
) -> Result<Response, AppError> {
    api.require_realm(&realm)?;
    caller.require_manage(&api, "unlink", &user_id).await?;
    api.store.find_directory_user(path_user_id(&user_id)?).await?.ok_or_else(user_not_found)?;
    if alias.contains('\0') {
        return Err(AppError::Admin { status: StatusCode::NOT_FOUND, error: "Link not found" });
    }
    let reader = TokenReader { surface: "admin", client_id: caller.client_id() };
    match api.vault.unlink(&reader, IdentityKey { user_id: &user_id, alias: &alias }).await {
        Ok(true) => Ok(StatusCode::NO_CONTENT.into_response()),
        Ok(false) => Err(AppError::Admin { status: StatusCode::NOT_FOUND, error: "Link not found" }),
        Err(err @ VaultError::Internal { .. }) => Err(AppError::internal(err)),
        Err(err) => Err(AppError::vault(err)),
    }
}

/// `POST /admin/realms/{realm}/users/{id}/logout`: ends every session of the user, offline
/// ones too; their tokens stop working at once.
pub(crate) async fn logout_user(
    State(api): State<AdminApi>,
    caller: AdminCaller,
    Path((realm, user_id)): Path<(String, String)>,
) -> Result<Response, AppError> {
    api.require_realm(&realm)?;
    caller.require_manage(&api, "logout", &user_id).await?;
    api.store.find_directory_user(path_user_id(&user_id)?).await?.ok_or_else(user_not_found)?;
    let now = api.clock.now();
    let ended = api.sessions.end_all_of(&user_id, Ending::AdminLogout, Some(caller.client_id()), now).await?;
    api.audit(Event::AdminUserLogout { client_id: caller.client_id(), user_id: &user_id, sessions: ended }).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The query of `send-verify-email`, as python-keycloak sends it.
#[derive(Debug, Deserialize)]
pub(crate) struct VerifyEmailQuery {
    client_id: Option<String>,
    redirect_uri: Option<String>,
    lifespan: Option<String>,
}

/// `PUT /admin/realms/{realm}/users/{id}/send-verify-email`: mails the user a single-use,
/// expiring link that verifies the address and goes on to `redirect_uri`; 204.
pub(crate) async fn send_verify_email(
    State(api): State<AdminApi>,
    caller: AdminCaller,
    Path((realm, user_id)): Path<(String, String)>,
    query: Result<Query<VerifyEmailQuery, Keycloak>, AppError>,
) -> Result<Response, AppError> {
    api.require_realm(&realm)?;
    caller.require_manage(&api, "send_verify_email", &user_id).await?;
    let Query(query, _) = query?;
    let lifespan = match query.lifespan.as_deref() {
        Some(text) => Some(text.parse::<u64>().map_err(|_| bad_request("lifespan must be a number of seconds"))?),
        None => None,
    };
    let sent = api
        .email_verification
        .send_verify_email(path_user_id(&user_id)?, query.client_id.as_deref(), query.redirect_uri.as_deref(), lifespan)
        .await;
    match sent {
        Ok(()) => Ok(StatusCode::NO_CONTENT.into_response()),
        Err(VerifyEmailError::UserNotFound) => Err(user_not_found()),
        Err(err @ VerifyEmailError::Store(_)) => Err(AppError::internal(err)),
        Err(err @ (VerifyEmailError::SmtpNotConfigured | VerifyEmailError::Send(_))) => {
            tracing::error!(error = %Chain(&err), user_id, "could not send a verification e-mail");
            Err(AppError::keycloak(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()))
        }
        Err(refused) => Err(AppError::keycloak(StatusCode::BAD_REQUEST, refused.to_string())),
    }
}

// ---------------------------------------------------------------------------------------------
// Realm roles.

/// Keycloak's `RoleRepresentation` of a realm role; its id is its name.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct RoleRepresentation<'a> {
    id: &'a str,
    name: &'a str,
    composite: bool,
    client_role: bool,
    container_id: &'a str,
}

fn role_representations<'a>(names: &'a [String], realm: &'a str) -> Vec<RoleRepresentation<'a>> {
    names
        .iter()
        .map(|name| RoleRepresentation { id: name, name, composite: false, client_role: false, container_id: realm })
        .collect()
}

/// `GET /admin/realms/{realm}/roles`: the realm's roles, the default ones and every one a user
/// holds (granted, or given by a provider).
pub(crate) async fn list_roles(
    State(api): State<AdminApi>,
    caller: AdminCaller,
    Path(realm): Path<String>,
) -> Result<Response, AppError> {
    caller.require_view()?;
    api.require_realm(&realm)?;
    let roles = api.realm.with_default_roles(api.store.held_roles().await?);
    Ok((no_store(), Json(role_representations(&roles, &api.realm.name))).into_response())
}

/// `GET /admin/realms/{realm}/roles/{role}/users`: the users who hold the role from a grant or a
/// provider (as in Keycloak, not those who hold it only as a default role), by username.
pub(crate) async fn role_users(
    State(api): State<AdminApi>,
    caller: AdminCaller,
    Path((realm, role)): Path<(String, String)>,
    page: Result<Query<PageParams, Keycloak>, AppError>,
) -> Result<Response, AppError> {
    caller.require_view()?;
    api.require_realm(&realm)?;
    let Query(page, _) = page?;
    let (first, max) = page.read().map_err(|err| bad_request(err.0))?;
    let known = api.realm.default_roles.contains(&role) || api.store.held_roles().await?.contains(&role);
    if !known {
        return Err(AppError::Admin { status: StatusCode::NOT_FOUND, error: "Could not find role" });
    }
    let users: Vec<DirectoryUser> = api
        .store
        .users_with_role(&role, first, max)
        .await?
        .into_iter()
        .map(|user| DirectoryUser { user, attributes: Vec::new() })
        .collect();
    let body: Vec<UserRepresentation<'_>> =
        users.iter().map(|user| representation(user, true, None, &caller)).collect();
    Ok((no_store(), Json(body)).into_response())
}

/// `GET /admin/realms/{realm}/users/{id}/role-mappings/realm`: every realm role the user holds.
pub(crate) async fn user_role_mappings(
    State(api): State<AdminApi>,
    caller: AdminCaller,
    Path((realm, user_id)): Path<(String, String)>,
) -> Result<Response, AppError> {
    caller.require_view()?;
    api.require_realm(&realm)?;
    api.store.find_directory_user(path_user_id(&user_id)?).await?.ok_or_else(user_not_found)?;
    let roles = api.realm.with_default_roles(api.store.user_roles(&user_id).await?);
    Ok((no_store(), Json(role_representations(&roles, &api.realm.name))).into_response())
}

/// The role names of a role-mapping body (a list of `RoleRepresentation`).
fn role_mapping_body(body: &[u8]) -> Result<Vec<String>, AppError> {
    let requests: Vec<RoleRequest> = serde_json::from_slice(body).map_err(|err| {
        bad_request(format!("expected a list of role representations (line {} column {})", err.line(), err.column()))
    })?;
    role_names(requests).map_err(|invalid| bad_request(invalid.0))
}

/// `POST /admin/realms/{realm}/users/{id}/role-mappings/realm`: grants the roles; 204. The
/// user's next tokens carry them.
pub(crate) async fn add_role_mappings(
    State(api): State<AdminApi>,
    caller: AdminCaller,
    Path((realm, user_id)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, AppError> {
    change_role_mappings(&api, &caller, &realm, &user_id, &body, true).await
}

/// `DELETE /admin/realms/{realm}/users/{id}/role-mappings/realm`: takes back granted roles (a
/// provider's roles and the default roles stay); 204.
pub(crate) async fn delete_role_mappings(
    State(api): State<AdminApi>,
    caller: AdminCaller,
    Path((realm, user_id)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, AppError> {
    change_role_mappings(&api, &caller, &realm, &user_id, &body, false).await
}

/// Grants (`granted`) or takes back the roles of a role-mapping body for the user; 204.
async fn change_role_mappings(
    api: &AdminApi,
    caller: &AdminCaller,
    realm: &str,
    user_id: &str,
    body: &[u8],
    granted: bool,
) -> Result<Response, AppError> {
    api.require_realm(realm)?;
    caller.require_manage(api, if granted { "grant_roles" } else { "revoke_roles" }, user_id).await?;
    api.store.find_directory_user(path_user_id(user_id)?).await?.ok_or_else(user_not_found)?;
    let roles = role_mapping_body(body)?;
    if granted {
        if !api.store.grant_roles(user_id, &roles).await? {
            return Err(user_not_found());
        }
    } else {
        api.store.revoke_roles(user_id, &roles).await?;
    }
    api.audit(Event::AdminRoleMapping { granted, client_id: caller.client_id(), user_id, roles: &roles }).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}
