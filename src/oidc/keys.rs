//! The realm's RS256 signing keys: generated on first start, rotated by `keys rotate`, stored
//! sealed, published as JWKS, and reloaded by running servers when another process rotates.
//!
//! The keys in force form one immutable [`Generation`]; a reload that changes something swaps
//! in a new one (`arc-swap`), so readers never wait and a signer's kid and key always come from
//! the same generation. An old generation is freed when its last reader lets go.

use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{DecodingKey, EncodingKey};

use crate::config::RealmSettings;
use crate::crypto::{Cipher, CipherError, generate_rsa, rsa_signer, signing_key_aad};
use crate::store::{SigningKeyRow, Store, StoreError};

/// How long after a key's retirement servers may still sign with it: a server learns of a
/// rotation at its next reload (every minute), and hosts' clocks differ a little.
pub(crate) const ROTATION_GRACE_SECONDS: i64 = 300;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("signing key {kid} cannot be opened")]
    Sealed { kid: String, source: CipherError },
    #[error("signing key {0} is not a usable RSA key")]
    Malformed(String),
    #[error("RSA key generation failed")]
    Generation,
    #[error("no stored signing key may sign now; run `identity-broker keys rotate`")]
    NoActiveKey,
}

/// The longest a token the broker issues can live, hence how long a retired key must keep
/// verifying: access tokens, refresh tokens (SSO idle and max) and offline tokens.
pub(crate) fn max_token_lifetime(realm: &RealmSettings) -> i64 {
    [
        realm.access_token_lifespan_seconds,
        realm.sso_session_idle_seconds,
        realm.sso_session_max_seconds,
        realm.offline_session_idle_seconds,
    ]
    .into_iter()
    .max()
    .unwrap_or(0)
}

/// One key's public half.
#[derive(Clone)]
struct RealmKey {
    kid: String,
    decoding: DecodingKey,
    jwk: Jwk,
    /// SubjectPublicKeyInfo DER, base64: what Keycloak's realm document calls `public_key`.
    public_key_base64: String,
}

/// The keys in force from one load: the active one signs, all of them verify.
pub struct Generation {
    active: RealmKey,
    active_encoding: EncodingKey,
    /// Keys that verify without signing (announced or retired), newest first.
    others: Vec<RealmKey>,
}

impl fmt::Debug for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Generation").field("active_kid", &self.active.kid).field("others", &self.others.len()).finish()
    }
}

impl Generation {
    fn find(&self, kid: &str) -> Option<&RealmKey> {
        std::iter::once(&self.active).chain(&self.others).find(|k| k.kid == kid)
    }

    fn kids(&self) -> impl Iterator<Item = &str> {
        std::iter::once(&self.active).chain(&self.others).map(|k| k.kid.as_str())
    }

    pub fn active_kid(&self) -> &str {
        &self.active.kid
    }

    /// The active kid and its key.
    pub(crate) fn signer(&self) -> (&str, &EncodingKey) {
        (&self.active.kid, &self.active_encoding)
    }

    pub(crate) fn active_public_key_base64(&self) -> &str {
        &self.active.public_key_base64
    }

    pub(crate) fn decoding_key(&self, kid: &str) -> Option<&DecodingKey> {
        self.find(kid).map(|k| &k.decoding)
    }

    /// The active key first, then the others newest first.
    pub(crate) fn jwks(&self) -> JwkSet {
        JwkSet { keys: std::iter::once(&self.active).chain(&self.others).map(|k| k.jwk.clone()).collect() }
    }
}

/// The realm's keys, current as of the last load or `reload`.
pub struct KeySet {
    current: ArcSwap<Generation>,
    /// One reload at a time, so two cannot build from the same stale generation.
    reloading: tokio::sync::Mutex<()>,
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySet").field("current", &self.current()).finish()
    }
}

fn load_key(cipher: &Cipher, row: &SigningKeyRow) -> Result<(RealmKey, EncodingKey), KeyError> {
    let pkcs8 = cipher
        .open(&row.vault_key_id, &row.private_key, &signing_key_aad(&row.kid))
        .map_err(|source| KeyError::Sealed { kid: row.kid.clone(), source })?;
    let signer = rsa_signer(&row.kid, &pkcs8).map_err(|_| KeyError::Malformed(row.kid.clone()))?;
    let key = RealmKey {
        kid: row.kid.clone(),
        decoding: signer.decoding,
        jwk: signer.jwk,
        public_key_base64: BASE64.encode(&row.public_key),
    };
    Ok((key, signer.encoding))
}

