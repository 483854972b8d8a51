//! The realm's JWS keys: generated, parsed once into aws-lc-rs keys that sign compact JWTs, checked through `jsonwebtoken`, published as JWKs.
//!
//! `jsonwebtoken`'s aws-lc backend parses an RSA private key's DER again on every signature
//! (a third of an RS256 signature's cost), so signing goes to aws-lc-rs directly with the key
//! parsed once per load; verification stays with `jsonwebtoken`, which parses only the small
//! public half.

use std::fmt;

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::hmac;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RSA_PKCS1_SHA256,
};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD as BASE64, URL_SAFE_NO_PAD as BASE64URL};
use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, EllipticCurve, EllipticCurveKeyParameters, EllipticCurveKeyType, Jwk,
    KeyAlgorithm, OctetKeyPairParameters, OctetKeyPairType, PublicKeyUse, RSAKeyParameters, RSAKeyType,
};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Serialize;

use super::{random_bytes, token_hash};

/// The JWS algorithms the realm signs with: one public-key algorithm for the tokens clients
/// verify (access and ID tokens), HS512 for the refresh and offline tokens only the broker
/// verifies, as Keycloak does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JwsAlgorithm {
    Rs256,
    Es256,
    EdDsa,
    Hs512,
}

impl JwsAlgorithm {
    /// The public-key algorithms `realm.signature_algorithm` may name.
    pub const PUBLIC: [JwsAlgorithm; 3] = [JwsAlgorithm::Rs256, JwsAlgorithm::Es256, JwsAlgorithm::EdDsa];

    /// The JWS `alg` name, also what the `signing_keys.algorithm` column holds.
    pub fn name(self) -> &'static str {
        match self {
            JwsAlgorithm::Rs256 => "RS256",
            JwsAlgorithm::Es256 => "ES256",
            JwsAlgorithm::EdDsa => "EdDSA",
            JwsAlgorithm::Hs512 => "HS512",
        }
    }

    pub fn from_name(name: &str) -> Option<JwsAlgorithm> {
        [JwsAlgorithm::Rs256, JwsAlgorithm::Es256, JwsAlgorithm::EdDsa, JwsAlgorithm::Hs512]
            .into_iter()
            .find(|alg| alg.name() == name)
    }

    /// Whether tokens signed with it are checked by others, through the published JWKS.
    pub fn is_public(self) -> bool {
        self != JwsAlgorithm::Hs512
    }

    pub(crate) fn jsonwebtoken(self) -> Algorithm {
        match self {
            JwsAlgorithm::Rs256 => Algorithm::RS256,
            JwsAlgorithm::Es256 => Algorithm::ES256,
            JwsAlgorithm::EdDsa => Algorithm::EdDSA,
            JwsAlgorithm::Hs512 => Algorithm::HS512,
        }
    }
}

impl fmt::Display for JwsAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JwsKeyError {
    #[error("{0} key generation failed")]
    Generation(JwsAlgorithm),
    #[error("not a usable {0} key")]
    Malformed(JwsAlgorithm),
    #[error("signing failed")]
    Signing,
}

/// The HMAC key's length: SHA-512's block size, as RFC 2104 advises for HS512.
const HMAC_KEY_BYTES: usize = 64;

/// A new key: its private half (PKCS#8, or the raw HMAC secret), its SubjectPublicKeyInfo
/// (empty for HMAC) and a key id derived from the public half (random for HMAC).
pub(crate) struct GeneratedKey {
    pub(crate) private: Vec<u8>,
    pub(crate) public_der: Vec<u8>,
    pub(crate) kid: String,
}

impl fmt::Debug for GeneratedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeneratedKey").field("kid", &self.kid).finish_non_exhaustive()
    }
}

pub(crate) fn generate_key(algorithm: JwsAlgorithm) -> Result<GeneratedKey, JwsKeyError> {
    let failed = |_| JwsKeyError::Generation(algorithm);
    let (private, public): (Vec<u8>, Option<PublicKeyX509Der<'static>>) = match algorithm {
        JwsAlgorithm::Rs256 => {
            let pair = RsaKeyPair::generate(KeySize::Rsa2048).map_err(failed)?;
            let pkcs8: Pkcs8V1Der = pair.as_der().map_err(failed)?;
            (pkcs8.as_ref().to_vec(), Some(pair.public_key().as_der().map_err(failed)?))
        }
        JwsAlgorithm::Es256 => {
            let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).map_err(failed)?;
            let pkcs8 = pair.to_pkcs8v1().map_err(failed)?;
            (pkcs8.as_ref().to_vec(), Some(pair.public_key().as_der().map_err(failed)?))
        }
        JwsAlgorithm::EdDsa => {
            let pair = Ed25519KeyPair::generate().map_err(failed)?;
            let pkcs8 = pair.to_pkcs8v1().map_err(failed)?;
            (pkcs8.as_ref().to_vec(), Some(pair.public_key().as_der().map_err(failed)?))
        }
        JwsAlgorithm::Hs512 => (random_bytes::<HMAC_KEY_BYTES>().to_vec(), None),
    };
    let (public_der, kid) = match public {
        Some(public) => {
            let der = public.as_ref().to_vec();
            let kid = token_hash(&BASE64.encode(&der))[..22].to_owned();
            (der, kid)
        }
        None => (Vec::new(), token_hash(&BASE64URL.encode(random_bytes::<32>()))[..22].to_owned()),
    };
    Ok(GeneratedKey { private, public_der, kid })
}

