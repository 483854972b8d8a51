//! The append-only audit trail.

use super::{Store, StoreError};

/// One security-relevant event; `detail` is JSON and never holds a token or secret.
#[derive(Debug, Clone, Default, sqlx::FromRow)]
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
    pub async fn record_audit(&self, event: &AuditEvent) -> Result<(), StoreError> {
        self.record_audits(std::slice::from_ref(event)).await
    }

    /// Writes several events with one multi-row statement: one round trip and one commit
    /// for the lot (the batch writer keeps batches well under the databases' parameter limits).
    pub async fn record_audits(&self, events: &[AuditEvent]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let rows: Vec<String> = (0..events.len())
            .map(|i| {
                let n = i * 7;
                format!("(${}, ${}, ${}, ${}, ${}, ${}, ${})", n + 1, n + 2, n + 3, n + 4, n + 5, n + 6, n + 7)
            })
            .collect();
        let sql = format!(
            "INSERT INTO audit_events (at, kind, outcome, user_id, client_id, alias, detail) VALUES {}",
            rows.join(", ")
        );
        let mut query = sqlx::query(&sql);
        for event in events {
            query = query
                .bind(event.at)
                .bind(&event.kind)
                .bind(&event.outcome)
                .bind(&event.user_id)
                .bind(&event.client_id)
                .bind(&event.alias)
                .bind(&event.detail);
        }
        query.execute(&self.pool).await?;
        Ok(())
    }

    /// Deletes events recorded before `cutoff`; returns how many went.
    pub async fn delete_audit_before(&self, cutoff: i64) -> Result<u64, StoreError> {
        let deleted = sqlx::query("DELETE FROM audit_events WHERE at < $1").bind(cutoff).execute(&self.pool).await?;
        Ok(deleted.rows_affected())
    }

    /// Events oldest first, optionally only one kind.
    pub async fn list_audit(&self, kind: Option<&str>) -> Result<Vec<AuditEvent>, StoreError> {
        Ok(sqlx::query_as("SELECT at, kind, outcome, user_id, client_id, alias, detail FROM audit_events WHERE ($1 IS NULL OR kind = $1) ORDER BY id")
            .bind(kind)
            .fetch_all(&self.pool)
            .await?)
    }
}
