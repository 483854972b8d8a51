//! Users' passwords: Argon2id hashes in PHC form with OWASP's parameters, made and checked on
//! the blocking pool so that a hash (tens of milliseconds of CPU) never stalls the runtime.

use std::sync::OnceLock;

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use secrecy::{ExposeSecret, SecretString};

use super::random_bytes;

/// OWASP's Password Storage Cheat Sheet, first Argon2id line: 19 MiB, two passes, one lane.
const MEMORY_KIB: u32 = 19_456;
const PASSES: u32 = 2;
const LANES: u32 = 1;
/// 128 bits of salt, Argon2's recommendation.
const SALT_BYTES: usize = 16;

/// Hashing failed: the parameters or the salt were refused (a programming error, never the
/// password's fault), or the blocking pool is gone (the process is stopping).
#[derive(Debug, thiserror::Error)]
pub(crate) enum PasswordError {
    #[error("cannot hash a password: {0}")]
    Hash(argon2::password_hash::Error),
    #[error("the password hashing task did not finish")]
    Task(#[from] tokio::task::JoinError),
}

fn argon2id() -> Result<Argon2<'static>, PasswordError> {
    let params = Params::new(MEMORY_KIB, PASSES, LANES, None).map_err(|err| PasswordError::Hash(err.into()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

fn hash_now(password: &SecretString) -> Result<String, PasswordError> {
    let salt = SaltString::encode_b64(&random_bytes::<SALT_BYTES>()).map_err(PasswordError::Hash)?;
    let hash = argon2id()?.hash_password(password.expose_secret().as_bytes(), &salt).map_err(PasswordError::Hash)?;
    Ok(hash.to_string())
}

/// True when `password` is the one `stored` (a PHC string) was made from; the parameters are
/// read from `stored`, so hashes made with older parameters keep working. A stored value that
/// does not parse matches nothing.
fn verify_now(stored: &str, password: &SecretString) -> bool {
    PasswordHash::new(stored)
        .is_ok_and(|hash| Argon2::default().verify_password(password.expose_secret().as_bytes(), &hash).is_ok())
}

/// A hash of a random password nobody knows, made once: what an unknown user's password is
/// checked against, so that the answer for them costs what it costs for a known user.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let unknowable = SecretString::from(super::random_token());
        // Hashing fails only with parameters Argon2 refuses, which the unit tests rule out; a
        // dummy that fails to parse would still make no password match.
        hash_now(&unknowable).unwrap_or_default()
    })
}

/// A new Argon2id hash of `password` with a fresh salt, as a PHC string.
pub(crate) async fn hash_password(password: SecretString) -> Result<String, PasswordError> {
    tokio::task::spawn_blocking(move || hash_now(&password)).await?
}

/// Checks `password` against `stored`; with none (an unknown user, a user without a
/// password) the dummy hash is checked instead, which no password matches: the same work
/// either way.
pub(crate) async fn verify_password(stored: Option<String>, password: SecretString) -> Result<bool, PasswordError> {
    Ok(tokio::task::spawn_blocking(move || match stored {
        Some(stored) => verify_now(&stored, &password),
        None => {
            let _ = verify_now(dummy_hash(), &password);
            false
        }
    })
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_is_argon2id_with_owasp_parameters_and_checks_only_its_password() {
        let password = SecretString::from("correct horse battery staple");
        let stored = hash_now(&password).expect("hashes");
        assert!(stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{stored}");
        assert!(!stored.contains("correct horse"), "the password is not in its hash");
        assert!(verify_now(&stored, &password));
        assert!(!verify_now(&stored, &SecretString::from("correct horse battery stapl")));
        assert_ne!(stored, hash_now(&password).expect("hashes"), "a fresh salt each time");
    }

    #[tokio::test]
    async fn an_unknown_user_is_checked_against_the_dummy_and_never_matches() {
        assert!(dummy_hash().starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "the dummy costs what a real hash does");
        assert!(!verify_password(None, SecretString::from("")).await.expect("checked"));
        let stored = hash_now(&SecretString::from("right")).expect("hashes");
        assert!(verify_password(Some(stored.clone()), SecretString::from("right")).await.expect("checked"));
        assert!(!verify_password(Some(stored), SecretString::from("wrong")).await.expect("checked"));
    }

    #[test]
    fn a_stored_value_that_is_no_hash_matches_nothing() {
        for stored in ["", "plain", "$argon2id$v=19$m=19456,t=2,p=1$short", "$pbkdf2-sha512$x"] {
            assert!(!verify_now(stored, &SecretString::from("plain")), "{stored:?}");
        }
    }
}
