//! The rows every token read and every refresh grant looks up, kept in memory on Postgres:
//! identities with their sealed tokens, SSO sessions, users, and which tokens (refresh or
//! access) are known not to be revoked. Vault rows stay sealed here and are opened per read, as
//! when they come from the database.
//!
//! A cached row is never served once the database has changed it, within a notification's
//! delivery: triggers (migrations 0006 and 0010) send `NOTIFY identity_broker_changes` for every write
//! that matters, from any process (replicas, `vault rekey`, an operator's SQL), and a listener
//! here forgets the row. This process's own writes forget their rows before they return. While
//! the listener is not connected, nothing is served from memory or added to it; rows older
//! than [`MAX_AGE_SECONDS`] by the application's clock are not served either, in case a
//! connection dies without anyone noticing.
//!
//! A row read from the database is cached only if nothing was forgotten while it was being
//! read (the `epoch`), so an old row can never be put back after its change was announced.
//!
//! A hit allocates nothing and copies no ciphertext: lookups borrow their key, and rows are
//! shared (`Arc`) with the readers they are served to.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use quick_cache::sync::Cache;
use quick_cache::{Equivalent, Weighter};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sqlx::postgres::PgListener;

use super::{LinkedTokens, SessionRow, UserRow};
use crate::clock::Clock;

/// The channel the triggers of migration 0006 notify.
pub(crate) const CHANNEL: &str = "identity_broker_changes";
/// How long a cached row may be served without the database being asked again.
const MAX_AGE_SECONDS: i64 = 60;
/// Sessions, users and unrevoked tokens cached at most, of each: a few hundred bytes each.
const ROW_ENTRIES: usize = 20_000;
/// What a cached identity costs beyond its ciphertexts: keys, ids, the map's own slot.
const ENTRY_OVERHEAD: u64 = 256;
/// The triggers of migrations 0006 and 0010.
const TRIGGERS: [&str; 5] = [
    "vault_tokens_changed",
    "federated_identities_changed",
    "sso_sessions_changed",
    "users_changed",
    "revoked_tokens_added",
];
/// The wait before connecting the listener again after it failed.
const RECONNECT_PAUSE: Duration = Duration::from_secs(1);

/// `(user_id, alias)`.
type IdentityKey = (String, String);

/// A borrowed [`super::IdentityKey`] finds its owned tuple: its derived `Hash` hashes the two
/// strings in order, exactly as the tuple does, so both land in the same slot.
impl Equivalent<IdentityKey> for super::IdentityKey<'_> {
    fn equivalent(&self, key: &IdentityKey) -> bool {
        self.user_id == key.0 && self.alias == key.1
    }
}

#[derive(Clone)]
struct Entry<T> {
    row: Arc<T>,
    /// Unix seconds, by the cache's clock.
    cached_at: i64,
}

/// Weighs an identity by the bytes it holds, so that the cache's bound is in bytes.
#[derive(Clone)]
struct ByteSize;

impl Weighter<IdentityKey, Entry<LinkedTokens>> for ByteSize {
    fn weight(&self, key: &IdentityKey, entry: &Entry<LinkedTokens>) -> u64 {
        let tokens = entry.row.tokens.as_ref().map_or(0, |row| {
            row.access_token.len()
                + row.refresh_token.as_ref().map_or(0, Vec::len)
                + row.id_token.as_ref().map_or(0, Vec::len)
                + row.scope.len()
        });
        ENTRY_OVERHEAD + (key.0.len() + key.1.len() + tokens) as u64
    }
}

/// What a trigger announces: an identity (its tokens or its reauthentication mark), a session,
/// a user, or a token revoked.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Change {
    Identity { user_id: String, alias: String },
    Session { session: String },
    User { user: String },
    Revoked { revoked: String },
}

