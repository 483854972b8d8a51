//! The refresh coordinator: serves an identity's upstream access token, refreshing it first
//! when it is about to expire — once per identity however many readers ask, within a process
//! (one shared in-flight refresh) and across replicas (a lease held in the token's row) — and
//! answers every read within one deadline per refresh, whatever the upstream does.
//!
//! The lease is a pair of columns rather than a row lock or a Postgres advisory lock, so that
//! no database connection is held while the upstream call is in flight (a storm of expiring
//! identities would otherwise take the whole pool) and so that SQLite works alike. It is short
//! and renewed while its refresh runs: a process that dies, or stops without giving it back,
//! frees the identity within `LEASE_SECONDS`; shutdown gives back what it holds.
//!
//! Each refresh runs in a task of its own with a deadline (`vault.refresh_timeout_seconds`):
//! attempts start only before it, and readers stop waiting at it, taking the stored token
//! while it is valid, else a 503. An attempt begun before the deadline may finish after it,
//! within the upstream client's own limit, and its answer is stored: Entra rotates the
//! refresh token on every use, so an answer thrown away would waste the newest one.
//!
//! Entra throttling the provider (429 with `Retry-After`, AADSTS50196) rests the provider as a
//! whole: the deadline is kept in the database (`provider_backoffs`), so that no replica sends a
//! refresh before it, and in memory, so that readers meanwhile are answered at once (the stored
//! token while valid, else 503 with a `Retry-After` at least as long as the wait left). Every
//! refresh call takes a slot of the pacer (`vault.max_refreshes_per_second`, slots stretched at
//! random), so that the identities that waited out a throttling window or an outage reach Entra
//! spread out; a reader whose slot would come after its deadline is answered without it.
//!
//! What each answer means (a row's worth at `now`, a failure's meaning, the time to try again)
//! is decided in `verdicts`, without I/O; this file performs what it decides.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures_util::future::{BoxFuture, FutureExt, Shared};
use secrecy::SecretString;
use tokio::sync::{oneshot, watch};

use super::error::VaultError;
use super::verdicts::{self, Found, RefreshRefused, Validity};
use super::{Cipher, UpstreamTokens, open_tokens, seal_tokens};
use crate::audit::{AuditLog, Event};
use crate::clock::Clock;
use crate::config::VaultSettings;
use crate::crypto::{CipherError, new_id, random_bytes};
use crate::store::{IdentityKey, Lease, Store, StoreError, VaultRow};
use crate::telemetry::{Chain, Metrics};
use crate::upstream::{self, Provider, TokenResponse, Upstream, UpstreamError};

/// How long a lease lasts unless renewed: the longest a dead process keeps an identity from
/// being refreshed (plus the second the column's resolution adds).
/// Three seconds, so that a replica restarted after a kill serves the identity within a few
/// seconds of its readiness.
const LEASE_SECONDS: i64 = 3;
/// How often a running refresh renews its lease: several renewals fit in one lease, so that
/// one slow round trip to the database does not let it lapse.
const LEASE_RENEWAL: Duration = Duration::from_millis(750);
/// How long shutdown waits for the refreshes it cancels to give their leases back.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Why a read got no fresh token in time.
const PROVIDER_UNAVAILABLE: &str = "the provider is unavailable";
const PROVIDER_THROTTLED: &str = "the provider is throttling token refreshes";
const OUT_OF_TIME: &str = "the token could not be refreshed within `vault.refresh_timeout_seconds`";
const SHUTTING_DOWN: &str = "the broker is shutting down";

/// Where a read came from, for the audit trail and metrics.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TokenReader<'a> {
    /// `internal` (the service API) or `broker` (Keycloak's endpoint).
    pub(crate) surface: &'static str,
    /// The service account or client application that asked.
    pub(crate) client_id: &'a str,
}

/// A token as served, with whether this read had to wait for a refresh.
#[derive(Debug, Clone)]
pub(crate) struct ServedTokens {
    pub(crate) tokens: UpstreamTokens,
    pub(crate) refreshed: bool,
}