/// A private key parsed once, for every signature of its life.
enum Private {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
    /// Boxed: aws-lc's HMAC context is over a kilobyte, the key pairs are pointers.
    Hmac(Box<hmac::Key>),
}

/// One realm key ready to sign and to verify, with its JWK when it is published.
pub(crate) struct JwsKey {
    kid: String,
    algorithm: JwsAlgorithm,
    private: Private,
    decoding: DecodingKey,
    jwk: Option<Jwk>,
}

impl fmt::Debug for JwsKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwsKey").field("kid", &self.kid).field("algorithm", &self.algorithm).finish_non_exhaustive()
    }
}

/// The JOSE header of every token the realm signs.
#[derive(Serialize)]
struct Header<'a> {
    alg: &'static str,
    typ: &'static str,
    kid: &'a str,
}

/// Parses `private` (as [`generate_key`] made it) into a key for `algorithm` under `kid`.
pub(crate) fn load_key(kid: &str, algorithm: JwsAlgorithm, private: &[u8]) -> Result<JwsKey, JwsKeyError> {
    let malformed = |_| JwsKeyError::Malformed(algorithm);
    let rejected = |_: jsonwebtoken::errors::Error| JwsKeyError::Malformed(algorithm);
    let (private, decoding, params) = match algorithm {
        JwsAlgorithm::Rs256 => {
            let pair = RsaKeyPair::from_pkcs8(private).map_err(malformed)?;
            let public = pair.public_key();
            let (n, e) = (public.modulus(), public.exponent());
            let (n, e) = (n.big_endian_without_leading_zero(), e.big_endian_without_leading_zero());
            let decoding = DecodingKey::from_rsa_raw_components(n, e);
            let params = AlgorithmParameters::RSA(RSAKeyParameters {
                key_type: RSAKeyType::RSA,
                n: BASE64URL.encode(n),
                e: BASE64URL.encode(e),
            });
            (Private::Rsa(pair), decoding, Some(params))
        }
        JwsAlgorithm::Es256 => {
            let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, private).map_err(malformed)?;
            // An uncompressed P-256 point: 0x04, then x and y of 32 bytes each.
            let point = pair.public_key().as_ref();
            if point.len() != 65 || point[0] != 4 {
                return Err(JwsKeyError::Malformed(algorithm));
            }
            let (x, y) = (BASE64URL.encode(&point[1..33]), BASE64URL.encode(&point[33..]));
            let decoding = DecodingKey::from_ec_components(&x, &y).map_err(rejected)?;
            let params = AlgorithmParameters::EllipticCurve(EllipticCurveKeyParameters {
                key_type: EllipticCurveKeyType::EC,
                curve: EllipticCurve::P256,
                x,
                y,
            });
            (Private::Ec(pair), decoding, Some(params))
        }
        JwsAlgorithm::EdDsa => {
            let pair = Ed25519KeyPair::from_pkcs8(private).map_err(malformed)?;
            let x = BASE64URL.encode(pair.public_key().as_ref());
            let decoding = DecodingKey::from_ed_components(&x).map_err(rejected)?;
            let params = AlgorithmParameters::OctetKeyPair(OctetKeyPairParameters {
                key_type: OctetKeyPairType::OctetKeyPair,
                curve: EllipticCurve::Ed25519,
                x,
            });
            (Private::Ed(pair), decoding, Some(params))
        }
        JwsAlgorithm::Hs512 => {
            if private.len() < HMAC_KEY_BYTES {
                return Err(JwsKeyError::Malformed(algorithm));
            }
            (
                Private::Hmac(Box::new(hmac::Key::new(hmac::HMAC_SHA512, private))),
                DecodingKey::from_secret(private),
                None,
            )
        }
    };
    let jwk = params.map(|algorithm_params| Jwk {
        common: CommonParameters {
            public_key_use: Some(PublicKeyUse::Signature),
            key_algorithm: Some(KeyAlgorithm::from(algorithm.jsonwebtoken())),
            key_id: Some(kid.to_owned()),
            ..CommonParameters::default()
        },
        algorithm: algorithm_params,
    });
    Ok(JwsKey { kid: kid.to_owned(), algorithm, private, decoding, jwk })
}

impl JwsKey {
    pub(crate) fn kid(&self) -> &str {
        &self.kid
    }

