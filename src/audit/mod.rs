//! The audit trail's writer for the hot path: token reads queue their events here and a
//! background task writes them in batches, one transaction per batch, instead of one commit
//! per request. Events wait in memory for milliseconds; while the database cannot be reached
//! they wait longer (bounded), retried until it answers; shutdown flushes them.

mod event;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

pub(crate) use event::{AdminLoginFact, Event};

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

/// How long repeats of an anonymous failure are folded into one row.
const ANONYMOUS_WINDOW: Duration = Duration::from_secs(60);
/// Client addresses whose anonymous failures get rows of their own in one window; failures
/// from further addresses share one row. Bounds the rows strangers can add: at most two per
/// address and window (the first failure, and the count of its repeats), for this many addresses.
pub(crate) const ANONYMOUS_ADDRESSES_PER_WINDOW: usize = 100;

enum Command {
    Record(AuditEvent),
    /// A failed attempt by an unauthenticated caller, with the client address it came from.
    Anonymous(AuditEvent, String),
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
            Command::Record(event) | Command::Anonymous(event, _) => {
                f.debug_tuple("Record").field(&event.kind).finish()
            }
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
        let writer = Writer {
            store,
            metrics,
            limit,
            pending: VecDeque::new(),
            waiting: Vec::new(),
            dropped: 0,
            anonymous: AnonymousFailures::new(),
        };
        tokio::spawn(writer.run(commands));
        AuditLog { queue }
    }

    /// Records what happened at `at` (Unix seconds).
    pub(crate) async fn event(&self, at: i64, event: Event<'_>) {
        self.record(event.row(at)).await;
    }

    /// Records a row as it is given (for events made outside the broker's own kinds).
    pub async fn record(&self, event: AuditEvent) {
        self.send(Command::Record(event)).await;
    }

    async fn send(&self, command: Command) {
        if self.queue.send(command).await.is_err() {
            tracing::warn!("the audit writer has stopped; an event was lost");
        }
    }

    /// Records a failed attempt by a caller nobody authenticated (a junk link, a wrong
    /// password), from `client` (its address): the first of a window is written as it comes,
    /// its repeats in that window are counted into one more row (`"repeated": n`), so that a
    /// stranger's flood costs two rows a minute, not one per request.
    pub(crate) async fn anonymous_failure(&self, at: i64, event: Event<'_>, client: &str) {
        self.send(Command::Anonymous(event.row(at), client.to_owned())).await;
    }

    /// Returns once every event recorded before the call is in the database (while the
    /// database cannot be reached, not before it returns); the repeats of anonymous failures
    /// counted so far are written as their summary rows, and a new window begins.
    pub async fn flush(&self) {
        let (done, written) = oneshot::channel();
        if self.queue.send(Command::Flush(done)).await.is_ok() {
            let _ = written.await;
        }
    }
}

/// Sleeps until `at`, or for ever without one.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
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
    anonymous: AnonymousFailures,
}

/// One window's anonymous failures: per (kind, outcome, client) the repeats after the first.
struct AnonymousFailures {
    window_ends: Option<Instant>,
    repeats: std::collections::HashMap<(String, String, String), (u64, AuditEvent)>,
}

/// The row's client when the window's addresses are used up.
const OTHER_ADDRESSES: &str = "other addresses";

impl AnonymousFailures {
    fn new() -> AnonymousFailures {
        AnonymousFailures { window_ends: None, repeats: std::collections::HashMap::new() }
    }

    /// The event to write now, if this is the first of its kind from `client` in the window.
    fn take(&mut self, mut event: AuditEvent, client: String, now: Instant) -> Option<AuditEvent> {
        self.window_ends.get_or_insert(now + ANONYMOUS_WINDOW);
        let client = if self.repeats.len() < ANONYMOUS_ADDRESSES_PER_WINDOW
            || self.repeats.contains_key(&(event.kind.clone(), event.outcome.clone(), client.clone()))
        {
            client
        } else {
            OTHER_ADDRESSES.to_owned()
        };
        let key = (event.kind.clone(), event.outcome.clone(), client.clone());
        if let Some((count, last)) = self.repeats.get_mut(&key) {
            *count += 1;
            *last = event;
            return None;
        }
        event.detail = with_client(&event.detail, &client, None);
        let first = client != OTHER_ADDRESSES;
        self.repeats.insert(key, (u64::from(!first), event.clone()));
        first.then_some(event)
    }

    /// Ends the window: one row for each (kind, outcome, client) that repeated.
    fn close(&mut self) -> Vec<AuditEvent> {
        self.window_ends = None;
        self.repeats
            .drain()
            .filter(|(_, (count, _))| *count > 0)
            .map(|((_, _, client), (count, mut last))| {
                last.detail = with_client(&last.detail, &client, Some(count));
                last
            })
            .collect()
    }
}

/// `detail` (a JSON object) with the client's address and, for a summary, the repeats counted.
fn with_client(detail: &str, client: &str, repeated: Option<u64>) -> String {
    let mut value = serde_json::from_str::<serde_json::Value>(detail).unwrap_or_else(|_| serde_json::json!({}));
    if let Some(object) = value.as_object_mut() {
        object.insert("client".to_owned(), client.into());
        if let Some(count) = repeated {
            object.insert("repeated".to_owned(), count.into());
            object.insert("window_seconds".to_owned(), ANONYMOUS_WINDOW.as_secs().into());
        }
    }
    value.to_string()
}

impl Writer {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut retry_at: Option<Instant> = None;
        let mut pause = RETRY_FIRST;
        let mut open = true;
        loop {
            if self.anonymous.window_ends.is_some_and(|end| end <= Instant::now()) {
                for summary in self.anonymous.close() {
                    self.push(summary);
                }
            }
            match retry_at {
                None if self.pending.is_empty() => {
                    let window_ends = self.anonymous.window_ends;
                    tokio::select! {
                        command = commands.recv() => match command {
                            Some(command) => self.take(command),
                            None => {
                                // Stopping: the counted repeats are written with the rest.
                                let summaries = self.anonymous.close();
                                if summaries.is_empty() {
                                    return;
                                }
                                summaries.into_iter().for_each(|summary| self.push(summary));
                            }
                        },
                        () = sleep_until_some(window_ends) => {}
                    }
                }
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
            Command::Record(event) => self.push(event),
            Command::Anonymous(event, client) => {
                if let Some(first) = self.anonymous.take(event, client, Instant::now()) {
                    self.push(first);
                }
            }
            Command::Flush(done) => {
                // A flush writes everything known so far, the repeats counted included.
                for summary in self.anonymous.close() {
                    self.push(summary);
                }
                self.waiting.push(done);
            }
        }
    }

    fn push(&mut self, event: AuditEvent) {
        match event {
            event if self.pending.len() < self.limit => self.pending.push_back(event),
            _ => {
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
