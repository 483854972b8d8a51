//! The realm's signing keys: one public-key pair (`realm.signature_algorithm`) for access and ID
//! tokens and one HS512 secret for refresh and offline tokens, generated on first start,
//! rotated by `keys rotate`, stored sealed, published as JWKS (the public ones), and reloaded by
//! running servers when another process rotates.
//!
//! The keys in force form one immutable [`Generation`], every private key parsed once; a reload
//! that changes something swaps in a new one (`arc-swap`), so readers never wait and a signer's
//! kid and key always come from the same generation. An old generation is freed when its last
//! reader lets go.

use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use jsonwebtoken::jwk::JwkSet;

use crate::config::RealmSettings;
use crate::crypto::{Cipher, CipherError, JwsAlgorithm, JwsKey, generate_key, load_key, signing_key_aad};
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
    #[error("signing key {0} is not a usable key of its algorithm")]
    Malformed(String),
    #[error("{0} key generation failed")]
    Generation(JwsAlgorithm),
    #[error("no stored {0} key may sign now; run `identity-broker keys rotate`")]
    NoActiveKey(JwsAlgorithm),
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

/// One opened key and, for a public one, its SubjectPublicKeyInfo DER in base64: what
/// Keycloak's realm document calls `public_key`.
struct RealmKey {
    key: JwsKey,
    public_key_base64: String,
}

/// The keys in force from one load: the two active ones sign, all of them verify.
pub struct Generation {
    /// Signs access, ID and service-account tokens; published.
    active: Arc<RealmKey>,
    /// Signs refresh and offline tokens; never published.
    refresh: Arc<RealmKey>,
    /// Keys that verify without signing (announced, retired, or of another algorithm), newest
    /// first.
    others: Vec<Arc<RealmKey>>,
}

impl fmt::Debug for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Generation")
            .field("active_kid", &self.active.key.kid())
            .field("refresh_kid", &self.refresh.key.kid())
            .field("others", &self.others.len())
            .finish()
    }
}

impl Generation {
    fn all(&self) -> impl Iterator<Item = &Arc<RealmKey>> {
        [&self.active, &self.refresh].into_iter().chain(&self.others)
    }

    fn kids(&self) -> impl Iterator<Item = &str> {
        self.all().map(|k| k.key.kid())
    }

    pub fn active_kid(&self) -> &str {
        self.active.key.kid()
    }

    /// The kid of the HMAC key that signs refresh and offline tokens now.
    #[cfg(feature = "testing")]
    pub fn refresh_kid(&self) -> &str {
        self.refresh.key.kid()
    }

    /// The key that signs access, ID and service-account tokens.
    pub(crate) fn signer(&self) -> &JwsKey {
        &self.active.key
    }

    /// The key that signs refresh and offline tokens.
    pub(crate) fn refresh_signer(&self) -> &JwsKey {
        &self.refresh.key
    }

    pub(crate) fn active_public_key_base64(&self) -> &str {
        &self.active.public_key_base64
    }

    /// The key in force under `kid`, whatever its algorithm.
    pub(crate) fn verifier(&self, kid: &str) -> Option<&JwsKey> {
        self.all().map(|k| &k.key).find(|k| k.kid() == kid)
    }

    /// The public keys, the active one first, then the others newest first.
    pub(crate) fn jwks(&self) -> JwkSet {
        JwkSet { keys: self.all().filter_map(|k| k.key.jwk().cloned()).collect() }
    }
}

/// The realm's keys, current as of the last load or `reload`.
pub struct KeySet {
    current: ArcSwap<Generation>,
    /// The configured `realm.signature_algorithm`.
    algorithm: JwsAlgorithm,
    /// One reload at a time, so two cannot build from the same stale generation.
    reloading: tokio::sync::Mutex<()>,
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySet").field("algorithm", &self.algorithm).field("current", &self.current()).finish()
    }
}

fn row_algorithm(row: &SigningKeyRow) -> Option<JwsAlgorithm> {
    JwsAlgorithm::from_name(&row.algorithm)
}

