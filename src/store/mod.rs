//! All SQL. One set of queries serves Postgres and SQLite through sqlx's `Any` driver
//! (portable types only: TEXT, BIGINT seconds, bytes); what differs lives in `Backend`.

/// A user's columns, in `UserRow`'s order: one list for every query that reads users.
macro_rules! user_columns {
    () => {
        "id, username, email, email_verified, first_name, last_name, full_name, enabled, created_at"
    };
}

mod admin_sessions;
mod attributes;
mod audit;
mod cache;
mod directory;
mod import;
mod inspect;
mod keycloak;
mod keys;
mod login;
mod passwords;
mod providers;
mod rekey;
mod roles;
mod users;
mod vault;
mod verification;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use sqlx::any::AnyPoolOptions;
use sqlx::migrate::Migrator;
use sqlx::{Any, AnyPool, Executor as _, Transaction};

use crate::clock::Clock;

pub use admin_sessions::AdminSessionRow;
pub use audit::AuditEvent;
use cache::RowCache;
use directory::PageEnds;
pub use directory::{AttributeValue, DirectoryUser};
pub(crate) use directory::{ChangeWrite, MAX_ATTRIBUTE_FILTERS, UserChanges, UserCriteria};
pub use import::{AttributeRow, ChunkWrites, ImportBatch, LinkRow, StoredUsers};
#[cfg(test)]
pub(crate) use inspect::{AppliedMigration, KnownMigration};
pub(crate) use inspect::{MigrationRecords, SealedRows};
pub use keycloak::{KeycloakDatabase, KeycloakTokenRow};
pub(crate) use keys::SigningKeyRow;
pub(crate) use login::TOUCH_GRANULARITY_SECONDS;
pub use login::{AuthRequestRow, AuthorizationCodeRow, CodeRedemption, SessionRow, UpstreamLogin};
pub(crate) use passwords::{Creation, NewUser, PasswordLogin, UPDATE_PASSWORD};
use users::is_unique_violation;
pub use users::{IdentityRow, ProfileUpdate, ReauthMark, UserRow};
pub use vault::{IdentityKey, Lease, LinkedTokens, VaultRow};
pub(crate) use verification::{NewVerifyEmailToken, Redemption};

/// How long a SQLite connection waits for another's write lock before `database is locked`:
/// writes hold it for milliseconds, an import's chunk of 500 users for a fraction of a second.
const SQLITE_BUSY_TIMEOUT: &str = "PRAGMA busy_timeout = 5000";

static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("migrations/postgres");
static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("migrations/sqlite");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error("migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("cannot prepare the SQLite directory")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Conflict(String),
    #[error("cannot encode a batch")]
    Encode(#[from] serde_json::Error),
}

impl StoreError {
    /// True when the database could not be reached (no connection within the acquire timeout,
    /// a connection that broke, a server shutting down or starting up): the caller should come
    /// back later, and nothing was changed.
    pub(crate) fn is_unreachable(&self) -> bool {
        matches!(self, StoreError::Database(err) if unreachable(err))
    }
}

fn unreachable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::Tls(_) => true,
        // Postgres' class 08 (connection exception), 57P01-57P03 (shutting down, crashed,
        // starting up) and 53300 (too many connections).
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            code.starts_with("08") || matches!(code.as_ref(), "57P01" | "57P02" | "57P03" | "53300")
        }),
        _ => false,
    }
}

/// True when `error` or one of its causes says the database could not be reached; the HTTP
/// layer answers such failures, from any service, with 503 and `Retry-After`.
pub(crate) fn unreachable_in(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(error) = next {
        if error.downcast_ref::<StoreError>().is_some_and(StoreError::is_unreachable)
            || error.downcast_ref::<sqlx::Error>().is_some_and(unreachable)
        {
            return true;
        }
        next = error.source();
    }
    false
}

/// A yes/no column as the schema stores it, BIGINT 0 or 1 (portable to both databases);
/// rows decode it to `bool` through this type, and writes bind `i64::from(flag)`.
#[derive(sqlx::Type)]
#[sqlx(transparent)]
struct StoredFlag(i64);