/// A new RSA-2048 key that signs from `now`, sealed for storage.
pub(crate) fn generate_signing_key(cipher: &Cipher, now: i64) -> Result<SigningKeyRow, KeyError> {
    let generated = generate_rsa().map_err(|_| KeyError::Generation)?;
    Ok(SigningKeyRow {
        private_key: cipher.seal(&generated.pkcs8, &signing_key_aad(&generated.kid)),
        public_key: generated.public_der,
        vault_key_id: cipher.active_key_id().to_owned(),
        algorithm: "RS256".to_owned(),
        kid: generated.kid,
        created_at: now,
        active_from: now,
        retired_at: None,
        verify_until: None,
    })
}

/// Which stored keys are in force at `now`, as indexes into the rows.
#[derive(Debug, PartialEq, Eq)]
struct InForce {
    /// The newest key that has started signing and is not retired.
    active: usize,
    /// Every other key still published: announced ones, and retired ones whose tokens may
    /// still be alive. A retired key without `verify_until` is kept, as its lifetime is unknown.
    verifying: Vec<usize>,
}

fn in_force(rows: &[SigningKeyRow], now: i64) -> Option<InForce> {
    let signs = |row: &SigningKeyRow| row.active_from <= now && row.retired_at.is_none_or(|at| at > now);
    let (active, _) =
        rows.iter().enumerate().filter(|(_, row)| signs(row)).max_by(|(_, a), (_, b)| {
            (a.active_from, a.created_at, &a.kid).cmp(&(b.active_from, b.created_at, &b.kid))
        })?;
    let verifying = rows
        .iter()
        .enumerate()
        .filter(|(index, row)| *index != active && row.verify_until.is_none_or(|until| until > now))
        .map(|(index, _)| index)
        .collect();
    Some(InForce { active, verifying })
}

/// The stored key that signs at `now`, if any (`doctor` reports it).
pub(crate) fn signing_key_at(rows: &[SigningKeyRow], now: i64) -> Option<&SigningKeyRow> {
    in_force(rows, now).map(|force| &rows[force.active])
}

/// Builds the generation for `rows`, reusing what `previous` already opened, so that only
/// new keys need the vault.
fn build_generation(
    cipher: &Cipher,
    rows: &[SigningKeyRow],
    force: &InForce,
    previous: Option<&Generation>,
) -> Result<Generation, KeyError> {
    let active_row = &rows[force.active];
    let (active, active_encoding) = match previous {
        Some(previous) if previous.active.kid == active_row.kid => {
            (previous.active.clone(), previous.active_encoding.clone())
        }
        _ => load_key(cipher, active_row)?,
    };
    let mut others = Vec::with_capacity(force.verifying.len());
    for &index in &force.verifying {
        let row = &rows[index];
        match previous.and_then(|previous| previous.find(&row.kid)) {
            Some(known) => others.push(known.clone()),
            None => others.push(load_key(cipher, row)?.0),
        }
    }
    Ok(Generation { active, active_encoding, others })
}

/// What `keys rotate` did.
#[derive(Debug, Clone)]
pub(crate) struct Rotation {
    pub(crate) new_kid: String,
    /// When the new key starts signing (Unix seconds).
    pub(crate) active_from: i64,
    /// The keys it replaces; they verify until `verify_until`.
    pub(crate) retired: Vec<String>,
    pub(crate) verify_until: i64,
}

/// Creates a key that signs from `now + activate_after` and retires the current ones at that
/// moment. A delay lets every replica publish the new key before any signs with it; without
/// one, servers that have not reloaded yet reject the new key's tokens until they do.
/// Retired keys verify for `max_token_lifetime` (plus a grace) after their retirement.
pub(crate) async fn rotate(
    store: &Store,
    cipher: &Cipher,
    now: i64,
    activate_after: i64,
    max_token_lifetime: i64,
) -> Result<Rotation, KeyError> {
    let rows = store.list_signing_keys(now).await?;
    // With no key in force there is nothing to hand over from: the new key signs at once.
    let active_from = if in_force(&rows, now).is_some() { now + activate_after.max(0) } else { now };
    let mut key = generate_signing_key(cipher, now)?;
    key.active_from = active_from;
    let verify_until = active_from + max_token_lifetime + ROTATION_GRACE_SECONDS;
    let retired = store.rotate_signing_keys(&key, active_from, verify_until).await?;
    Ok(Rotation { new_kid: key.kid, active_from, retired, verify_until })
}

