//! RS256 key pairs: generated as PKCS#8, loaded into `jsonwebtoken`'s keys, published as JWKs.

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::KeyPair as _;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};

use super::token_hash;

#[derive(Debug, thiserror::Error)]
pub enum RsaError {
    #[error("RSA key generation failed")]
    Generation,
    #[error("not a usable RSA key")]
    Malformed,
}

/// A new RSA-2048 key: its PKCS#8 private half, its SubjectPublicKeyInfo, and a key id
/// derived from the public half.
pub(crate) struct GeneratedRsa {
    pub(crate) pkcs8: Vec<u8>,
    pub(crate) public_der: Vec<u8>,
    pub(crate) kid: String,
}

pub(crate) fn generate_rsa() -> Result<GeneratedRsa, RsaError> {
    let pair = KeyPair::generate(KeySize::Rsa2048).map_err(|_| RsaError::Generation)?;
    let pkcs8: Pkcs8V1Der = pair.as_der().map_err(|_| RsaError::Generation)?;
    let public: PublicKeyX509Der = pair.public_key().as_der().map_err(|_| RsaError::Generation)?;
    let kid = token_hash(&BASE64.encode(public.as_ref()))[..22].to_owned();
    Ok(GeneratedRsa { pkcs8: pkcs8.as_ref().to_vec(), public_der: public.as_ref().to_vec(), kid })
}

/// A key pair ready to sign and verify RS256 and to be published.
pub(crate) struct RsaSigner {
    pub(crate) encoding: EncodingKey,
    pub(crate) decoding: DecodingKey,
    pub(crate) jwk: Jwk,
}

/// Loads a PKCS#8 RSA private key under `kid`.
pub(crate) fn rsa_signer(kid: &str, pkcs8: &[u8]) -> Result<RsaSigner, RsaError> {
    let encoding =
        EncodingKey::from_rsa_pem(pem("PRIVATE KEY", pkcs8).as_bytes()).map_err(|_| RsaError::Malformed)?;
    let mut jwk = Jwk::from_encoding_key(&encoding, Algorithm::RS256).map_err(|_| RsaError::Malformed)?;
    jwk.common.key_id = Some(kid.to_owned());
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    jwk.common.key_algorithm = Some(KeyAlgorithm::RS256);
    let decoding = match &jwk.algorithm {
        AlgorithmParameters::RSA(rsa) => {
            DecodingKey::from_rsa_components(&rsa.n, &rsa.e).map_err(|_| RsaError::Malformed)?
        }
        _ => return Err(RsaError::Malformed),
    };
    Ok(RsaSigner { encoding, decoding, jwk })
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