impl From<StoredFlag> for bool {
    fn from(flag: StoredFlag) -> bool {
        flag.0 != 0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Postgres,
    Sqlite,
}

/// The database behind every repository method; cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// Rows kept in memory for token reads (Postgres only; see `cache`).
    cache: Option<Arc<RowCache>>,
    /// Where the admin API's pages of every user ended (see `directory`).
    pages: Arc<PageEnds>,
}

impl Store {
    /// A store for commands, which may wait for a connection as long as a person would.
    pub async fn connect(url: &SecretString, max_connections: u32) -> Result<Store, StoreError> {
        Store::connect_with(url, max_connections, Duration::from_secs(5)).await
    }

    /// A store whose callers wait at most `acquire_timeout` for a connection: while the
    /// database cannot be reached, requests fail within that bound instead of queueing.
    pub async fn connect_with(
        url: &SecretString,
        max_connections: u32,
        acquire_timeout: Duration,
    ) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let url = url.expose_secret();
        let backend = if url.starts_with("sqlite:") { Backend::Sqlite } else { Backend::Postgres };
        if backend == Backend::Sqlite {
            create_sqlite_directory(url)?;
        }
        let mut options = AnyPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(acquire_timeout)
            // No ping before each query: a round trip per read. A connection that broke while
            // idle fails its next query, and the pool drops it.
            .test_before_acquire(false);
        if backend == Backend::Sqlite {
            // Through the Any driver the SQLite options come from the URL alone, so the wait
            // for another writer's lock is set here rather than left to the driver's default:
            // without one a write meeting another fails at once with `database is locked`.
            options = options.after_connect(|connection, _| {
                Box::pin(async move { connection.execute(SQLITE_BUSY_TIMEOUT).await.map(|_| ()) })
            });
        }
        let pool = options.connect(url).await?;
        Ok(Store { pool, backend, cache: None, pages: Arc::default() })
    }

    /// Begins a transaction that writes. On SQLite it takes the write lock first (`BEGIN
    /// IMMEDIATE`), waiting for it up to the busy timeout: a deferred transaction that reads and
    /// then writes gets `database is locked` at once, without waiting, when another writer took
    /// the lock in between (SQLite refuses to wait there, as both could wait for ever). A
    /// transaction whose first statement writes waits anyway; one that reads first must begin here.
    pub(crate) async fn begin_write(&self) -> Result<Transaction<'static, Any>, StoreError> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        })
    }

    /// This store, keeping up to `megabytes` of identities (and the sessions token reads check)
    /// in memory, kept current by the database's change notifications and aged by `clock`. Only
    /// on Postgres: SQLite has no notifications, and reading it costs no round trip anyway. Zero
    /// turns it off.
    pub(crate) fn with_cache(self, url: &SecretString, megabytes: u64, clock: Clock) -> Store {
        if self.backend != Backend::Postgres || megabytes == 0 {
            return self;
        }
        Store { cache: Some(RowCache::start(url.clone(), megabytes * 1024 * 1024, clock)), ..self }
    }

    pub async fn migrate(&self) -> Result<(), StoreError> {
        let migrator = match self.backend {
            Backend::Postgres => &POSTGRES_MIGRATIONS,
            Backend::Sqlite => &SQLITE_MIGRATIONS,
        };
        migrator.run(&self.pool).await?;
        Ok(())
    }

    /// The database's kind as an operator names it, for the start page (never its URL).
    pub(crate) fn kind(&self) -> &'static str {
        match self.backend {
            Backend::Postgres => "PostgreSQL",
            Backend::Sqlite => "SQLite",
        }
    }

    pub(crate) async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Whether the database answers within `timeout`. When it does not, the idle connections
    /// are taken out and given back, which tests each one and closes the broken: after an
    /// outage, requests then meet fresh connections rather than one dead socket each.
    pub(crate) async fn reachable(&self, timeout: Duration) -> bool {
        if matches!(tokio::time::timeout(timeout, self.ping()).await, Ok(Ok(()))) {
            return true;
        }
        let mut idle = Vec::new();
        while let Some(connection) = self.pool.try_acquire() {
            idle.push(connection);
        }
        drop(idle);
        false
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Deletes sign-ins, codes, revocations, e-mail links and admin sessions that can no longer
    /// be used; returns how many rows went.
    pub async fn delete_expired(&self, now: i64) -> Result<u64, StoreError> {
        let requests =
            sqlx::query("DELETE FROM auth_requests WHERE expires_at < $1").bind(now).execute(&self.pool).await?;
        let codes =
            sqlx::query("DELETE FROM authorization_codes WHERE expires_at < $1").bind(now).execute(&self.pool).await?;
        let revoked =
            sqlx::query("DELETE FROM revoked_tokens WHERE expires_at < $1").bind(now).execute(&self.pool).await?;
        let links =
            sqlx::query("DELETE FROM verify_email_tokens WHERE expires_at < $1").bind(now).execute(&self.pool).await?;
        let admin_sessions = self.delete_expired_admin_sessions(now).await?;
        Ok(requests.rows_affected()
            + codes.rows_affected()
            + revoked.rows_affected()
            + links.rows_affected()
            + admin_sessions)
    }

    /// Counts a table's rows; for health detail and tests.
    #[cfg(feature = "testing")]
    pub async fn count_rows(&self, table: Table) -> Result<i64, StoreError> {
        let sql = format!("SELECT COUNT(*) FROM {}", table.name());
        Ok(sqlx::query_scalar(&sql).fetch_one(&self.pool).await?)
    }

    /// Every byte of every text and blob column of `table`, for tests proving what is not stored.
    #[cfg(feature = "testing")]
    pub async fn dump_table(&self, table: Table) -> Result<Vec<Vec<u8>>, StoreError> {
        use sqlx::{Column as _, Row as _, TypeInfo as _, ValueRef as _};
        let sql = format!("SELECT * FROM {}", table.name());
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        let mut cells = Vec::new();
        for row in rows {
            for column in row.columns() {
                let index = column.ordinal();
                let raw = row.try_get_raw(index)?;
                if raw.is_null() {
                    continue;
                }
                let type_name = raw.type_info().name().to_ascii_uppercase();
                if type_name.contains("BLOB") || type_name.contains("BYTEA") {
                    cells.push(row.try_get::<Vec<u8>, _>(index)?);
                } else if type_name.contains("TEXT") {
                    cells.push(row.try_get::<String, _>(index)?.into_bytes());
                }
            }
        }
        Ok(cells)
    }
}

