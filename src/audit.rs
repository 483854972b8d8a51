//! The audit trail's writer for the hot path: token reads queue their events here and a
//! background task writes them in batches, one transaction per batch, instead of one commit
//! per request. Events wait in memory for milliseconds; while the database cannot be reached
//! they wait longer (bounded), retried until it answers; shutdown flushes them.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::store::{AuditEvent, Store};
use crate::telemetry::{Chain, Metrics};

/// Events written per transaction at most.
const BATCH: usize = 500;
/// Commands that may wait in the channel; the writer drains it into `pending` even while the
/// database is down, so recording never waits for long.
const QUEUE: usize = 8192;
/// Events kept while the database cannot be reached: about 20 MB, minutes of a busy outage.
/// Beyond it new events are dropped, counted and logged.
pub(crate) const PENDING_LIMIT: usize = 50_000;
/// Pauses between attempts to write while the database fails: short at first, then capped.
const RETRY_FIRST: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(5);

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
    pub(crate) fn start(store: Store, metrics: Arc<Metrics>) -> AuditLog {
        AuditLog::start_bounded(store, metrics, PENDING_LIMIT)
    }

    /// As `start`, keeping at most `limit` events while the database cannot be reached.
    pub fn start_bounded(store: Store, metrics: Arc<Metrics>, limit: usize) -> AuditLog {
        let (queue, commands) = mpsc::channel(QUEUE);
        let writer = Writer { store, metrics, limit, pending: VecDeque::new(), waiting: Vec::new(), dropped: 0 };
        tokio::spawn(writer.run(commands));
        AuditLog { queue }
    }

    pub async fn record(&self, event: AuditEvent) {
        if self.queue.send(Command::Record(event)).await.is_err() {
            tracing::warn!("the audit writer has stopped; an event was lost");
        }
    }

    /// Returns once every event recorded before the call is in the database (while the
    /// database cannot be reached, not before it returns).
    pub async fn flush(&self) {
        let (done, written) = oneshot::channel();
        if self.queue.send(Command::Flush(done)).await.is_ok() {
            let _ = written.await;
        }
    }
}

struct Writer {
    store: Store,
    metrics: Arc<Metrics>,
    limit: usize,
    pending: VecDeque<AuditEvent>,
    /// Flushes that wait for `pending` to empty.
    waiting: Vec<oneshot::Sender<()>>,
    /// Events dropped since the database last accepted a batch, for the log line.
    dropped: u64,
}

impl Writer {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut retry_at: Option<Instant> = None;
        let mut pause = RETRY_FIRST;
        let mut open = true;
        loop {
            match retry_at {
                None if self.pending.is_empty() => match commands.recv().await {
                    Some(command) => self.take(command),
                    None => return,
                },
                None => {}
                // While the database fails, keep taking events until the next attempt.
                Some(at) => tokio::select! {
                    command = commands.recv(), if open => match command {
                        Some(command) => self.take(command),
                        None => open = false,
                    },
                    () = tokio::time::sleep_until(at) => retry_at = None,
                },
            }
            while let Ok(command) = commands.try_recv() {
                self.take(command);
            }
            if retry_at.is_none() {
                if self.write_pending().await {
                    pause = RETRY_FIRST;
                } else {
                    retry_at = Some(Instant::now() + pause);
                    pause = (pause * 2).min(RETRY_MAX);
                }
            }
            if self.pending.is_empty() {
                for done in self.waiting.drain(..) {
                    let _ = done.send(());
                }
            }
        }
    }

    fn take(&mut self, command: Command) {
        match command {
            Command::Record(event) if self.pending.len() < self.limit => self.pending.push_back(event),
            Command::Record(_) => {
                if self.dropped == 0 {
                    tracing::error!(
                        limit = self.limit,
                        "the database has not taken audit events for a while and {} wait in memory; new events are dropped until it does",
                        self.limit
                    );
                }
                self.dropped += 1;
                self.metrics.count_audit_dropped();
            }
            Command::Flush(done) => self.waiting.push(done),
        }
        self.metrics.set_audit_pending(self.pending.len());
    }

    /// Writes the pending events a batch at a time; false when the database failed.
    async fn write_pending(&mut self) -> bool {
        while !self.pending.is_empty() {
            let size = self.pending.len().min(BATCH);
            let batch: Vec<AuditEvent> = self.pending.range(..size).cloned().collect();
            if let Err(err) = self.store.record_audits(&batch).await {
                tracing::warn!(error = %Chain(&err), pending = self.pending.len(), "could not write audit events; kept in memory, retrying");
                return false;
            }
            self.pending.drain(..size);
            self.metrics.set_audit_pending(self.pending.len());
            if self.dropped > 0 {
                tracing::error!(
                    dropped = self.dropped,
                    "the database takes audit events again; {} were dropped while it could not",
                    self.dropped
                );
                self.dropped = 0;
            }
        }
        true
    }
}