/// What one keep-alive pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeepAliveReport {
    pub refreshed: usize,
    pub failed: usize,
}

/// When tokens count as stale, and how long a refresh and its readers may take.
#[derive(Debug, Clone)]
pub(crate) struct RefreshPolicy {
    pub(crate) refresh_before_expiry: i64,
    pub(crate) timeout: Duration,
    pub(crate) keepalive_after: i64,
    pub(crate) keepalive_interval: Duration,
    pub(crate) keepalive_batch: i64,
    /// The least time between two refresh calls of this process (`vault.max_refreshes_per_second`).
    pub(crate) refresh_interval: Duration,
}

impl RefreshPolicy {
    pub(crate) fn from_settings(settings: &VaultSettings) -> Self {
        RefreshPolicy {
            refresh_before_expiry: settings.refresh_before_expiry_seconds,
            timeout: Duration::from_secs(settings.refresh_timeout_seconds),
            keepalive_after: settings.keepalive_after_seconds,
            keepalive_interval: Duration::from_secs(settings.keepalive_interval_seconds),
            keepalive_batch: settings.keepalive_batch_size,
            refresh_interval: Duration::from_secs(1) / settings.max_refreshes_per_second.max(1),
        }
    }
}

/// What started a refresh: a read (which took its pacer slot before its lease) or keep-alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    Read,
    KeepAlive,
}

impl Trigger {
    /// The audit trail's name.
    fn name(self) -> &'static str {
        match self {
            Trigger::Read => "read",
            Trigger::KeepAlive => "keepalive",
        }
    }
}

/// An identity's key owned, for the map of refreshes in flight.
type OwnedKey = (String, String);

/// A stored row as a reader finds it.
enum Stored {
    /// Good beyond the reader's threshold, opened.
    Fresh(UpstreamTokens),
    /// Expires within the reader's threshold: refresh first.
    Stale(VaultRow),
}

/// A refresh in flight in this process: its readers wait for its outcome until its deadline.
#[derive(Clone)]
struct Flight {
    deadline: tokio::time::Instant,
    outcome: Shared<BoxFuture<'static, Result<Arc<UpstreamTokens>, VaultError>>>,
}

/// A refresh lease this process holds, renewed in the background until dropped. Dropping it
/// does not give the lease back (that needs the database); it only lets the lease lapse.
struct HeldLease {
    _renewing: oneshot::Sender<()>,
}

/// The vault as services see it: read, refresh, keep alive, unlink. Cheap to clone.
#[derive(Clone)]
pub struct TokenVault {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for TokenVault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVault").field("owner", &self.inner.owner).finish_non_exhaustive()
    }
}

struct Inner {
    store: Store,
    audit: AuditLog,
    cipher: Arc<Cipher>,
    upstream: Upstream,
    metrics: Arc<Metrics>,
    clock: Clock,
    policy: RefreshPolicy,
    /// This process's name on the leases it takes.
    owner: String,
    flights: Mutex<HashMap<OwnedKey, Flight>>,
    /// True once shutdown began: refreshes stop and give their leases back.
    closing: watch::Sender<bool>,
    /// Providers this process knows Entra throttles: alias → the first second a refresh may
    /// be sent again (the database holds the deadline every replica obeys).
    deferrals: Mutex<HashMap<String, i64>>,
    /// When the pacer's next refresh slot is free.
    next_slot: Mutex<Instant>,
}

impl TokenVault {
    pub(crate) fn new(
        store: Store,
        audit: AuditLog,
        cipher: Arc<Cipher>,
        upstream: Upstream,
        metrics: Arc<Metrics>,
        clock: Clock,
        policy: RefreshPolicy,
    ) -> Self {
        let owner = new_id();
        let flights = Mutex::new(HashMap::new());
        let (closing, _) = watch::channel(false);
        let (deferrals, next_slot) = (Mutex::new(HashMap::new()), Mutex::new(Instant::now()));
        let inner = Inner {
            store,
            audit,
            cipher,
            upstream,
            metrics,
            clock,
            policy,
            owner,
            flights,
            closing,
            deferrals,
            next_slot,
        };
        TokenVault { inner: Arc::new(inner) }
    }

