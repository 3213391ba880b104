//! The host's own limits for the rows that do not sign: verifying a token, and a
//! resumed TLS 1.3 handshake with a client certificate. Both run in this process with
//! the crates the field uses (ring for P-256, ed25519-dalek, rustls), no signetd code,
//! so the verify and TLS rows get a floor of their own as the signing rows have
//! `C_Sign`.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, Connection, HandshakeKind, ServerConnection};

use crate::stats::{Percentiles, Samples, on_threads};

/// One host floor measurement.
#[derive(Clone, Debug, serde::Serialize)]
pub struct HostFloor {
    pub threads: usize,
    pub ops_per_s: f64,
    pub latency_us: Percentiles,
}

/// A public key that verifies the bench's tokens.
pub enum VerifyingKey {
    /// The uncompressed SEC1 point.
    Es256(Vec<u8>),
    EdDsa(ed25519_dalek::VerifyingKey),
}

impl VerifyingKey {
    /// The key `kid` of a JWKS document.
    pub fn from_jwks(jwks: &serde_json::Value, kid: &str) -> VerifyingKey {
        let jwk = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kid"] == kid)
            .unwrap_or_else(|| panic!("no key {kid} in the JWKS"));
        let bytes = |name: &str| URL_SAFE_NO_PAD.decode(jwk[name].as_str().unwrap()).unwrap();
        match jwk["kty"].as_str().unwrap() {
            "EC" => {
                let mut point = vec![4u8];
                point.extend(bytes("x"));
                point.extend(bytes("y"));
                VerifyingKey::Es256(point)
            }
            "OKP" => {
                let x: [u8; 32] = bytes("x").try_into().unwrap();
                VerifyingKey::EdDsa(ed25519_dalek::VerifyingKey::from_bytes(&x).unwrap())
            }
            other => panic!("unexpected key type {other}"),
        }
    }
}

/// What a verifier does per token on the host: split it, decode the signature and the
/// claims, check the signature, parse the claims.
fn verify(key: &VerifyingKey, token: &str) {
    let (input, signature) = token.rsplit_once('.').unwrap();
    let payload = input.split_once('.').unwrap().1;
    let signature = URL_SAFE_NO_PAD.decode(signature).unwrap();
    let verified = match key {
        VerifyingKey::Es256(point) => ring::signature::UnparsedPublicKey::new(
            &ring::signature::ECDSA_P256_SHA256_FIXED,
            point,
        )
        .verify(input.as_bytes(), &signature)
        .is_ok(),
        VerifyingKey::EdDsa(key) => {
            let signature = ed25519_dalek::Signature::from_slice(&signature).unwrap();
            key.verify_strict(input.as_bytes(), &signature).is_ok()
        }
    };
    assert!(verified, "the bench's token must verify");
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    assert!(claims["exp"].is_u64());
}

/// Verifying `token` with `key` on `threads` threads.
pub fn verification(
    key: &VerifyingKey,
    token: &str,
    threads: usize,
    duration: Duration,
) -> HostFloor {
    host_floor(
        threads,
        on_threads(threads, duration, || (), |_| verify(key, token)),
    )
}

fn host_floor(threads: usize, (samples, elapsed): (Samples, Duration)) -> HostFloor {
    HostFloor {
        threads,
        ops_per_s: samples.len() as f64 / elapsed.as_secs_f64(),
        latency_us: samples.percentiles(),
    }
}

/// One TLS handshake between `client` and `server`, both in memory: records go from one
/// to the other until neither is handshaking, then the server's session tickets reach
/// the client (TLS 1.3 sends them after the handshake). Returns how it went.
fn handshake(client: &Arc<ClientConfig>, server: &Arc<rustls::ServerConfig>) -> HandshakeKind {
    let name = ServerName::try_from("localhost").unwrap();
    let mut client = Connection::from(ClientConnection::new(client.clone(), name).unwrap());
    let mut server = Connection::from(ServerConnection::new(server.clone()).unwrap());
    let mut buffer = Vec::with_capacity(8192);
    let mut pass = |from: &mut Connection, to: &mut Connection| {
        while from.wants_write() {
            buffer.clear();
            from.write_tls(&mut buffer).unwrap();
            let mut records = &buffer[..];
            while !records.is_empty() {
                to.read_tls(&mut records).unwrap();
                to.process_new_packets().unwrap();
            }
        }
    };
    while client.is_handshaking() || server.is_handshaking() {
        pass(&mut client, &mut server);
        pass(&mut server, &mut client);
    }
    pass(&mut server, &mut client);
    client.handshake_kind().unwrap()
}

/// The server side of the floor's handshakes: the daemon's certificate and key, client
/// certificates required and checked against `client_ca`, TLS 1.3, rustls' defaults
/// otherwise (its session cache, as the daemon's listener has).
pub fn server_config(cert: &str, key: &str, client_ca: &str) -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(client_ca.as_bytes()) {
        roots.add(ca.unwrap()).unwrap();
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .unwrap();
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(server)
}

/// Resumed handshakes on `threads` threads, each with a client config of its own (made
/// by `client`, presenting a client certificate) whose first, full handshake is not
/// timed. Panics if a timed handshake did not resume: the floor would be another one.
pub fn resumed_handshakes(
    client: impl Fn() -> Arc<ClientConfig> + Sync,
    server: &Arc<rustls::ServerConfig>,
    threads: usize,
    duration: Duration,
) -> HostFloor {
    let timed = on_threads(
        threads,
        duration,
        || {
            let client = client();
            handshake(&client, server);
            client
        },
        |client| {
            let kind = handshake(client, server);
            assert_eq!(
                kind,
                HandshakeKind::Resumed,
                "the floor times resumed handshakes"
            );
        },
    );
    host_floor(threads, timed)
}