    pub(crate) fn algorithm(&self) -> JwsAlgorithm {
        self.algorithm
    }

    pub(crate) fn decoding(&self) -> &DecodingKey {
        &self.decoding
    }

    /// The public JWK; `None` for a secret (HMAC) key, which is never published.
    pub(crate) fn jwk(&self) -> Option<&Jwk> {
        self.jwk.as_ref()
    }

    /// `claims` as a compact JWS signed with this key, its kid in the header.
    pub(crate) fn sign_jwt<T: Serialize>(&self, claims: &T) -> Result<String, JwsKeyError> {
        let header = Header { alg: self.algorithm.name(), typ: "JWT", kid: &self.kid };
        let header = serde_json::to_vec(&header).map_err(|_| JwsKeyError::Signing)?;
        let claims = serde_json::to_vec(claims).map_err(|_| JwsKeyError::Signing)?;
        let mut jwt = String::with_capacity(4 * (header.len() + claims.len()) / 3 + 360);
        BASE64URL.encode_string(&header, &mut jwt);
        jwt.push('.');
        BASE64URL.encode_string(&claims, &mut jwt);
        let signature = self.sign(jwt.as_bytes())?;
        jwt.push('.');
        BASE64URL.encode_string(&signature, &mut jwt);
        Ok(jwt)
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, JwsKeyError> {
        match &self.private {
            Private::Rsa(pair) => {
                let mut signature = vec![0; pair.public_modulus_len()];
                pair.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), message, &mut signature)
                    .map_err(|_| JwsKeyError::Signing)?;
                Ok(signature)
            }
            Private::Ec(pair) => {
                let signature = pair.sign(&SystemRandom::new(), message).map_err(|_| JwsKeyError::Signing)?;
                Ok(signature.as_ref().to_vec())
            }
            Private::Ed(pair) => Ok(pair.sign(message).as_ref().to_vec()),
            Private::Hmac(key) => Ok(hmac::sign(key, message).as_ref().to_vec()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::Validation;
    use serde_json::{Value, json};

    #[test]
    fn every_algorithm_signs_what_jsonwebtoken_verifies_and_publishes_its_key_type() {
        let cases = [
            (JwsAlgorithm::Rs256, Some("RSA")),
            (JwsAlgorithm::Es256, Some("EC")),
            (JwsAlgorithm::EdDsa, Some("OKP")),
            (JwsAlgorithm::Hs512, None),
        ];
        for (algorithm, kty) in cases {
            let generated = generate_key(algorithm).expect("generates");
            let key = load_key(&generated.kid, algorithm, &generated.private).expect("loads");
            let jwt = key.sign_jwt(&json!({"sub": "u", "exp": 4_000_000_000_i64})).expect("signs");

            let header = jsonwebtoken::decode_header(&jwt).expect("a header");
            assert_eq!(header.alg, algorithm.jsonwebtoken(), "{algorithm}");
            assert_eq!(header.kid.as_deref(), Some(generated.kid.as_str()), "{algorithm}");
            let mut validation = Validation::new(algorithm.jsonwebtoken());
            validation.validate_aud = false;
            let claims = jsonwebtoken::decode::<Value>(&jwt, key.decoding(), &validation).expect("verifies");
            assert_eq!(claims.claims["sub"], "u", "{algorithm}");
            let published = key.jwk().map(|jwk| serde_json::to_value(jwk).expect("json")["kty"].clone());
            assert_eq!(published.as_ref().and_then(Value::as_str), kty, "{algorithm}");
            assert_eq!(algorithm.is_public(), kty.is_some(), "{algorithm}");
            assert_eq!(generated.public_der.is_empty(), kty.is_none(), "{algorithm}");
        }
    }

    #[test]
    fn a_key_of_another_algorithm_or_a_short_secret_is_refused() {
        let rsa = generate_key(JwsAlgorithm::Rs256).expect("generates");
        let cases = [
            (JwsAlgorithm::Es256, rsa.private.clone(), "an RSA key read as P-256"),
            (JwsAlgorithm::EdDsa, rsa.private.clone(), "an RSA key read as Ed25519"),
            (JwsAlgorithm::Rs256, vec![1, 2, 3], "garbage read as RSA"),
            (JwsAlgorithm::Hs512, vec![7; 16], "a 16-byte HMAC secret"),
        ];
        for (algorithm, private, name) in cases {
            assert!(matches!(load_key("k", algorithm, &private), Err(JwsKeyError::Malformed(_))), "{name}");
        }
    }

    #[test]
    fn algorithm_names_round_trip() {
        for algorithm in [JwsAlgorithm::Rs256, JwsAlgorithm::Es256, JwsAlgorithm::EdDsa, JwsAlgorithm::Hs512] {
            assert_eq!(JwsAlgorithm::from_name(algorithm.name()), Some(algorithm));
        }
        assert_eq!(JwsAlgorithm::from_name("rs256"), None, "names are exact, as JWS has them");
    }
}
