//! The audit trail's writer for the hot path: token reads queue their events here and a
//! background task writes them in batches, one transaction per batch, instead of one commit
//! per request. Events wait in memory for milliseconds; shutdown flushes them.

use tokio::sync::{mpsc, oneshot};

use crate::telemetry::Chain;
use crate::store::{AuditEvent, Store};

/// Events written per transaction at most.
const BATCH: usize = 500;
/// Events that may wait; beyond this, recording waits for the writer (back-pressure).
const QUEUE: usize = 8192;

enum Command {
    Record(AuditEvent),
    Flush(oneshot::Sender<()>),
}

/// A handle to the writer; cheap to clone.
#[derive(Debug, Clone)]
pub struct AuditLog {
    queue: mpsc::Sender<Command>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Record(event) => f.debug_tuple("Record").field(&event.kind).finish(),
            Command::Flush(_) => f.write_str("Flush"),
        }
    }
}

impl AuditLog {
    /// Starts the writer on the current runtime.
    pub(crate) fn start(store: Store) -> AuditLog {
        let (queue, commands) = mpsc::channel(QUEUE);
        tokio::spawn(write_batches(store, commands));
        AuditLog { queue }
    }

    pub(crate) async fn record(&self, event: AuditEvent) {
        if self.queue.send(Command::Record(event)).await.is_err() {
            tracing::warn!("the audit writer has stopped; an event was lost");
        }
    }

    /// Returns once every event recorded before the call is in the database.
    pub async fn flush(&self) {
        let (done, written) = oneshot::channel();
        if self.queue.send(Command::Flush(done)).await.is_ok() {
            let _ = written.await;
        }
    }
}

async fn write_batches(store: Store, mut commands: mpsc::Receiver<Command>) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut waiting = Vec::new();
    while let Some(first) = commands.recv().await {
        let mut next = Some(first);
        while let Some(command) = next.take() {
            match command {
                Command::Record(event) => batch.push(event),
                Command::Flush(done) => waiting.push(done),
            }
            if batch.len() < BATCH {
                next = commands.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            if let Err(err) = store.record_audits(&batch).await {
                tracing::warn!(error = %Chain(&err), events = batch.len(), "could not write audit events");
            }
            batch.clear();
        }
        for done in waiting.drain(..) {
            let _ = done.send(());
        }
    }
}