fn open_key(cipher: &Cipher, row: &SigningKeyRow) -> Result<Arc<RealmKey>, KeyError> {
    let algorithm = row_algorithm(row).ok_or_else(|| KeyError::Malformed(row.kid.clone()))?;
    let private = cipher
        .open(&row.vault_key_id, &row.private_key, &signing_key_aad(&row.kid))
        .map_err(|source| KeyError::Sealed { kid: row.kid.clone(), source })?;
    let key = load_key(&row.kid, algorithm, &private).map_err(|_| KeyError::Malformed(row.kid.clone()))?;
    Ok(Arc::new(RealmKey { key, public_key_base64: BASE64.encode(&row.public_key) }))
}

/// A new `algorithm` key that signs from `now`, sealed for storage.
pub(crate) fn generate_signing_key(
    cipher: &Cipher,
    algorithm: JwsAlgorithm,
    now: i64,
) -> Result<SigningKeyRow, KeyError> {
    let generated = generate_key(algorithm).map_err(|_| KeyError::Generation(algorithm))?;
    Ok(SigningKeyRow {
        private_key: cipher.seal(&generated.private, &signing_key_aad(&generated.kid)),
        public_key: generated.public_der,
        vault_key_id: cipher.active_key_id().to_owned(),
        algorithm: algorithm.name().to_owned(),
        kid: generated.kid,
        created_at: now,
        active_from: now,
        retired_at: None,
        verify_until: None,
    })
}

/// The newest stored `algorithm` key that has started signing and is not retired at `now`.
fn signing_row(rows: &[SigningKeyRow], now: i64, algorithm: JwsAlgorithm) -> Option<usize> {
    let signs = |row: &SigningKeyRow| {
        row_algorithm(row) == Some(algorithm) && row.active_from <= now && row.retired_at.is_none_or(|at| at > now)
    };
    let (index, _) =
        rows.iter().enumerate().filter(|(_, row)| signs(row)).max_by(|(_, a), (_, b)| {
            (a.active_from, a.created_at, &a.kid).cmp(&(b.active_from, b.created_at, &b.kid))
        })?;
    Some(index)
}

/// Which stored keys are in force at `now`, as indexes into the rows.
#[derive(Debug, PartialEq, Eq)]
struct InForce {
    /// The key of the realm's signature algorithm that signs.
    active: usize,
    /// The HMAC key that signs refresh tokens.
    refresh: usize,
    /// Every other key still published or verifying: announced ones, ones of another
    /// algorithm, and retired ones whose tokens may still be alive. A retired key without
    /// `verify_until` is kept, as its lifetime is unknown.
    verifying: Vec<usize>,
}

fn in_force(rows: &[SigningKeyRow], now: i64, algorithm: JwsAlgorithm) -> Result<InForce, JwsAlgorithm> {
    let active = signing_row(rows, now, algorithm).ok_or(algorithm)?;
    let refresh = signing_row(rows, now, JwsAlgorithm::Hs512).ok_or(JwsAlgorithm::Hs512)?;
    let verifying = rows
        .iter()
        .enumerate()
        .filter(|(index, row)| {
            *index != active && *index != refresh && row.verify_until.is_none_or(|until| until > now)
        })
        .map(|(index, _)| index)
        .collect();
    Ok(InForce { active, refresh, verifying })
}

/// The stored public key that signs at `now`, if any (`doctor` reports it): of `algorithm`,
/// or else of any public algorithm.
pub(crate) fn signing_key_at(rows: &[SigningKeyRow], now: i64, algorithm: JwsAlgorithm) -> Option<&SigningKeyRow> {
    let newest_public = || {
        JwsAlgorithm::PUBLIC
            .into_iter()
            .filter_map(|algorithm| signing_row(rows, now, algorithm))
            .max_by_key(|&index| (rows[index].active_from, rows[index].created_at))
    };
    signing_row(rows, now, algorithm).or_else(newest_public).map(|index| &rows[index])
}

/// Builds the generation for `rows`, reusing what `previous` already opened, so that only
/// new keys need the vault.
fn build_generation(
    cipher: &Cipher,
    rows: &[SigningKeyRow],
    force: &InForce,
    previous: Option<&Generation>,
) -> Result<Generation, KeyError> {
    let open = |index: usize| {
        let row = &rows[index];
        match previous.and_then(|previous| previous.all().find(|k| k.key.kid() == row.kid)) {
            Some(known) => Ok(Arc::clone(known)),
            None => open_key(cipher, row),
        }
    };
    let others = force.verifying.iter().map(|&index| open(index)).collect::<Result<_, _>>()?;
    Ok(Generation { active: open(force.active)?, refresh: open(force.refresh)?, others })
}