/// The cached rows of one process. Shared by every clone of the `Store` that enabled it.
pub(crate) struct RowCache {
    identities: Cache<IdentityKey, Entry<LinkedTokens>, ByteSize>,
    sessions: Cache<String, Entry<SessionRow>>,
    users: Cache<String, Entry<UserRow>>,
    /// A user's stored realm roles (`user_roles`), by user id; forgotten with the user.
    roles: Cache<String, Entry<Vec<String>>>,
    /// Tokens' `jti`s looked up in `revoked_tokens` and not found there.
    unrevoked: Cache<String, Entry<()>>,
    /// Counts forgettings; bumped under `forgetting` so that a fill cannot slip in between.
    epoch: AtomicU64,
    forgetting: Mutex<()>,
    listening: AtomicBool,
    clock: Clock,
}

impl std::fmt::Debug for RowCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RowCache")
            .field("identities", &self.identities.len())
            .field("sessions", &self.sessions.len())
            .field("users", &self.users.len())
            .field("roles", &self.roles.len())
            .field("unrevoked", &self.unrevoked.len())
            .field("listening", &self.listening.load(Ordering::Relaxed))
            .finish()
    }
}

/// Where a reader stands: the epoch before it asked the database.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket(u64);

impl RowCache {
    /// A cache of at most `bytes` of identities, filled once its listener is connected, which
    /// the returned cache does in a task of its own for as long as the cache is in use.
    pub(crate) fn start(database_url: SecretString, bytes: u64, clock: Clock) -> Arc<RowCache> {
        let cache = Arc::new(RowCache::new(bytes, clock));
        tokio::spawn(follow_changes(database_url, Arc::downgrade(&cache)));
        cache
    }

    /// A cache that serves nothing until `listening` is set.
    fn new(bytes: u64, clock: Clock) -> RowCache {
        let estimated = (bytes / 2048).max(16) as usize;
        RowCache {
            identities: Cache::with_weighter(estimated, bytes, ByteSize),
            sessions: Cache::new(ROW_ENTRIES),
            users: Cache::new(ROW_ENTRIES),
            roles: Cache::new(ROW_ENTRIES),
            unrevoked: Cache::new(ROW_ENTRIES),
            epoch: AtomicU64::new(0),
            forgetting: Mutex::new(()),
            listening: AtomicBool::new(false),
            clock,
        }
    }

    pub(crate) fn ticket(&self) -> Ticket {
        Ticket(self.epoch.load(Ordering::Acquire))
    }

    pub(crate) fn identity(&self, identity: super::IdentityKey<'_>) -> Option<Arc<LinkedTokens>> {
        if !self.listening.load(Ordering::Acquire) {
            return None;
        }
        let entry = self.identities.get(&identity)?;
        self.servable(entry.cached_at).then_some(entry.row)
    }

    pub(crate) fn session(&self, id: &str) -> Option<Arc<SessionRow>> {
        self.serve(&self.sessions, id)
    }

    pub(crate) fn user(&self, id: &str) -> Option<Arc<UserRow>> {
        self.serve(&self.users, id)
    }

    pub(crate) fn user_roles(&self, id: &str) -> Option<Arc<Vec<String>>> {
        self.serve(&self.roles, id)
    }

    /// True when the token `jti` is known not to be revoked; false means "ask the
    /// database", never "revoked".
    pub(crate) fn known_unrevoked(&self, jti: &str) -> bool {
        self.serve(&self.unrevoked, jti).is_some()
    }

    fn serve<T: Clone>(&self, rows: &Cache<String, Entry<T>>, key: &str) -> Option<Arc<T>> {
        if !self.listening.load(Ordering::Acquire) {
            return None;
        }
        let entry = rows.get(key)?;
        self.servable(entry.cached_at).then_some(entry.row)
    }

    /// Young enough to serve; a row cached "in the future" (the wall clock went back) is not.
    fn servable(&self, cached_at: i64) -> bool {
        (0..MAX_AGE_SECONDS).contains(&(self.clock.now() - cached_at))
    }

    pub(crate) fn keep_identity(&self, ticket: Ticket, row: &LinkedTokens) {
        let Some(tokens) = &row.tokens else {
            return;
        };
        let key = (tokens.user_id.clone(), tokens.alias.clone());
        self.keep(ticket, || self.identities.insert(key, self.entry(row.clone())));
    }

