//! The append-only audit trail.

use super::{Backend, Store, StoreError};

/// One security-relevant event; `detail` is JSON and never holds a token or secret.
#[derive(Debug, Clone, Default, sqlx::FromRow, serde::Serialize)]
pub struct AuditEvent {
    pub at: i64,
    pub kind: String,
    pub outcome: String,
    pub user_id: Option<String>,
    pub client_id: Option<String>,
    pub alias: Option<String>,
    pub detail: String,
}

impl Store {
    /// Writes several events with one statement whatever their number: the batch travels as
    /// one JSON array parameter, so each connection prepares the statement once.
    pub async fn record_audits(&self, events: &[AuditEvent]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let sql = match self.backend {
            Backend::Postgres => {
                "INSERT INTO audit_events (at, kind, outcome, user_id, client_id, alias, detail)
                 SELECT at, kind, outcome, user_id, client_id, alias, detail
                 FROM ROWS FROM (json_to_recordset($1::json) AS (at BIGINT, kind TEXT, outcome TEXT,
                      user_id TEXT, client_id TEXT, alias TEXT, detail TEXT))
                      WITH ORDINALITY AS e(at, kind, outcome, user_id, client_id, alias, detail, n)
                 ORDER BY n"
            }
            Backend::Sqlite => {
                "INSERT INTO audit_events (at, kind, outcome, user_id, client_id, alias, detail)
                 SELECT value ->> 'at', value ->> 'kind', value ->> 'outcome', value ->> 'user_id',
                        value ->> 'client_id', value ->> 'alias', value ->> 'detail'
                 FROM json_each($1) ORDER BY key"
            }
        };
        let batch = serde_json::to_string(events)?;
        sqlx::query(sql).bind(batch).execute(&self.pool).await?;
        Ok(())
    }

    /// Deletes events recorded before `cutoff`; returns how many went.
    pub async fn delete_audit_before(&self, cutoff: i64) -> Result<u64, StoreError> {
        let deleted = sqlx::query("DELETE FROM audit_events WHERE at < $1").bind(cutoff).execute(&self.pool).await?;
        Ok(deleted.rows_affected())
    }

    /// Events oldest first, optionally only one kind.
    #[cfg(feature = "testing")]
    pub async fn list_audit(&self, kind: Option<&str>) -> Result<Vec<AuditEvent>, StoreError> {
        Ok(sqlx::query_as("SELECT at, kind, outcome, user_id, client_id, alias, detail FROM audit_events WHERE ($1 IS NULL OR kind = $1) ORDER BY id")
            .bind(kind)
            .fetch_all(&self.pool)
            .await?)
    }
}