/// What `keys rotate` did.
#[derive(Debug, Clone)]
pub(crate) struct Rotation {
    /// The new keys, each with its algorithm: the realm's public one and the refresh HMAC one.
    pub(crate) new_kids: Vec<(JwsAlgorithm, String)>,
    /// When the new keys start signing (Unix seconds).
    pub(crate) active_from: i64,
    /// The keys they replace; they verify until `verify_until`.
    pub(crate) retired: Vec<String>,
    pub(crate) verify_until: i64,
}

/// Creates a key of `algorithm` and an HMAC key that sign from `now + activate_after`, and
/// retires every current key at that moment. A delay lets every replica publish and know the
/// new keys before any signs with them; without one, servers that have not reloaded yet reject
/// the new keys' tokens until they do. Retired keys verify for `max_token_lifetime` (plus a
/// grace) after their retirement.
pub(crate) async fn rotate(
    store: &Store,
    cipher: &Cipher,
    algorithm: JwsAlgorithm,
    now: i64,
    activate_after: i64,
    max_token_lifetime: i64,
) -> Result<Rotation, KeyError> {
    let rows = store.list_signing_keys(now).await?;
    // With no key in force there is nothing to hand over from: the new keys sign at once.
    let active_from = if in_force(&rows, now, algorithm).is_ok() { now + activate_after.max(0) } else { now };
    let mut keys = Vec::with_capacity(2);
    for algorithm in [algorithm, JwsAlgorithm::Hs512] {
        let mut key = generate_signing_key(cipher, algorithm, now)?;
        key.active_from = active_from;
        keys.push(key);
    }
    let verify_until = active_from + max_token_lifetime + ROTATION_GRACE_SECONDS;
    let mut retired = store.rotate_signing_keys(&keys, active_from, verify_until).await?;
    // The public keys first: they are the ones operators and clients know by kid.
    let is_secret =
        |kid: &String| rows.iter().find(|row| &row.kid == kid).and_then(row_algorithm) == Some(JwsAlgorithm::Hs512);
    retired.sort_by_key(is_secret);
    let new_kids = keys.into_iter().filter_map(|key| Some((row_algorithm(&key)?, key.kid))).collect();
    Ok(Rotation { new_kids, active_from, retired, verify_until })
}

impl KeySet {
    /// Loads the stored keys, creating a key of `algorithm` and an HMAC key when none of
    /// them may sign.
    pub(crate) async fn load_or_create(
        store: &Store,
        cipher: &Cipher,
        algorithm: JwsAlgorithm,
        now: i64,
    ) -> Result<KeySet, KeyError> {
        let mut rows = store.list_signing_keys(now).await?;
        let mut created = false;
        for needed in [algorithm, JwsAlgorithm::Hs512] {
            if signing_row(&rows, now, needed).is_none() {
                store.insert_signing_key(&generate_signing_key(cipher, needed, now)?).await?;
                created = true;
            }
        }
        if created {
            // Re-read: a replica starting at the same moment may have stored its own keys,
            // and every replica must choose the same newest ones.
            rows = store.list_signing_keys(now).await?;
        }
        let force = in_force(&rows, now, algorithm).map_err(KeyError::NoActiveKey)?;
        let first = build_generation(cipher, &rows, &force, None)?;
        Ok(KeySet { current: ArcSwap::from_pointee(first), algorithm, reloading: tokio::sync::Mutex::new(()) })
    }

    /// The configured `realm.signature_algorithm`.
    pub(crate) fn algorithm(&self) -> JwsAlgorithm {
        self.algorithm
    }