    pub(crate) fn keep_session(&self, ticket: Ticket, row: &SessionRow) {
        self.keep(ticket, || self.sessions.insert(row.id.clone(), self.entry(row.clone())));
    }

    pub(crate) fn keep_user(&self, ticket: Ticket, row: &UserRow) {
        self.keep(ticket, || self.users.insert(row.id.clone(), self.entry(row.clone())));
    }

    /// Keeps a user's stored roles, none included: every write to `user_roles` is announced
    /// (migration 0017), so an empty list read here is forgotten like any other.
    pub(crate) fn keep_user_roles(&self, ticket: Ticket, user_id: &str, roles: &[String]) {
        self.keep(ticket, || self.roles.insert(user_id.to_owned(), self.entry(roles.to_vec())));
    }

    /// Remembers that `jti` was not in `revoked_tokens` when the reader holding `ticket` asked.
    pub(crate) fn keep_unrevoked(&self, ticket: Ticket, jti: &str) {
        self.keep(ticket, || self.unrevoked.insert(jti.to_owned(), self.entry(())));
    }

    fn entry<T>(&self, row: T) -> Entry<T> {
        Entry { row: Arc::new(row), cached_at: self.clock.now() }
    }

    fn keep(&self, ticket: Ticket, insert: impl FnOnce()) {
        let _guard = self.forgetting.lock().unwrap_or_else(PoisonError::into_inner);
        if self.listening.load(Ordering::Acquire) && self.epoch.load(Ordering::Acquire) == ticket.0 {
            insert();
        }
    }

    pub(crate) fn forget_identity(&self, identity: super::IdentityKey<'_>) {
        let _guard = self.forgetting.lock().unwrap_or_else(PoisonError::into_inner);
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.identities.remove(&identity);
    }

    pub(crate) fn forget_session(&self, id: &str) {
        self.forget(&self.sessions, id);
    }

    /// Forgets the user's row and stored roles, which one announcement covers.
    pub(crate) fn forget_user(&self, id: &str) {
        let _guard = self.forgetting.lock().unwrap_or_else(PoisonError::into_inner);
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.users.remove(id);
        self.roles.remove(id);
    }

    pub(crate) fn forget_unrevoked(&self, jti: &str) {
        self.forget(&self.unrevoked, jti);
    }

    fn forget<T: Clone>(&self, rows: &Cache<String, Entry<T>>, key: &str) {
        let _guard = self.forgetting.lock().unwrap_or_else(PoisonError::into_inner);
        self.epoch.fetch_add(1, Ordering::AcqRel);
        rows.remove(key);
    }

    /// Forgets everything, and serves nothing until `listening` is set again.
    fn forget_all(&self, listening: bool) {
        let _guard = self.forgetting.lock().unwrap_or_else(PoisonError::into_inner);
        self.listening.store(listening, Ordering::Release);
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.identities.clear();
        self.sessions.clear();
        self.users.clear();
        self.roles.clear();
        self.unrevoked.clear();
    }

    fn apply(&self, payload: &str) {
        match serde_json::from_str::<Change>(payload) {
            Ok(Change::Identity { user_id, alias }) => {
                self.forget_identity(super::IdentityKey { user_id: &user_id, alias: &alias })
            }
            Ok(Change::Session { session }) => self.forget_session(&session),
            Ok(Change::User { user }) => self.forget_user(&user),
            Ok(Change::Revoked { revoked }) => self.forget_unrevoked(&revoked),
            Err(err) => {
                tracing::warn!(error = %err, "an unreadable change notification; forgetting every cached row");
                self.forget_all(true);
            }
        }
    }
}