    /// Stops the refreshes in flight and gives back every lease this process holds, so that
    /// other replicas refresh those identities at once rather than when the leases lapse.
    pub(crate) async fn shutdown(&self) {
        let inner = &self.inner;
        inner.closing.send_replace(true);
        let grace_ends = Instant::now() + SHUTDOWN_GRACE;
        while inner.refreshes_in_flight() > 0 && Instant::now() < grace_ends {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        match inner.store.release_refresh_leases_of(&inner.owner).await {
            Ok(0) => {}
            Ok(released) => tracing::info!(released, "refresh leases given back at shutdown"),
            Err(err) => {
                tracing::warn!(error = %Chain(&err), "could not give refresh leases back; they lapse within seconds");
            }
        }
    }

    /// True when `alias` names a configured provider.
    pub(crate) fn knows_provider(&self, alias: &str) -> bool {
        self.inner.upstream.provider(alias).is_some()
    }

    /// The user's upstream token for `alias`, valid for more than `min_validity` seconds (and
    /// `refresh_before_expiry_seconds`) when a refresh can make it so. Audited and counted.
    pub(crate) async fn read(
        &self,
        reader: &TokenReader<'_>,
        identity: IdentityKey<'_>,
        min_validity: i64,
    ) -> Result<ServedTokens, VaultError> {
        let IdentityKey { user_id, alias } = identity;
        let result = self.inner.read(identity, min_validity).await;
        let outcome = match &result {
            Ok(served) if served.refreshed => "refreshed",
            Ok(_) => "ok",
            Err(err) => err.outcome(),
        };
        self.inner.metrics.count_token_read(reader.surface, alias, outcome);
        let event = Event::TokenRead {
            outcome,
            surface: reader.surface,
            client_id: reader.client_id,
            user_id,
            alias,
            min_validity,
        };
        self.inner.audit.event(self.inner.clock.now(), event).await;
        result
    }

    /// Erases the user's tokens for `alias` and unlinks the provider; the user stays.
    /// Returns false when the user was not linked to it.
    pub(crate) async fn unlink(&self, reader: &TokenReader<'_>, identity: IdentityKey<'_>) -> Result<bool, VaultError> {
        let IdentityKey { user_id, alias } = identity;
        let unlinked = self.inner.store.unlink_identity(identity).await?;
        let outcome = if unlinked { "unlinked" } else { "not_linked" };
        self.inner.metrics.count_unlink(alias, outcome);
        let event = Event::Unlink { outcome, surface: reader.surface, client_id: reader.client_id, user_id, alias };
        self.inner.audit.event(self.inner.clock.now(), event).await;
        Ok(unlinked)
    }

    /// Refreshes, a batch at a time, every identity whose tokens were last refreshed more
    /// than `keepalive_after` before `now`, so that its refresh token never dies of disuse.
    pub async fn keep_alive_once(&self, now: i64) -> Result<KeepAliveReport, StoreError> {
        let inner = &self.inner;
        let mut report = KeepAliveReport::default();
        let aliases: Vec<String> =
            inner.upstream.providers().filter(|p| p.store_token).map(|p| p.alias.clone()).collect();
        for alias in aliases {
            // The throttling deadline is the wall clock's, whatever moment `now` stands for.
            if let Some(left) = inner.deferred(&alias, inner.clock.now()).await? {
                tracing::info!(alias = %alias, wait_seconds = left, "keep-alive waits: the provider is throttling refreshes");
                continue;
            }
            loop {
                let lease = Lease { owner: &inner.owner, until: now + LEASE_SECONDS };
                let cutoff = now - inner.policy.keepalive_after;
                let batch =
                    inner.store.claim_stale_leases(&alias, cutoff, lease, now, inner.policy.keepalive_batch).await?;
                let claimed = batch.len();
                // Every lease of the batch is renewed until its turn comes and its refresh ends.
                let held: Vec<(VaultRow, HeldLease)> = batch
                    .into_iter()
                    .map(|row| {
                        let lease = inner.hold(row.key());
                        (row, lease)
                    })
                    .collect();
                let mut failed = 0;
                for (row, lease) in held {
                    let deadline = Instant::now() + inner.policy.timeout;
                    match inner.refresh_leased(row, lease, Trigger::KeepAlive, now, deadline).await {
                        Ok(_) => report.refreshed += 1,
                        Err(_) => failed += 1,
                    }
                }
                report.failed += failed;
                if !verdicts::another_batch(claimed, inner.policy.keepalive_batch, failed) {
                    break;
                }
            }
        }
        Ok(report)
    }

    /// Runs keep-alive passes forever, one every `keepalive_interval`.
    pub(crate) async fn run_keep_alive(self) {
        let period = self.inner.policy.keepalive_interval;
        let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        loop {
            interval.tick().await;
            match self.keep_alive_once(self.inner.clock.now()).await {
                Ok(report) if report.refreshed + report.failed > 0 => {
                    tracing::info!(refreshed = report.refreshed, failed = report.failed, "keep-alive pass");
                }
                Ok(_) => {}
                Err(err) => tracing::warn!(error = %Chain(&err), "keep-alive pass failed"),
            }
        }
    }
}

impl Inner {
    fn open(&self, row: &VaultRow) -> Result<UpstreamTokens, VaultError> {
        open_tokens(&self.cipher, row).map_err(|err| match err {
            CipherError::UnknownKey(key_id) => {
                tracing::error!(
                    alias = %row.alias,
                    user_id = %row.user_id,
                    vault_key_id = %key_id,
                    "OPERATOR ACTION NEEDED: stored tokens are sealed under vault key `{key_id}`, which is not configured; add it back to `vault.encryption_keys` (then `identity-broker vault rekey` moves the rows to the first key)"
                );
                VaultError::KeyNotConfigured { key_id }
            }
            other => VaultError::internal("cannot open stored tokens", other),
        })
    }