/// Tables that tests may count or inspect.
#[cfg(feature = "testing")]
#[derive(Debug, Clone, Copy)]
pub enum Table {
    Users,
    FederatedIdentities,
    VaultTokens,
    AuthRequests,
    AuthorizationCodes,
    SsoSessions,
    SigningKeys,
    AuditEvents,
    VerifyEmailTokens,
    UserPasswords,
    UserRequiredActions,
    UserRoles,
}

#[cfg(feature = "testing")]
impl Table {
    fn name(self) -> &'static str {
        match self {
            Table::Users => "users",
            Table::FederatedIdentities => "federated_identities",
            Table::VaultTokens => "vault_tokens",
            Table::AuthRequests => "auth_requests",
            Table::AuthorizationCodes => "authorization_codes",
            Table::SsoSessions => "sso_sessions",
            Table::SigningKeys => "signing_keys",
            Table::AuditEvents => "audit_events",
            Table::VerifyEmailTokens => "verify_email_tokens",
            Table::UserPasswords => "user_passwords",
            Table::UserRequiredActions => "user_required_actions",
            Table::UserRoles => "user_roles",
        }
    }
}

fn create_sqlite_directory(url: &str) -> std::io::Result<()> {
    let path = url.trim_start_matches("sqlite://").trim_start_matches("sqlite:");
    let path = path.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" {
        return Ok(());
    }
    match Path::new(path).parent() {
        Some(parent) if !parent.as_os_str().is_empty() => std::fs::create_dir_all(parent),
        _ => Ok(()),
    }
}