/// Listens for changes while the cache lives, connecting again whenever the connection drops;
/// notifications sent in between are lost, so everything cached is forgotten then.
async fn follow_changes(database_url: SecretString, cache: Weak<RowCache>) {
    loop {
        let mut listener = match listen(&database_url).await {
            Ok(Some(listener)) => listener,
            Ok(None) => {
                tracing::error!(
                    "the database lacks the change triggers of migrations 0006 and 0010 (run \
                     `identity-broker migrate`); token reads go to the database"
                );
                return;
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for changes; token reads go to the database");
                tokio::time::sleep(RECONNECT_PAUSE).await;
                match cache.upgrade() {
                    Some(_) => continue,
                    None => return,
                }
            }
        };
        match cache.upgrade() {
            Some(cache) => cache.forget_all(true),
            None => return,
        }
        loop {
            // `try_recv` gives `None` when the connection was lost.
            let received = listener.try_recv().await;
            let Some(cache) = cache.upgrade() else {
                return;
            };
            match received {
                Ok(Some(notification)) => cache.apply(notification.payload()),
                Ok(None) | Err(_) => {
                    tracing::warn!("lost the change notifications' connection; reconnecting");
                    cache.forget_all(false);
                    break;
                }
            }
        }
    }
}

/// A listener on [`CHANNEL`], or `None` when the triggers that notify it are missing (a
/// database not migrated yet), since nothing would ever be forgotten then.
async fn listen(database_url: &SecretString) -> Result<Option<PgListener>, sqlx::Error> {
    let mut listener = PgListener::connect(database_url.expose_secret()).await?;
    // A lost connection must end `try_recv` at once, so that nothing is served from memory
    // while no notification can arrive; by default it would first wait (up to 30 s, for as
    // long as the database is down) to connect again.
    listener.eager_reconnect(false);
    let triggers: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM pg_trigger WHERE tgname = ANY($1)")
        .bind(&TRIGGERS[..])
        .fetch_one(&mut listener)
        .await?;
    if triggers < TRIGGERS.len() as i64 {
        return Ok(None);
    }
    listener.listen(CHANNEL).await?;
    Ok(Some(listener))
}

#[cfg(test)]
mod tests {
    use std::hash::BuildHasher as _;

    use super::*;
    use crate::store::VaultRow;

    fn key<'a>(user_id: &'a str, alias: &'a str) -> crate::store::IdentityKey<'a> {
        crate::store::IdentityKey { user_id, alias }
    }

    fn linked(user_id: &str, alias: &str) -> LinkedTokens {
        let tokens = VaultRow {
            user_id: user_id.to_owned(),
            alias: alias.to_owned(),
            vault_key_id: "k1".to_owned(),
            access_token: vec![1; 64],
            refresh_token: Some(vec![2; 64]),
            id_token: None,
            token_type: "Bearer".to_owned(),
            scope: "openid".to_owned(),
            expires_at: 2_000,
            refresh_expires_at: None,
            refreshed_at: 1_000,
            updated_at: 1_000,
        };
        LinkedTokens {
            user_enabled: true,
            needs_reauth: false,
            reauth_reason: None,
            reauth_kind: None,
            tokens: Some(tokens),
        }
    }

    #[test]
    fn a_borrowed_key_hashes_and_compares_as_the_owned_one() {
        let hasher = std::collections::hash_map::RandomState::new();
        let owned: IdentityKey = ("u1".to_owned(), "azure_devops".to_owned());
        assert_eq!(hasher.hash_one(key("u1", "azure_devops")), hasher.hash_one(&owned));
        assert!(key("u1", "azure_devops").equivalent(&owned));
        assert!(!key("u1azure", "_devops").equivalent(&owned), "the halves stay apart");
    }

    #[test]
    fn hits_share_the_cached_row_and_forgetting_finds_it_by_a_borrowed_key() {
        let cache = RowCache::new(1024 * 1024, Clock::default());
        cache.listening.store(true, Ordering::Release);
        cache.keep_identity(cache.ticket(), &linked("u1", "azure_devops"));

        let first = cache.identity(key("u1", "azure_devops")).expect("a hit");
        let second = cache.identity(key("u1", "azure_devops")).expect("a hit");
        assert!(Arc::ptr_eq(&first, &second), "a hit shares the row, it does not copy it");
        assert!(cache.identity(key("u1", "other")).is_none());

        cache.forget_identity(key("u1", "azure_devops"));
        assert!(cache.identity(key("u1", "azure_devops")).is_none(), "forgotten");
    }

