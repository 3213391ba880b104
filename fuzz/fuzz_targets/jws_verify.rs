//! The JWS/JWT verifier behind `POST /v1/verify`: split, header, `alg` allowlist, `kid`
//! lookup, signature and claims, against a fixed JWK set holding one ES256 and one
//! Ed25519 key. The input is used twice: as a compact token as received, and (since no
//! mutation of a received token keeps its signature valid) as a header and a payload,
//! split at the first newline, that the target signs with both keys before verifying,
//! so the header and claims checks behind the signature see arbitrary JSON too.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use signetd::Algorithm;
use signetd::keys::{Jwk, JwkSet};
use signetd::token::verify::{Expected, verify};
use signetd::util::b64;

const ES_SECRET: [u8; 32] = [3u8; 32];
const ED_SECRET: [u8; 32] = [7u8; 32];

/// Fixed, public-only test keys (the private halves are constants of this file).
fn keys() -> &'static JwkSet {
    static KEYS: OnceLock<JwkSet> = OnceLock::new();
    KEYS.get_or_init(|| {
        let es = p256::ecdsa::SigningKey::from_slice(&ES_SECRET).expect("a valid scalar");
        let point = es.verifying_key().to_encoded_point(false);
        let ed = ed25519_dalek::SigningKey::from_bytes(&ED_SECRET);
        JwkSet {
            keys: vec![
                Jwk::from_public_key(Algorithm::Es256, "es", point.as_bytes()),
                Jwk::from_public_key(Algorithm::EdDsa, "ed", ed.verifying_key().as_bytes()),
            ],
        }
    })
}

/// `header.payload.signature`, signed by the fixed key of `alg`.
fn signed(header: &[u8], payload: &[u8], ed: bool) -> String {
    use p256::ecdsa::signature::Signer;
    let input = format!("{}.{}", b64(header), b64(payload));
    let signature = if ed {
        let key = ed25519_dalek::SigningKey::from_bytes(&ED_SECRET);
        key.sign(input.as_bytes()).to_bytes().to_vec()
    } else {
        let key = p256::ecdsa::SigningKey::from_slice(&ES_SECRET).expect("a valid scalar");
        let signature: p256::ecdsa::Signature = key.sign(input.as_bytes());
        signature.to_bytes().to_vec()
    };
    format!("{input}.{}", b64(signature))
}

fuzz_target!(|data: &[u8]| {
    check(data);
    if let Some(newline) = data.iter().position(|&b| b == b'\n') {
        let (header, payload) = (&data[..newline], &data[newline + 1..]);
        for ed in [false, true] {
            check(signed(header, payload, ed).as_bytes());
        }
    }
});

fn check(data: &[u8]) {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    for expected in [
        Expected::default(),
        Expected {
            issuer: Some("https://issuer.example"),
            audience: Some("api"),
            max_ttl: Some(60),
            now: 1_700_000_000,
            leeway: 5,
            profile: Some(signetd::token::profile::Profile::JwtSvid {
                trust_domain: "example.org",
            }),
        },
    ] {
        let _ = verify(token, keys(), &expected);
    }
}