    async fn read(self: &Arc<Self>, identity: IdentityKey<'_>, min_validity: i64) -> Result<ServedTokens, VaultError> {
        let IdentityKey { user_id, alias } = identity;
        let not_linked = || VaultError::NotLinked { user_id: user_id.to_owned(), alias: alias.to_owned() };
        let provider = self.upstream.provider(alias).ok_or_else(not_linked)?;
        if !provider.settings.store_token {
            return Err(VaultError::NotStored { alias: alias.to_owned() });
        }
        let threshold = self.policy.refresh_before_expiry.max(min_validity);
        let row = match self.stored(identity, threshold).await? {
            Stored::Fresh(tokens) => return Ok(ServedTokens { tokens, refreshed: false }),
            Stored::Stale(row) => row,
        };
        let refreshed = match self.known_deferral(alias, self.clock.now()) {
            // Throttled: no refresh is tried, not even its lease taken, until the wait is over.
            Some(left) => Err(self.throttled(left)),
            None => self.shared_refresh(identity, threshold).await,
        };
        match refreshed {
            Ok(tokens) => Ok(ServedTokens { tokens: (*tokens).clone(), refreshed: true }),
            Err(err) if verdicts::serves_stored_after(&err, row.expires_at, self.clock.now()) => {
                Ok(ServedTokens { tokens: self.open(&row)?, refreshed: false })
            }
            Err(err) => Err(err),
        }
    }

    /// Joins the refresh of this identity already in flight in this process, or starts one,
    /// and waits for it until its deadline. The refresh runs in its own task, so it goes on
    /// (and stores a late answer) after its readers have stopped waiting.
    async fn shared_refresh(
        self: &Arc<Self>,
        identity: IdentityKey<'_>,
        threshold: i64,
    ) -> Result<Arc<UpstreamTokens>, VaultError> {
        let key = (identity.user_id.to_owned(), identity.alias.to_owned());
        let flight = {
            let mut flights = self.flights.lock().unwrap_or_else(PoisonError::into_inner);
            flights.entry(key.clone()).or_insert_with(|| self.start_refresh(key, threshold)).clone()
        };
        match tokio::time::timeout_at(flight.deadline, flight.outcome).await {
            Ok(result) => result,
            Err(_) => Err(self.unavailable(OUT_OF_TIME)),
        }
    }

