//! The budget of pending sign-ins: how many anonymous callers may store, per client address
//! and all together, so that unfinished sign-ins cannot fill the database.

use super::SignInError;
use crate::store::{AuthRequestRow, Store};

/// What anonymous callers may store: each client address at most `per_address` live pending
/// sign-ins, everyone together at most `ceiling`. Requests with a live session never meet it.
#[derive(Debug)]
pub(crate) struct PendingBudget {
    per_address: u32,
    ceiling: u32,
    /// The live count last read from the database and when, plus this replica's inserts since:
    /// the ceiling is read at most once a second, not on every request.
    live: std::sync::Mutex<LiveCount>,
    /// One address's count and insert run one at a time in this replica, so that requests sent
    /// together cannot all pass the count before any is stored.
    address_locks: Vec<tokio::sync::Mutex<()>>,
    /// Whether new sign-ins are being refused at the ceiling: the log says so when it starts
    /// and when it ends, not once per refused request (a flood would flood the log too).
    at_ceiling: std::sync::atomic::AtomicBool,
}

#[derive(Debug, Default, Clone, Copy)]
struct LiveCount {
    read_at: Option<i64>,
    live: i64,
}

/// How many seconds a refused browser is told to wait.
pub(crate) const PENDING_BUDGET_RETRY_AFTER_SECONDS: u64 = 60;

impl PendingBudget {
    pub(crate) fn new(per_address: u32, ceiling: u32) -> PendingBudget {
        PendingBudget {
            per_address,
            ceiling,
            live: std::sync::Mutex::new(LiveCount::default()),
            address_locks: (0..64).map(|_| tokio::sync::Mutex::new(())).collect(),
            at_ceiling: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn address_lock(&self, client_key: &str) -> &tokio::sync::Mutex<()> {
        use std::hash::{BuildHasher as _, BuildHasherDefault, DefaultHasher};
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(client_key);
        let stripe = usize::try_from(hash % self.address_locks.len() as u64).unwrap_or(0);
        &self.address_locks[stripe]
    }

    fn known_live(&self, now: i64) -> Option<i64> {
        let live = *self.live.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        live.read_at.filter(|at| now - at < 1).map(|_| live.live)
    }

    fn set_live(&self, now: i64, count: i64) {
        *self.live.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
            LiveCount { read_at: Some(now), live: count };
    }

    fn count_insert(&self) {
        self.live.lock().unwrap_or_else(std::sync::PoisonError::into_inner).live += 1;
    }

    /// Stores `row` for `client_key` within both bounds, or says which bound refused it.
    pub(super) async fn insert(
        &self,
        store: &Store,
        row: &AuthRequestRow,
        client_key: &str,
    ) -> Result<(), SignInError> {
        let now = row.created_at;
        let live = match self.known_live(now) {
            Some(live) => live,
            None => {
                let live = store.count_live_auth_requests(now, self.ceiling).await?;
                self.set_live(now, live);
                live
            }
        };
        let full = live >= i64::from(self.ceiling);
        if full != self.at_ceiling.swap(full, std::sync::atomic::Ordering::Relaxed) {
            if full {
                tracing::warn!(
                    ceiling = self.ceiling,
                    "new sign-ins are refused (503): {} sign-ins are pending (http.max_pending_sign_ins)",
                    self.ceiling
                );
            } else {
                tracing::info!("pending sign-ins are below http.max_pending_sign_ins again: new sign-ins are taken");
            }
        }
        if full {
            return Err(SignInError::SignInsBusy);
        }
        let _one_at_a_time = self.address_lock(client_key).lock().await;
        if !store.insert_auth_request_within_budget(row, client_key, self.per_address).await? {
            return Err(SignInError::TooManyPendingSignIns);
        }
        self.count_insert();
        Ok(())
    }
}