    fn user(id: &str) -> UserRow {
        UserRow {
            id: id.to_owned(),
            username: "bob@contoso.com".to_owned(),
            email: Some("bob@contoso.com".to_owned()),
            email_verified: true,
            first_name: Some("Bob".to_owned()),
            last_name: None,
            full_name: None,
            enabled: true,
            created_at: 1_700_000_000,
        }
    }

    #[test]
    fn a_users_announcement_forgets_their_roles_and_a_fill_after_it_is_refused() {
        let cache = RowCache::new(1024 * 1024, Clock::default());
        cache.listening.store(true, Ordering::Release);
        let before = cache.ticket();
        cache.keep_user_roles(cache.ticket(), "u1", &["admin".to_owned()]);
        cache.keep_user_roles(cache.ticket(), "u2", &[]);
        assert_eq!(cache.user_roles("u2").as_deref(), Some(&Vec::new()), "no roles is a value too");

        cache.apply(r#"{"user": "u1"}"#);
        cache.keep_user_roles(before, "u1", &["stale".to_owned()]);

        assert!(cache.user_roles("u1").is_none(), "forgotten, and a read begun before is not kept");
        assert!(cache.user_roles("u2").is_some(), "another user's stay");
    }

    #[test]
    fn each_announcement_forgets_its_own_row_only() {
        let cache = RowCache::new(1024 * 1024, Clock::default());
        cache.listening.store(true, Ordering::Release);
        for id in ["u1", "u2"] {
            cache.keep_user(cache.ticket(), &user(id));
        }
        for jti in ["j1", "j2"] {
            cache.keep_unrevoked(cache.ticket(), jti);
        }

        cache.apply(r#"{"user":"u1"}"#);
        assert!(cache.user("u1").is_none(), "a user changed elsewhere is forgotten");
        assert_eq!(cache.user("u2").map(|u| u.id.clone()).as_deref(), Some("u2"));
        assert!(cache.known_unrevoked("j1"), "a user's change leaves revocations alone");

        cache.apply(r#"{"revoked":"j1"}"#);
        assert!(!cache.known_unrevoked("j1"), "a token revoked elsewhere is asked about again");
        assert!(cache.known_unrevoked("j2"));

        cache.apply(r#"{"user_id":"u2","alias":"azure_devops"}"#);
        assert!(cache.user("u2").is_some(), "an identity's change is not the user's");

        cache.apply("not json");
        assert!(cache.user("u2").is_none() && !cache.known_unrevoked("j2"), "an unreadable change forgets all");
    }

    #[test]
    fn a_row_read_before_a_change_is_not_kept_after_it() {
        let cache = RowCache::new(1024 * 1024, Clock::default());
        cache.listening.store(true, Ordering::Release);
        let ticket = cache.ticket();
        // Another process revokes the token and changes the user while this one reads them.
        cache.apply(r#"{"revoked":"j1"}"#);
        cache.keep_unrevoked(ticket, "j1");
        cache.keep_user(ticket, &user("u1"));
        assert!(!cache.known_unrevoked("j1"));
        assert!(cache.user("u1").is_none());
    }

    #[test]
    fn rows_age_by_the_application_clock() {
        let clock = Clock::default();
        let cache = RowCache::new(1024 * 1024, clock.clone());
        cache.listening.store(true, Ordering::Release);
        cache.keep_identity(cache.ticket(), &linked("u1", "azure_devops"));

        // The wall clock may tick a second meanwhile.
        clock.advance(MAX_AGE_SECONDS - 2);
        assert!(cache.identity(key("u1", "azure_devops")).is_some(), "young enough");
        clock.advance(2);
        assert!(cache.identity(key("u1", "azure_devops")).is_none(), "too old to serve");
    }
}