    fn start_refresh(self: &Arc<Self>, key: OwnedKey, threshold: i64) -> Flight {
        let deadline = Instant::now() + self.policy.timeout;
        let inner = self.clone();
        let task = tokio::spawn(async move {
            let identity = IdentityKey { user_id: &key.0, alias: &key.1 };
            let result = inner.refresh_identity(identity, threshold, deadline).await;
            inner.flights.lock().unwrap_or_else(PoisonError::into_inner).remove(&key);
            result
        });
        let outcome =
            async move { task.await.unwrap_or_else(|err| Err(VaultError::internal("the refresh task failed", err))) }
                .boxed()
                .shared();
        Flight { deadline: deadline.into(), outcome }
    }

    fn refreshes_in_flight(&self) -> usize {
        self.flights.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    fn closing(&self) -> bool {
        *self.closing.borrow()
    }

    fn unavailable(&self, cause: &'static str) -> VaultError {
        VaultError::Unavailable { cause, retry_after: verdicts::retry_after(self.policy.timeout) }
    }

    /// A reader's answer while the provider rests `left` more seconds: come back after it, a
    /// little later for some (so that they do not all come back in the same second).
    fn throttled(&self, left: u64) -> VaultError {
        let random = u16::from_le_bytes(random_bytes::<2>());
        VaultError::Unavailable { cause: PROVIDER_THROTTLED, retry_after: verdicts::deferred_retry_after(left, random) }
    }

    /// The seconds `alias` still rests at `now`, as this process knows without asking.
    fn known_deferral(&self, alias: &str, now: i64) -> Option<u64> {
        let deferrals = self.deferrals.lock().unwrap_or_else(PoisonError::into_inner);
        verdicts::deferral_left(deferrals.get(alias).copied(), now)
    }

    /// The seconds `alias` still rests at `now`, as every replica agrees (the database); `None`
    /// when a refresh may be sent.
    async fn deferred(&self, alias: &str, now: i64) -> Result<Option<u64>, StoreError> {
        if let Some(left) = self.known_deferral(alias, now) {
            return Ok(Some(left));
        }
        let retry_at = self.store.provider_deferred_until(alias).await?;
        if let Some(retry_at) = retry_at.filter(|at| *at > now) {
            self.deferrals.lock().unwrap_or_else(PoisonError::into_inner).insert(alias.to_owned(), retry_at);
        }
        Ok(verdicts::deferral_left(retry_at, now))
    }

    /// Rests `alias` until `retry_at` on every replica; returns the seconds left from `now` (a
    /// later deadline another replica recorded wins).
    async fn defer(&self, alias: &str, retry_at: i64, now: i64) -> Result<u64, StoreError> {
        let retry_at = self.store.defer_provider(alias, retry_at, now).await?;
        let known = self.deferrals.lock().unwrap_or_else(PoisonError::into_inner).insert(alias.to_owned(), retry_at);
        let left = verdicts::deferral_left(Some(retry_at), now).unwrap_or(0);
        if known != Some(retry_at) {
            tracing::warn!(
                alias = %alias,
                wait_seconds = left,
                "the provider is throttling token refreshes; none is sent to it before the wait is over (no identity is marked)"
            );
        }
        Ok(left)
    }

    /// Waits for this process's next refresh slot; false when it would come at or after
    /// `deadline` (nothing is reserved then).
    async fn paced(&self, deadline: Instant) -> bool {
        let slot = {
            let mut next = self.next_slot.lock().unwrap_or_else(PoisonError::into_inner);
            let random = u16::from_le_bytes(random_bytes::<2>());
            match verdicts::paced_slot(*next, Instant::now(), self.policy.refresh_interval, random, deadline) {
                Some((slot, after)) => {
                    *next = after;
                    slot
                }
                None => return false,
            }
        };
        tokio::time::sleep_until(slot.into()).await;
        true
    }

    /// Renews the lease of an identity in the background until the returned value is dropped.
    fn hold(&self, identity: IdentityKey<'_>) -> HeldLease {
        let (renewing, mut stopped) = oneshot::channel::<()>();
        let (store, clock, owner) = (self.store.clone(), self.clock.clone(), self.owner.clone());
        let (user_id, alias) = (identity.user_id.to_owned(), identity.alias.to_owned());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = &mut stopped => return,
                    () = tokio::time::sleep(LEASE_RENEWAL) => {}
                }
                let identity = IdentityKey { user_id: &user_id, alias: &alias };
                match store.renew_refresh_lease(identity, &owner, clock.now() + LEASE_SECONDS).await {
                    Ok(true) => {}
                    // Given back, or lapsed and taken: the holder's write will not match either.
                    Ok(false) => return,
                    Err(err) => tracing::warn!(error = %Chain(&err), alias = %alias, "could not renew a refresh lease"),
                }
            }
        });
        HeldLease { _renewing: renewing }
    }

    /// Takes the identity's lease and refreshes it, or waits (polling, no connection held) for
    /// the process that holds the lease and uses its result — until `deadline`. A lease whose
    /// holder died lapses within `LEASE_SECONDS`, and is then taken here.
    async fn refresh_identity(
        &self,
        identity: IdentityKey<'_>,
        threshold: i64,
        deadline: Instant,
    ) -> Result<Arc<UpstreamTokens>, VaultError> {
        // Rest and pace before the lease is taken, so that a lease is held only while its
        // refresh is under way, not while it waits for its turn.
        if let Some(left) = self.deferred(identity.alias, self.clock.now()).await? {
            return Err(self.throttled(left));
        }
        if !self.paced(deadline).await {
            tracing::info!(alias = %identity.alias, "no refresh slot before the readers' deadline (vault.max_refreshes_per_second); refresh postponed");
            return Err(self.unavailable(OUT_OF_TIME));
        }
        let mut pause = Duration::from_millis(20);
        loop {
            if self.closing() {
                return Err(self.unavailable(SHUTTING_DOWN));
            }
            let now = self.clock.now();
            let lease = Lease { owner: &self.owner, until: now + LEASE_SECONDS };
            if let Some(row) = self.store.claim_refresh_lease(identity, lease, now).await? {
                // Read again under the lease: another replica may have just refreshed.
                if verdicts::validity(row.expires_at, now, threshold) == Validity::Fresh {
                    self.store.release_refresh_lease(identity, &self.owner).await?;
                    return Ok(Arc::new(self.open(&row)?));
                }
                let held = self.hold(identity);
                return self.refresh_leased(row, held, Trigger::Read, now, deadline).await.map(Arc::new);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let Some((wait, next_pause)) = verdicts::poll_wait(pause, left) else {
                return Err(self.unavailable(OUT_OF_TIME));
            };
            tokio::time::sleep(wait).await;
            pause = next_pause;
            if let Stored::Fresh(tokens) = self.stored(identity, threshold).await? {
                return Ok(Arc::new(tokens));
            }
        }
    }

    /// The identity's stored tokens, fresh or due for a refresh; an error when the identity
    /// is gone, keeps no tokens, or must sign in again before a refresh can help.
    async fn stored(&self, identity: IdentityKey<'_>, threshold: i64) -> Result<Stored, VaultError> {
        if let Some(cached) = self.store.cached_linked_tokens(identity)
            && let Some(row) = verdicts::served_from_cache(&cached, self.clock.now(), threshold)
        {
            return Ok(Stored::Fresh(self.open(row)?));
        }
        let linked = self.store.find_linked_tokens(identity).await?;
        Ok(match verdicts::found(linked, identity, self.clock.now(), threshold)? {
            Found::Fresh(row) => Stored::Fresh(self.open(&row)?),
            Found::Stale(row) => Stored::Stale(row),
        })
    }

    /// Refreshes a row whose lease this process holds; always gives the lease back.
    async fn refresh_leased(
        &self,
        row: VaultRow,
        held: HeldLease,
        trigger: Trigger,
        now: i64,
        deadline: Instant,
    ) -> Result<UpstreamTokens, VaultError> {
        let started = Instant::now();
        let result = self.refresh_upstream(&row, trigger, now, deadline).await;
        if result.is_err()
            && let Err(err) = self.store.release_refresh_lease(row.key(), &self.owner).await
        {
            tracing::warn!(error = %Chain(&err), alias = %row.alias, "could not release a refresh lease; it expires on its own");
        }
        drop(held);
        if result.is_ok() && Instant::now() > deadline {
            tracing::info!(alias = %row.alias, "the provider answered a refresh after its readers' deadline; the new tokens are stored");
        }
        let outcome = match &result {
            Ok(_) => "refreshed",
            Err(err) => err.outcome(),
        };
        let elapsed = started.elapsed();
        self.metrics.observe_refresh(&row.alias, outcome, elapsed);
        let latency_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        let event = Event::TokenRefresh {
            outcome,
            trigger: trigger.name(),
            user_id: &row.user_id,
            alias: &row.alias,
            latency_ms,
        };
        self.audit.event(self.clock.now(), event).await;
        result
    }

    /// Asks the upstream, with retries begun before `deadline`; the last attempt may run past
    /// it by the upstream client's own limit. Shutdown abandons the call.
    async fn refresh_upstream(
        &self,
        row: &VaultRow,
        trigger: Trigger,
        now: i64,
        deadline: Instant,
    ) -> Result<UpstreamTokens, VaultError> {
        let provider = self.upstream.provider(&row.alias).ok_or_else(|| VaultError::Misconfigured {
            cause: "the provider is no longer configured".to_owned(),
            config_key: format!("providers.{}", row.alias),
        })?;
        let stored = self.open(row)?;
        let refresh_token = stored.refresh_token.clone().ok_or_else(|| VaultError::Misconfigured {
            cause: "no refresh token is stored; Entra returns one only when `offline_access` is requested".to_owned(),
            config_key: format!("providers.{}.scopes", row.alias),
        })?;
        // A keep-alive batch stops at once when one of its refreshes was throttled.
        if let Some(left) = self.known_deferral(&row.alias, self.clock.now()) {
            return Err(self.throttled(left));
        }
        let call = self.call_with_retries(provider, &refresh_token, trigger, deadline);
        let mut closing = self.closing.subscribe();
        let answer = tokio::select! {
            answer = tokio::time::timeout_at((deadline + upstream::REQUEST_TIMEOUT).into(), call) => answer,
            _ = closing.wait_for(|closing| *closing) => return Err(self.unavailable(SHUTTING_DOWN)),
        };
        let Ok(answer) = answer else {
            tracing::warn!(alias = %row.alias, "the provider did not answer a refresh in time; refresh postponed");
            return Err(self.unavailable(OUT_OF_TIME));
        };
        let Some(answer) = answer else {
            tracing::info!(alias = %row.alias, "no refresh slot before the readers' deadline (vault.max_refreshes_per_second); refresh postponed");
            return Err(self.unavailable(OUT_OF_TIME));
        };
        match answer {
            Ok(response) => {
                let fresh = stored.refreshed(response, now);
                let sealed = seal_tokens(&self.cipher, row.key(), &fresh, now);
                if !self.store.finish_refresh(&sealed, &self.owner).await? {
                    tracing::warn!(alias = %row.alias, "the refresh outlived its lease (or the identity was unlinked); tokens not stored");
                }
                Ok(fresh)
            }
            Err(err) => Err(self.refusal(provider, row, err, now).await),
        }
    }

    /// The upstream's answer, retried when transient; every attempt waits for a slot of the
    /// pacer (a read took its first before its lease). `None` when the first attempt gets no
    /// slot before `deadline`.
    async fn call_with_retries(
        &self,
        provider: &Provider,
        refresh_token: &SecretString,
        trigger: Trigger,
        deadline: Instant,
    ) -> Option<Result<TokenResponse, UpstreamError>> {
        let mut attempt = 0;
        let mut last = None;
        loop {
            let slot_taken = attempt == 0 && trigger == Trigger::Read;
            if !slot_taken && !self.paced(deadline).await {
                return last.map(Err);
            }
            let result = match self.upstream.metadata(provider).await {
                Ok(metadata) => self.upstream.refresh(provider, &metadata, refresh_token).await,
                Err(err) => Err(err),
            };
            let err = match result {
                Ok(response) => return Some(Ok(response)),
                Err(err) => err,
            };
            let Some(delay) = verdicts::retry_delay(&err, attempt, Instant::now(), deadline) else {
                return Some(Err(err));
            };
            tracing::info!(alias = %provider.settings.alias, attempt, error = %Chain(&err), "refresh failed transiently; retrying");
            tokio::time::sleep(delay).await;
            last = Some(err);
            attempt += 1;
        }
    }

    /// Turns an upstream refusal into what the reader is told: rests a throttled provider,
    /// marks the identity when the user must sign in again (or is blocked by policy).
    async fn refusal(&self, provider: &Provider, row: &VaultRow, err: UpstreamError, now: i64) -> VaultError {
        let alias = &provider.settings.alias;
        let identity = row.key();
        match verdicts::refresh_refused(&err, alias, &provider.settings.display_name, self.clock.now()) {
            RefreshRefused::Unavailable => {
                tracing::warn!(alias = %alias, error = %Chain(&err), "the provider is unavailable; refresh postponed");
                self.unavailable(PROVIDER_UNAVAILABLE)
            }
            RefreshRefused::Throttled { retry_at } => match self.defer(alias, retry_at, self.clock.now()).await {
                Ok(left) => self.throttled(left),
                Err(store_err) => store_err.into(),
            },
            RefreshRefused::Reauthenticate { reason, kind, mark } => {
                if let Err(store_err) = self.store.mark_needs_reauth(identity, &mark, &reason, now).await {
                    return store_err.into();
                }
                tracing::info!(
                    alias = %alias,
                    user_id = %row.user_id,
                    reauth_kind = kind.as_str(),
                    claims_challenge = mark.claims.is_some(),
                    reason = %reason,
                    "identity needs a new sign-in"
                );
                VaultError::ReauthRequired { reason, kind }
            }
            RefreshRefused::Blocked { reason, mark } => {
                if let Err(store_err) = self.store.mark_needs_reauth(identity, &mark, &reason, now).await {
                    return store_err.into();
                }
                let body = match &err {
                    UpstreamError::Refused { body, .. } => Some(body),
                    _ => None,
                };
                tracing::warn!(
                    alias = %alias,
                    user_id = %row.user_id,
                    aadsts = body.and_then(|b| b.aadsts()),
                    suberror = body.and_then(|b| b.suberror.as_deref()).unwrap_or_default(),
                    upstream_trace_id = body.and_then(|b| b.trace_id()).unwrap_or_default(),
                    upstream_correlation_id = body.and_then(|b| b.correlation_id()).unwrap_or_default(),
                    "a Conditional Access policy of the user's organization blocks the refresh; the identity is blocked until a sign-in succeeds (signing in again will not help until the policy allows it)"
                );
                VaultError::Blocked { reason }
            }
            RefreshRefused::Operator { cause, config_key } => {
                tracing::error!(
                    alias = %alias,
                    error = %Chain(&err),
                    config_key = %config_key,
                    "OPERATOR ACTION NEEDED: the provider refused a token refresh because of the broker's configuration: {cause}; fix `{config_key}`"
                );
                VaultError::Misconfigured { cause, config_key }
            }
        }
    }
}
