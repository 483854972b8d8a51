//! What `doctor` reads about the database without changing it: the migrations applied beside
//! the ones this binary embeds, and which vault keys the sealed rows need.

use secrecy::{ExposeSecret, SecretString};

use super::vault::vault_columns;
use super::{Backend, POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS, Store, StoreError, VaultRow, create_sqlite_directory};

/// A migration this binary carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KnownMigration {
    pub(crate) version: i64,
    pub(crate) description: String,
    pub(crate) checksum: Vec<u8>,
}

/// A row of sqlx's `_sqlx_migrations`: a migration the database has seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AppliedMigration {
    pub(crate) version: i64,
    pub(crate) checksum: Vec<u8>,
    /// False when it failed part-way, which leaves the database "dirty".
    pub(crate) success: bool,
}

/// The embedded migrations and the applied ones; `applied` is `None` when the database has no
/// migrations table at all (nothing was ever migrated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MigrationRecords {
    pub(crate) embedded: Vec<KnownMigration>,
    pub(crate) applied: Option<Vec<AppliedMigration>>,
}

/// How many rows each vault key seals, per table, and one upstream-token row per key, so that
/// the caller can prove the configured key of that id really opens it.
#[derive(Debug, Clone, Default)]
pub(crate) struct SealedRows {
    /// `(vault_key_id, rows)` of `vault_tokens`, by key id.
    pub(crate) vault_tokens: Vec<(String, i64)>,
    /// `(vault_key_id, rows)` of `signing_keys`, retired keys included, by key id.
    pub(crate) signing_keys: Vec<(String, i64)>,
    /// The first `vault_tokens` row of each key id.
    pub(crate) token_samples: Vec<VaultRow>,
}

impl Store {
    /// One connection attempt, closed at once: its error says why (refused, unknown host, bad
    /// password), where the pool of `connect` retries until its timeout and reports only that.
    pub(crate) async fn try_connection(url: &SecretString) -> Result<(), StoreError> {
        use sqlx::Connection as _;
        sqlx::any::install_default_drivers();
        let url = url.expose_secret();
        if url.starts_with("sqlite:") {
            create_sqlite_directory(url)?;
        }
        sqlx::AnyConnection::connect(url).await?.close().await?;
        Ok(())
    }

    /// Reads, never writes: a missing migrations table is reported as `applied: None`, not
    /// created, as `Migrator::run` would.
    pub(crate) async fn migration_records(&self) -> Result<MigrationRecords, StoreError> {
        let migrator = match self.backend {
            Backend::Postgres => &POSTGRES_MIGRATIONS,
            Backend::Sqlite => &SQLITE_MIGRATIONS,
        };
        let embedded = migrator
            .iter()
            .filter(|m| !m.migration_type.is_down_migration())
            .map(|m| KnownMigration {
                version: m.version,
                description: m.description.to_string(),
                checksum: m.checksum.to_vec(),
            })
            .collect();
        let table_exists_sql = match self.backend {
            Backend::Postgres => {
                "SELECT COUNT(*) FROM information_schema.tables
                 WHERE table_schema = current_schema() AND table_name = '_sqlx_migrations'"
            }
            Backend::Sqlite => "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
        };
        let tables: i64 = sqlx::query_scalar(table_exists_sql).fetch_one(&self.pool).await?;
        if tables == 0 {
            return Ok(MigrationRecords { embedded, applied: None });
        }
        let rows: Vec<(i64, Vec<u8>, i64)> = sqlx::query_as(
            "SELECT version, checksum, CAST(CASE WHEN success THEN 1 ELSE 0 END AS BIGINT)
             FROM _sqlx_migrations ORDER BY version",
        )
        .fetch_all(&self.pool)
        .await?;
        let applied = rows
            .into_iter()
            .map(|(version, checksum, success)| AppliedMigration { version, checksum, success: success != 0 })
            .collect();
        Ok(MigrationRecords { embedded, applied: Some(applied) })
    }

    /// Which vault keys the stored rows are sealed under; needs the migrated schema.
    pub(crate) async fn sealed_rows(&self) -> Result<SealedRows, StoreError> {
        let vault_tokens: Vec<(String, i64)> = sqlx::query_as(
            "SELECT vault_key_id, COUNT(*) FROM vault_tokens GROUP BY vault_key_id ORDER BY vault_key_id",
        )
        .fetch_all(&self.pool)
        .await?;
        let signing_keys: Vec<(String, i64)> = sqlx::query_as(
            "SELECT vault_key_id, COUNT(*) FROM signing_keys GROUP BY vault_key_id ORDER BY vault_key_id",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut token_samples = Vec::with_capacity(vault_tokens.len());
        for (key_id, _) in &vault_tokens {
            let sample: Option<VaultRow> = sqlx::query_as(concat!(
                "SELECT ",
                vault_columns!(),
                " FROM vault_tokens WHERE vault_key_id = $1 ORDER BY user_id, alias LIMIT 1"
            ))
            .bind(key_id)
            .fetch_optional(&self.pool)
            .await?;
            token_samples.extend(sample);
        }
        Ok(SealedRows { vault_tokens, signing_keys, token_samples })
    }
}
