//! Keycloak's own database, read only: the brokered tokens it kept in `FEDERATED_IDENTITY`.
//!
//! The layout is Keycloak's Liquibase changelog `jpa-changelog-1.2.0.Beta1.xml`, unchanged
//! since: `FEDERATED_IDENTITY (IDENTITY_PROVIDER, REALM_ID, FEDERATED_USER_ID,
//! FEDERATED_USERNAME, TOKEN, USER_ID)`, primary key `(IDENTITY_PROVIDER, USER_ID)`, where
//! `REALM_ID` holds `REALM.ID` (`JpaUserProvider.addFederatedIdentity` sets
//! `realm.getId()`), not the realm's name, which is `REALM.NAME`. Liquibase creates the names
//! unquoted, so Postgres keeps them lower-case; unquoted names here match either way.

use futures_util::TryStreamExt as _;
use futures_util::stream::BoxStream;
use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use super::StoreError;

/// One stored token of Keycloak's: the provider's token response JSON, in plaintext there.
#[derive(sqlx::FromRow)]
pub struct KeycloakTokenRow {
    pub user_id: String,
    pub alias: String,
    pub subject: Option<String>,
    pub token: String,
}

debug_showing!(KeycloakTokenRow { user_id, alias, subject });

impl KeycloakTokenRow {
    /// The token JSON, moved out of the row into a type that never prints.
    pub(crate) fn into_token(self) -> SecretString {
        SecretString::from(self.token)
    }
}

/// A connection to Keycloak's Postgres database.
#[derive(Debug, Clone)]
pub struct KeycloakDatabase {
    pool: PgPool,
}

impl KeycloakDatabase {
    /// Connects to `url` with `password` when given (for a URL without one). Without either,
    /// the driver looks in `PGPASSWORD` and `~/.pgpass`, as libpq does.
    pub async fn connect(url: &SecretString, password: Option<&SecretString>) -> Result<KeycloakDatabase, StoreError> {
        let mut options: PgConnectOptions = url.expose_secret().parse()?;
        if let Some(password) = password {
            options = options.password(password.expose_secret());
        }
        let pool = PgPoolOptions::new().max_connections(1).connect_with(options).await?;
        Ok(KeycloakDatabase { pool })
    }

    /// Whether the Postgres URL `url` carries a password, as `user:password@` or as the
    /// `password` parameter.
    pub fn url_has_password(url: &SecretString) -> bool {
        url::Url::parse(url.expose_secret())
            .is_ok_and(|url| url.password().is_some() || url.query_pairs().any(|(key, _)| key == "password"))
    }

    /// Every identity of realm `realm` (by name) that has a stored token, in user order, read
    /// as a stream so that no more than a row is held at a time.
    pub(crate) fn stored_tokens<'a>(&'a self, realm: &'a str) -> BoxStream<'a, Result<KeycloakTokenRow, StoreError>> {
        Box::pin(
            sqlx::query_as::<_, KeycloakTokenRow>(
                "SELECT fi.user_id, fi.identity_provider AS alias, fi.federated_user_id AS subject, fi.token
                 FROM federated_identity fi
                 JOIN realm r ON r.id = fi.realm_id
                 WHERE r.name = $1 AND fi.token IS NOT NULL AND fi.token <> ''
                 ORDER BY fi.user_id, fi.identity_provider",
            )
            .bind(realm)
            .fetch(&self.pool)
            .map_err(StoreError::from),
        )
    }

    /// Whether Keycloak's database has realm `realm`.
    pub(crate) async fn has_realm(&self, realm: &str) -> Result<bool, StoreError> {
        let count: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM realm WHERE name = $1").bind(realm).fetch_one(&self.pool).await?;
        Ok(count > 0)
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}