impl KeySet {
    /// Loads the stored keys, creating the first one when none may sign.
    pub(crate) async fn load_or_create(store: &Store, cipher: &Cipher, now: i64) -> Result<KeySet, KeyError> {
        let mut rows = store.list_signing_keys(now).await?;
        if in_force(&rows, now).is_none() {
            store.insert_signing_key(&generate_signing_key(cipher, now)?).await?;
            // Re-read: a replica starting at the same moment may have stored its own key,
            // and every replica must choose the same newest one.
            rows = store.list_signing_keys(now).await?;
        }
        let force = in_force(&rows, now).ok_or(KeyError::NoActiveKey)?;
        let first = build_generation(cipher, &rows, &force, None)?;
        Ok(KeySet { current: ArcSwap::from_pointee(first), reloading: tokio::sync::Mutex::new(()) })
    }

    /// Reads the stored keys again and switches to them if what is in force at `now` changed
    /// (a rotation by another process, an announced key starting to sign, a retired key's
    /// tokens all expired). Returns whether anything changed; on error the keys stay as
    /// they were.
    pub async fn reload(&self, store: &Store, cipher: &Cipher, now: i64) -> Result<bool, KeyError> {
        let _only_reload = self.reloading.lock().await;
        let rows = store.list_signing_keys(now).await?;
        let force = in_force(&rows, now).ok_or(KeyError::NoActiveKey)?;
        let current = self.current();
        let wanted = std::iter::once(force.active).chain(force.verifying.iter().copied()).map(|i| rows[i].kid.as_str());
        if current.kids().eq(wanted) {
            return Ok(false);
        }
        let next = build_generation(cipher, &rows, &force, Some(&current))?;
        tracing::info!(active_kid = %next.active.kid, verifying = next.others.len(), "signing keys reloaded");
        self.current.store(Arc::new(next));
        Ok(true)
    }

    /// The keys in force now; hold it for one signature or check, not longer.
    pub fn current(&self) -> Arc<Generation> {
        self.current.load_full()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Mode, Settings};

    fn row(kid: &str, active_from: i64, retired_at: Option<i64>, verify_until: Option<i64>) -> SigningKeyRow {
        SigningKeyRow {
            kid: kid.to_owned(),
            algorithm: "RS256".to_owned(),
            vault_key_id: "k1".to_owned(),
            private_key: Vec::new(),
            public_key: Vec::new(),
            created_at: active_from.min(1_000),
            active_from,
            retired_at,
            verify_until,
        }
    }

    #[test]
    fn the_newest_started_unretired_key_signs_and_the_others_verify_until_their_tokens_expire() {
        let cases = [
            ("one key", vec![row("a", 1_000, None, None)], 1_000, Some(InForce { active: 0, verifying: vec![] })),
            (
                "rotated: the retired key still verifies",
                vec![row("b", 2_000, None, None), row("a", 1_000, Some(2_000), Some(5_000))],
                2_000,
                Some(InForce { active: 0, verifying: vec![1] }),
            ),
            (
                "rotated long ago: the retired key is gone",
                vec![row("b", 2_000, None, None), row("a", 1_000, Some(2_000), Some(5_000))],
                5_000,
                Some(InForce { active: 0, verifying: vec![] }),
            ),
            (
                "announced: the old key signs until the new one starts",
                vec![row("b", 2_000, None, None), row("a", 1_000, Some(2_000), Some(5_000))],
                1_999,
                Some(InForce { active: 1, verifying: vec![0] }),
            ),
            (
                "retired without a lifetime: kept",
                vec![row("b", 2_000, None, None), row("a", 1_000, Some(2_000), None)],
                9_000,
                Some(InForce { active: 0, verifying: vec![1] }),
            ),
            ("every key retired", vec![row("a", 1_000, Some(1_500), Some(5_000))], 2_000, None),
            ("only an announced key", vec![row("a", 3_000, None, None)], 2_000, None),
        ];
        for (name, rows, now, expected) in cases {
            assert_eq!(in_force(&rows, now), expected, "{name}");
        }
    }

    #[test]
    fn the_longest_token_lifetime_bounds_how_long_a_retired_key_verifies() {
        let text = "[realm]\naccess_token_lifespan_seconds = 300\nsso_session_idle_seconds = 1800\n\
                    sso_session_max_seconds = 36000\noffline_session_idle_seconds = 7200\n";
        let settings = Settings::from_toml(Mode::Development, text, |_| None).expect("settings");
        let realm = settings.realm;
        assert_eq!(max_token_lifetime(&realm), 36_000);
    }
}
