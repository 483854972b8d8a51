//! The realm's RS256 signing keys: generated on first start, stored sealed, published as JWKS.

use std::collections::HashMap;
use std::fmt;

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::KeyPair as _;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};

use crate::crypto::token_hash;
use crate::store::{SigningKeyRow, Store, StoreError};
use crate::vault::{Cipher, CipherError, Sealed};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("signing key {kid}: {source}")]
    Sealed { kid: String, source: CipherError },
    #[error("signing key {0} is not a usable RSA key")]
    Malformed(String),
    #[error("RSA key generation failed")]
    Generation,
}

/// One key: the private half only for the active key.
struct RealmKey {
    kid: String,
    decoding: DecodingKey,
    jwk: Jwk,
    /// SubjectPublicKeyInfo DER, base64: what Keycloak's realm document calls `public_key`.
    public_key_base64: String,
}

/// The keys in force: the active one signs, all of them verify.
pub struct KeySet {
    active: RealmKey,
    active_encoding: EncodingKey,
    others: HashMap<String, RealmKey>,
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySet").field("active_kid", &self.active.kid).field("others", &self.others.len()).finish()
    }
}

fn private_key_aad(kid: &str) -> String {
    format!("signing_key\u{1f}{kid}")
}

fn pem(label: &str, der: &[u8]) -> String {
    let body = BASE64.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn public_parts(kid: &str, public_der: &[u8], encoding: &EncodingKey) -> Result<RealmKey, KeyError> {
    let malformed = || KeyError::Malformed(kid.to_owned());
    let mut jwk = Jwk::from_encoding_key(encoding, Algorithm::RS256).map_err(|_| malformed())?;
    jwk.common.key_id = Some(kid.to_owned());
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    jwk.common.key_algorithm = Some(KeyAlgorithm::RS256);
    let decoding = match &jwk.algorithm {
        AlgorithmParameters::RSA(rsa) => DecodingKey::from_rsa_components(&rsa.n, &rsa.e).map_err(|_| malformed())?,
        _ => return Err(malformed()),
    };
    Ok(RealmKey { kid: kid.to_owned(), decoding, jwk, public_key_base64: BASE64.encode(public_der) })
}

fn load_key(cipher: &Cipher, row: &SigningKeyRow) -> Result<(RealmKey, EncodingKey), KeyError> {
    let pkcs8 = cipher
        .open(&row.vault_key_id, &Sealed(row.private_key.clone()), &private_key_aad(&row.kid))
        .map_err(|source| KeyError::Sealed { kid: row.kid.clone(), source })?;
    let encoding = EncodingKey::from_rsa_pem(pem("PRIVATE KEY", &pkcs8).as_bytes())
        .map_err(|_| KeyError::Malformed(row.kid.clone()))?;
    let key = public_parts(&row.kid, &row.public_key, &encoding)?;
    Ok((key, encoding))
}

/// A new RSA-2048 key, sealed for storage.
pub fn generate_signing_key(cipher: &Cipher, now: i64) -> Result<SigningKeyRow, KeyError> {
    let pair = KeyPair::generate(KeySize::Rsa2048).map_err(|_| KeyError::Generation)?;
    let pkcs8: Pkcs8V1Der = pair.as_der().map_err(|_| KeyError::Generation)?;
    let public: PublicKeyX509Der = pair.public_key().as_der().map_err(|_| KeyError::Generation)?;
    let kid = token_hash(&BASE64.encode(public.as_ref()))[..22].to_owned();
    Ok(SigningKeyRow {
        private_key: cipher.seal(pkcs8.as_ref(), &private_key_aad(&kid)).0,
        public_key: public.as_ref().to_vec(),
        vault_key_id: cipher.active_key_id().to_owned(),
        algorithm: "RS256".to_owned(),
        kid,
        created_at: now,
        retired_at: None,
    })
}

impl KeySet {
    /// Loads the stored keys, creating the first one when there is none.
    pub async fn load_or_create(store: &Store, cipher: &Cipher, now: i64) -> Result<KeySet, KeyError> {
        let mut rows = store.list_signing_keys().await?;
        if rows.iter().all(|r| r.retired_at.is_some()) {
            store.insert_signing_key(&generate_signing_key(cipher, now)?).await?;
            // Re-read: a replica starting at the same moment may have stored its own key,
            // and every replica must choose the same newest one.
            rows = store.list_signing_keys().await?;
        }
        KeySet::from_rows(cipher, &rows)
    }

    fn from_rows(cipher: &Cipher, rows: &[SigningKeyRow]) -> Result<KeySet, KeyError> {
        let mut active = None;
        let mut others = HashMap::new();
        for row in rows {
            let (key, encoding) = load_key(cipher, row)?;
            if active.is_none() && row.retired_at.is_none() {
                active = Some((key, encoding));
            } else {
                others.insert(key.kid.clone(), key);
            }
        }
        let (active, active_encoding) = active.ok_or(KeyError::Generation)?;
        Ok(KeySet { active, active_encoding, others })
    }

    pub fn active_kid(&self) -> &str {
        &self.active.kid
    }

    pub fn signing_key(&self) -> &EncodingKey {
        &self.active_encoding
    }

    pub fn active_public_key_base64(&self) -> &str {
        &self.active.public_key_base64
    }

    pub fn decoding_key(&self, kid: &str) -> Option<&DecodingKey> {
        if kid == self.active.kid {
            return Some(&self.active.decoding);
        }
        self.others.get(kid).map(|k| &k.decoding)
    }

    pub fn jwks(&self) -> JwkSet {
        let mut keys = vec![self.active.jwk.clone()];
        keys.extend(self.others.values().map(|k| k.jwk.clone()));
        JwkSet { keys }
    }
}
