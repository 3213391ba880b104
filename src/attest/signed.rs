//! ES256 JWS signed by a key in the token, carrying the signer's certificate chain in
//! `x5c`, so a verifier needs only the operator's root. Ceremony transcripts (signed by
//! the attestation CA) and audit checkpoints (signed by the audit key) both use it.

use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use super::certificate::Certificate;
use crate::signer::{KeyRef, SignError, SignInput, Signer};
use crate::util::{b64, unb64};

/// A JWS's three parts, base64url: protected header, payload, signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JwsParts {
    /// The protected header.
    pub protected: String,
    /// The payload.
    pub payload: String,
    /// The signature.
    pub signature: String,
}

impl JwsParts {
    /// The compact serialization.
    pub fn compact(&self) -> String {
        format!("{}.{}.{}", self.protected, self.payload, self.signature)
    }

    /// Splits a compact serialization.
    pub fn from_compact(text: &str) -> Option<Self> {
        let mut parts = text.split('.');
        let (Some(protected), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        Some(JwsParts {
            protected: protected.to_string(),
            payload: payload.to_string(),
            signature: signature.to_string(),
        })
    }
}

/// Signs `payload` with the ES256 key `key`, whose certificate chain (its own
/// certificate first) is `chain`. `extra` fields (such as the header's `kid`) join the
/// header.
pub async fn sign(
    signer: &dyn Signer,
    key: KeyRef<'_>,
    typ: &str,
    chain: &[Vec<u8>],
    extra: &[(&str, &str)],
    payload: &[u8],
) -> Result<JwsParts, SignError> {
    let x5c: Vec<String> = chain.iter().map(|c| STANDARD.encode(c)).collect();
    let mut header = json!({"alg": "ES256", "typ": typ, "x5c": x5c});
    for (name, value) in extra {
        header[*name] = json!(value);
    }
    let protected = b64(serde_json::to_vec(&header).expect("a header serializes"));
    let payload = b64(payload);
    let input = format!("{protected}.{payload}");
    let signature = signer
        .sign(key, SignInput::Message(input.into_bytes()))
        .await?;
    Ok(JwsParts {
        protected,
        payload,
        signature: b64(signature),
    })
}

/// A JWS whose signature and chain checked out.
#[derive(Debug)]
pub struct Verified {
    /// The protected header.
    pub header: Value,
    /// The decoded payload.
    pub payload: Vec<u8>,
    /// The chain from `x5c`, parsed: the signer's certificate first.
    pub certificates: Vec<Certificate>,
    /// The chain from `x5c`, DER.
    pub chain: Vec<Vec<u8>>,
}

/// Verifies an ES256 JWS of type `typ` whose `x5c` chain leads to `root_der` as of `at`.
/// Callers then check that the signer's certificate is one that may sign this kind of
/// document: any key under the root has a certificate.
pub fn verify(
    jws: &JwsParts,
    typ: &str,
    root_der: &[u8],
    at: SystemTime,
) -> Result<Verified, String> {
    let header: Value = unb64(&jws.protected)
        .and_then(|h| serde_json::from_slice(&h).ok())
        .ok_or("the protected header is not base64url JSON")?;
    if header["alg"] != "ES256" {
        return Err(format!("unexpected algorithm {}", header["alg"]));
    }
    if header["typ"] != typ {
        return Err(format!(
            "the protected header's typ is {}, not {typ}",
            header["typ"]
        ));
    }
    let chain: Vec<Vec<u8>> = header["x5c"]
        .as_array()
        .ok_or("the protected header has no x5c chain")?
        .iter()
        .map(|c| {
            c.as_str()
                .and_then(|s| STANDARD.decode(s).ok())
                .ok_or("x5c holds a non-base64 entry")
        })
        .collect::<Result<_, _>>()?;
    let (verdict, certificates) = super::verify::verify_chain(&chain, root_der, at);
    if let Some(failure) = verdict.first_failure() {
        return Err(format!(
            "the signer's chain is not trusted: {}: {}",
            failure.name, failure.detail
        ));
    }
    let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(certificates[0].public_key())
        .map_err(|_| "the signer's key is not P-256")?;
    let signature = unb64(&jws.signature)
        .and_then(|s| p256::ecdsa::Signature::from_slice(&s).ok())
        .ok_or("the signature is malformed")?;
    let input = format!("{}.{}", jws.protected, jws.payload);
    p256::ecdsa::signature::Verifier::verify(&key, input.as_bytes(), &signature).map_err(|_| {
        "the signature does not verify: the signed payload or header was changed".to_string()
    })?;
    let payload = unb64(&jws.payload).ok_or("the payload is not base64url")?;
    Ok(Verified {
        header,
        payload,
        certificates,
        chain,
    })
}
