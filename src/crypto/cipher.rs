//! AES-256-GCM sealing of what the database keeps secret (upstream tokens, signing keys): a
//! fresh nonce each time, the key id kept beside the ciphertext, and the owning row bound in
//! as associated data.

use std::fmt;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use secrecy::zeroize::Zeroize as _;
use secrecy::{ExposeSecret, SecretBox, SecretString};

use super::random_bytes;

/// One AES-256 key of the vault with the id stored beside each ciphertext.
pub struct VaultKey {
    pub(crate) id: String,
    pub(crate) key: SecretBox<[u8; 32]>,
}

impl fmt::Debug for VaultKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultKey").field("id", &self.id).field("key", &"[redacted]").finish()
    }
}

/// Associated data that ties an upstream token's ciphertext to its row and column, so a
/// ciphertext copied to another user, provider or column no longer opens.
pub fn vault_column_aad(user_id: &str, alias: &str, column: &str) -> String {
    format!("vault\u{1f}{user_id}\u{1f}{alias}\u{1f}{column}")
}

/// Associated data that ties a signing key's sealed private half to its key id.
pub fn signing_key_aad(kid: &str) -> String {
    format!("signing_key\u{1f}{kid}")
}

#[derive(Debug, thiserror::Error)]
pub enum CipherError {
    #[error("no vault key is configured")]
    NoKeys,
    #[error("vault key `{0}` is not configured; add it back to vault.encryption_keys to read this row")]
    UnknownKey(String),
    #[error("ciphertext failed authentication (wrong key, tampered data or wrong row)")]
    Unauthentic,
}

/// The keyring: the first key seals, every key opens.
pub struct Cipher {
    keys: Vec<(String, LessSafeKey)>,
}

impl fmt::Debug for Cipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|(id, _)| id.as_str()).collect();
        f.debug_struct("Cipher").field("key_ids", &ids).finish()
    }
}

impl Cipher {
    pub fn new(keys: &[VaultKey]) -> Result<Cipher, CipherError> {
        if keys.is_empty() {
            return Err(CipherError::NoKeys);
        }
        let keys = keys
            .iter()
            .map(|k| {
                // A 32-byte slice is always a valid AES-256 key.
                #[allow(clippy::expect_used)]
                let unbound = UnboundKey::new(&AES_256_GCM, k.key.expose_secret()).expect("32-byte key");
                (k.id.clone(), LessSafeKey::new(unbound))
            })
            .collect();
        Ok(Cipher { keys })
    }

    pub(crate) fn active_key_id(&self) -> &str {
        &self.keys[0].0
    }

    /// `nonce ‖ ciphertext ‖ tag`, as the `vault_tokens` and `signing_keys` rows store it.
    pub(crate) fn seal(&self, plaintext: &[u8], aad: &str) -> Vec<u8> {
        let (_, key) = &self.keys[0];
        let nonce_bytes = random_bytes::<NONCE_LEN>();
        let mut buffer = plaintext.to_vec();
        // Sealing fails only for inputs over GCM's 64 GiB limit, which no token reaches.
        #[allow(clippy::expect_used)]
        key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce_bytes), Aad::from(aad), &mut buffer)
            .expect("AES-GCM seal");
        let mut out = nonce_bytes.to_vec();
        out.extend_from_slice(&buffer);
        out
    }

    pub(crate) fn seal_str(&self, plaintext: &SecretString, aad: &str) -> Vec<u8> {
        self.seal(plaintext.expose_secret().as_bytes(), aad)
    }

    pub(crate) fn open(&self, key_id: &str, sealed: &[u8], aad: &str) -> Result<Vec<u8>, CipherError> {
        let (_, key) =
            self.keys.iter().find(|(id, _)| id == key_id).ok_or_else(|| CipherError::UnknownKey(key_id.to_owned()))?;
        if sealed.len() < NONCE_LEN {
            return Err(CipherError::Unauthentic);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| CipherError::Unauthentic)?;
        let mut buffer = ciphertext.to_vec();
        let plaintext = key.open_in_place(nonce, Aad::from(aad), &mut buffer).map_err(|_| CipherError::Unauthentic)?;
        Ok(plaintext.to_vec())
    }

    /// Opens a ciphertext sealed under any key of the ring and seals it again under the
    /// active key, for the same row (`aad`); the plaintext is wiped before returning.
    pub(crate) fn reseal(&self, key_id: &str, sealed: &[u8], aad: &str) -> Result<Vec<u8>, CipherError> {
        let mut plaintext = self.open(key_id, sealed, aad)?;
        let resealed = self.seal(&plaintext, aad);
        plaintext.zeroize();
        Ok(resealed)
    }

    pub(crate) fn open_str(&self, key_id: &str, sealed: &[u8], aad: &str) -> Result<SecretString, CipherError> {
        let bytes = self.open(key_id, sealed, aad)?;
        String::from_utf8(bytes).map(SecretString::from).map_err(|_| CipherError::Unauthentic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_vault_key;

    fn cipher(keys: &[&str]) -> Cipher {
        let keys: Vec<VaultKey> = keys.iter().map(|k| parse_vault_key(k).expect("key")).collect();
        Cipher::new(&keys).expect("cipher")
    }

    const K1: &str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const K2: &str = "k2:HxwdHhsaGRgXFhUUExIREA8ODQwLCgkIBwYFBAMCAQA=";

    #[test]
    fn seals_with_fresh_nonces_and_opens_only_for_the_same_row() {
        let c = cipher(&[K1]);
        let a = c.seal(b"token", "user|alias|access");
        let b = c.seal(b"token", "user|alias|access");
        assert_ne!(a, b, "nonces must differ");
        assert_eq!(c.open("k1", &a, "user|alias|access").expect("opens"), b"token");
        assert!(matches!(c.open("k1", &a, "other|alias|access"), Err(CipherError::Unauthentic)));
        let mut tampered = a.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(matches!(c.open("k1", &tampered, "user|alias|access"), Err(CipherError::Unauthentic)));
    }

    #[test]
    fn first_key_seals_and_older_keys_still_open() {
        let old = cipher(&[K1]);
        let sealed_with_k1 = old.seal(b"t", "aad");
        let rotated = cipher(&[K2, K1]);
        assert_eq!(rotated.active_key_id(), "k2");
        assert_eq!(rotated.open("k1", &sealed_with_k1, "aad").expect("k1 still opens"), b"t");
        assert!(matches!(cipher(&[K2]).open("k1", &sealed_with_k1, "aad"), Err(CipherError::UnknownKey(_))));
    }

    #[test]
    fn reseal_moves_a_ciphertext_to_the_active_key_for_the_same_row_only() {
        let sealed_with_k1 = cipher(&[K1]).seal(b"t", "aad");
        let rotated = cipher(&[K2, K1]);

        let resealed = rotated.reseal("k1", &sealed_with_k1, "aad").expect("reseals");

        assert_eq!(cipher(&[K2]).open("k2", &resealed, "aad").expect("k2 alone opens it"), b"t");
        assert!(matches!(rotated.reseal("k1", &sealed_with_k1, "other"), Err(CipherError::Unauthentic)));
        assert!(matches!(rotated.reseal("k0", &sealed_with_k1, "aad"), Err(CipherError::UnknownKey(_))));
    }
}
