//! The one source of randomness, digests, constant-time secret comparison, sealing, JWS keys
//! and the threads that sign with them, and password hashing.

mod cipher;
mod passwords;
mod signers;
mod signing;

pub use cipher::{Cipher, CipherError, VaultKey, signing_key_aad, vault_column_aad};
pub(crate) use passwords::{PasswordError, hash_password, verify_password};
pub(crate) use signers::Signers;
pub use signing::JwsAlgorithm;
pub(crate) use signing::{JwsKey, JwsKeyError, generate_key, load_key};

use std::fmt;

use aws_lc_rs::{constant_time, digest, rand::SecureRandom as _, rand::SystemRandom};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as BASE64URL;
use secrecy::{ExposeSecret, SecretString};

/// Fills `N` bytes from the operating system's generator.
pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    // The system generator fails only when the OS has no entropy source at all, and a
    // broker without randomness must not run.
    #[allow(clippy::expect_used)]
    SystemRandom::new().fill(&mut bytes).expect("the operating system's random generator failed");
    bytes
}

/// 256 random bits, URL-safe: states, nonces, codes, cookie values, PKCE verifiers.
pub(crate) fn random_token() -> String {
    BASE64URL.encode(random_bytes::<32>())
}

/// A new id for a row others may name (users, sessions, replicas' leases): a random UUID, in
/// the form Keycloak gives its ids, so that ids read alike whichever side made them.
pub(crate) fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// What is stored in place of a bearer value (codes, cookies): lookups by hash leak nothing.
pub(crate) fn token_hash(value: &str) -> String {
    BASE64URL.encode(sha256(value.as_bytes()))
}

/// RFC 7636's code challenge methods, by their names on the wire.
pub(crate) const PKCE_S256: &str = "S256";
pub(crate) const PKCE_PLAIN: &str = "plain";

/// RFC 7636 S256: `BASE64URL(SHA256(verifier))`.
pub(crate) fn pkce_s256(verifier: &str) -> String {
    token_hash(verifier)
}

/// SHA-256 of `bytes`.
pub(crate) fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, bytes).as_ref());
    out
}

/// Whether `a` and `b` are equal, in a time that depends on neither their content nor their
/// lengths: the digests of both are compared, as a byte-wise comparison returns at once on a
/// length mismatch and so tells an attacker the length of the secret.
pub(crate) fn constant_time_eq(a: &str, b: &str) -> bool {
    constant_time::verify_slices_are_equal(&sha256(a.as_bytes()), &sha256(b.as_bytes())).is_ok()
}

/// A shared secret that can only be compared, in constant time, never shown.
#[derive(Clone)]
pub(crate) struct CtSecret(SecretString);

impl CtSecret {
    pub(crate) fn new(secret: SecretString) -> Self {
        CtSecret(secret)
    }

    pub(crate) fn matches(&self, candidate: &str) -> bool {
        constant_time_eq(self.0.expose_secret(), candidate)
    }

    /// A digest of the secret bound to `context` (what else it stands for, which salts it), to
    /// tell later whether the secret changed without keeping it. It is stored, so it is slow to
    /// compute (PBKDF2-HMAC-SHA256, 100,000 rounds, tens of milliseconds once per process start):
    /// whoever reads the database cannot cheaply test guesses of a password against it.
    pub(crate) fn fingerprint(&self, context: &str) -> String {
        let mut out = [0u8; 32];
        aws_lc_rs::pbkdf2::derive(
            aws_lc_rs::pbkdf2::PBKDF2_HMAC_SHA256,
            FINGERPRINT_ROUNDS,
            context.as_bytes(),
            self.0.expose_secret().as_bytes(),
            &mut out,
        );
        BASE64URL.encode(out)
    }
}

/// PBKDF2 rounds of a stored fingerprint (OWASP's 2023 figure for PBKDF2-HMAC-SHA256 is
/// 600,000 for passwords users choose; an administrator's configured secret is a long random
/// value in practice, and this runs in every process start and test).
const FINGERPRINT_ROUNDS: std::num::NonZeroU32 = match std::num::NonZeroU32::new(100_000) {
    Some(rounds) => rounds,
    None => panic!("a positive round count"),
};

impl fmt::Debug for CtSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CtSecret([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256_is_base64url_of_sha256() {
        assert_eq!(
            pkce_s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWjOEjXk"),
            "VYFANLqdx_HDV6BqEhluZJ63rtrIPROSSFdB3P6G83I"
        );
    }

    #[test]
    fn constant_time_eq_is_equality_whatever_the_lengths() {
        let cases = [
            ("abc", "abc", true, "equal"),
            ("", "", true, "both empty"),
            ("abc", "abd", false, "unequal, same length"),
            ("abc", "abcd", false, "different lengths"),
            ("abcd", "abc", false, "different lengths, the longer first"),
            ("secret", "secret-and-more", false, "a prefix"),
            ("", "x", false, "empty against one byte"),
            ("x", "", false, "one byte against empty"),
            ("é", "e\u{301}", false, "the same text in other bytes"),
        ];
        for (a, b, expected, case) in cases {
            assert_eq!(constant_time_eq(a, b), expected, "{case}: {a:?} vs {b:?}");
        }
    }

    #[test]
    fn secrets_compare_and_never_print() {
        let secret = CtSecret::new(SecretString::from("hunter2".to_owned()));
        assert!(secret.matches("hunter2"));
        assert!(!secret.matches("hunter3"));
        assert!(!secret.matches(""));
        assert!(!format!("{secret:?}").contains("hunter2"));
    }

    #[test]
    fn tokens_are_distinct_and_url_safe() {
        let (a, b) = (random_token(), random_token());
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    }
}