    /// Reads the stored keys again and switches to them if what is in force at `now` changed
    /// (a rotation by another process, an announced key starting to sign, a retired key's
    /// tokens all expired). Returns whether anything changed; on error the keys stay as
    /// they were.
    pub async fn reload(&self, store: &Store, cipher: &Cipher, now: i64) -> Result<bool, KeyError> {
        let _only_reload = self.reloading.lock().await;
        let rows = store.list_signing_keys(now).await?;
        let force = in_force(&rows, now, self.algorithm).map_err(KeyError::NoActiveKey)?;
        let current = self.current();
        let wanted = [force.active, force.refresh].into_iter().chain(force.verifying.iter().copied());
        if current.kids().eq(wanted.map(|i| rows[i].kid.as_str())) {
            return Ok(false);
        }
        let next = build_generation(cipher, &rows, &force, Some(&current))?;
        tracing::info!(
            active_kid = %next.active.key.kid(),
            refresh_kid = %next.refresh.key.kid(),
            verifying = next.others.len(),
            "signing keys reloaded"
        );
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
        row_of(JwsAlgorithm::Rs256, kid, active_from, retired_at, verify_until)
    }

    fn row_of(
        algorithm: JwsAlgorithm,
        kid: &str,
        active_from: i64,
        retired_at: Option<i64>,
        verify_until: Option<i64>,
    ) -> SigningKeyRow {
        SigningKeyRow {
            kid: kid.to_owned(),
            algorithm: algorithm.name().to_owned(),
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
            ("one key", vec![row("a", 1_000, None, None)], 1_000, Some((0, vec![]))),
            (
                "rotated: the retired key still verifies",
                vec![row("b", 2_000, None, None), row("a", 1_000, Some(2_000), Some(5_000))],
                2_000,
                Some((0, vec![1])),
            ),
            (
                "rotated long ago: the retired key is gone",
                vec![row("b", 2_000, None, None), row("a", 1_000, Some(2_000), Some(5_000))],
                5_000,
                Some((0, vec![])),
            ),
            (
                "announced: the old key signs until the new one starts",
                vec![row("b", 2_000, None, None), row("a", 1_000, Some(2_000), Some(5_000))],
                1_999,
                Some((1, vec![0])),
            ),
            (
                "retired without a lifetime: kept",
                vec![row("b", 2_000, None, None), row("a", 1_000, Some(2_000), None)],
                9_000,
                Some((0, vec![1])),
            ),
            ("every key retired", vec![row("a", 1_000, Some(1_500), Some(5_000))], 2_000, None),
            ("only an announced key", vec![row("a", 3_000, None, None)], 2_000, None),
        ];
        for (name, mut rows, now, expected) in cases {
            // The refresh tokens' HMAC key, beside the public keys of each case.
            rows.push(row_of(JwsAlgorithm::Hs512, "h", 0, None, None));
            let refresh = rows.len() - 1;
            let expected = expected.map(|(active, verifying)| InForce { active, refresh, verifying });
            assert_eq!(in_force(&rows, now, JwsAlgorithm::Rs256).ok(), expected, "{name}");
        }
    }

    #[test]
    fn each_algorithm_has_its_signer_and_keys_of_another_algorithm_keep_verifying() {
        let rows = vec![
            row_of(JwsAlgorithm::Es256, "ec", 2_000, None, None),
            row_of(JwsAlgorithm::Hs512, "h2", 2_000, None, None),
            row_of(JwsAlgorithm::Rs256, "rsa", 1_000, None, None),
            row_of(JwsAlgorithm::Hs512, "h1", 1_000, Some(2_000), Some(9_000)),
        ];

        assert_eq!(
            in_force(&rows, 2_000, JwsAlgorithm::Es256),
            Ok(InForce { active: 0, refresh: 1, verifying: vec![2, 3] }),
            "switched to ES256: the RS256 key still verifies what it signed"
        );
        assert_eq!(
            in_force(&rows, 2_000, JwsAlgorithm::Rs256),
            Ok(InForce { active: 2, refresh: 1, verifying: vec![0, 3] }),
            "a replica still configured with RS256 signs with it"
        );
        assert_eq!(in_force(&rows, 2_000, JwsAlgorithm::EdDsa), Err(JwsAlgorithm::EdDsa), "no Ed25519 key yet");
        assert_eq!(in_force(&rows[..1], 2_000, JwsAlgorithm::Es256), Err(JwsAlgorithm::Hs512), "no HMAC key yet");
        assert_eq!(signing_key_at(&rows, 2_000, JwsAlgorithm::EdDsa).map(|r| r.kid.as_str()), Some("ec"));
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
