//! The listener's files, read into a rustls `ServerConfig`, and a cheap fingerprint of
//! them that says when to read them again.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::config::{TlsConfig, TlsVersion};

/// Device, inode, modification time and size of each file, or `None` for a file that
/// cannot be read. A file replaced by rename (as spiffe-helper and Kubernetes secret
/// volumes do) changes its inode, one rewritten in place its time or size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Fingerprint(Vec<Option<FileStamp>>);

/// Device, inode, mtime (seconds, nanoseconds) and size.
type FileStamp = (u64, u64, i64, i64, u64);

/// The current fingerprint of every file `config` names.
pub(super) fn fingerprint(config: &TlsConfig) -> Fingerprint {
    let paths = [&config.cert, &config.key, &config.client_ca]
        .into_iter()
        .chain(config.crl.as_ref());
    Fingerprint(
        paths
            .map(|p| {
                std::fs::metadata(p)
                    .ok()
                    .map(|m| (m.dev(), m.ino(), m.mtime(), m.mtime_nsec(), m.size()))
            })
            .collect(),
    )
}

/// Reads every file and builds the server's TLS configuration: the certificate and key,
/// client certificates optional but, when presented, verified against `client_ca` and
/// the CRL. Each error names the config key and the path.
pub(super) fn server_config(config: &TlsConfig) -> Result<(Arc<ServerConfig>, [u8; 32]), String> {
    // The key's owner and mode first: a key others could read is refused whatever else
    // is wrong.
    let key = read_private_key(&config.key)?;
    let chain = certificates("tls.cert", &config.cert)?;
    let key = PrivateKeyDer::from_pem_slice(&key).map_err(|e| {
        format!(
            "tls.key: {} holds no PEM private key (PKCS#8, SEC1 or PKCS#1): {e}",
            config.key.display()
        )
    })?;
    let mut roots = RootCertStore::empty();
    for ca in certificates("tls.client_ca", &config.client_ca)? {
        roots.add(ca).map_err(|e| {
            format!(
                "tls.client_ca: {}: a certificate is not a usable CA: {e}",
                config.client_ca.display()
            )
        })?;
    }
    let crls = match &config.crl {
        Some(path) => revocation_lists(path)?,
        None => Vec::new(),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // Certificates are optional at the handshake, so public endpoints serve anyone; the
    // policy refuses a peer without one (anonymous) everything else. Only the leaf's
    // revocation is checked, and a leaf whose issuer has no CRL in the file is refused:
    // a CRL that does not cover a certificate would otherwise pass it silently.
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .with_crls(crls)
        .only_check_end_entity_revocation()
        .allow_unauthenticated()
        .build()
        .map_err(|e| format!("tls.client_ca/tls.crl: {e}"))?;
    let versions: &[&rustls::SupportedProtocolVersion] = match config.min_version {
        TlsVersion::Tls13 => &[&rustls::version::TLS13],
        TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
    };
    let leaf_sha256 = Sha256::digest(&chain[0]).into();
    let mut server = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| format!("tls.min_version: {e}"))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| {
            format!(
                "tls.cert {} and tls.key {} do not make a usable pair: {e}",
                config.cert.display(),
                config.key.display()
            )
        })?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((Arc::new(server), leaf_sha256))
}

/// Reads the private key file, refusing it (before reading) unless signetd's user or
/// root owns it and no one else may read or write it; the check is on the opened file.
fn read_private_key(path: &Path) -> Result<Zeroizing<Vec<u8>>, String> {
    let mut file =
        crate::config::files::open_private_file(path, "tls.key").map_err(|e| e.to_string())?;
    let mut pem = Zeroizing::new(Vec::new());
    std::io::Read::read_to_end(&mut file, &mut pem)
        .map_err(|e| format!("tls.key: cannot read {}: {e}", path.display()))?;
    Ok(pem)
}

/// Every certificate in a PEM file; at least one.
fn certificates(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{key}: cannot read {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{key}: {} holds no PEM CERTIFICATE block",
            path.display()
        ));
    }
    Ok(certs)
}

/// The CRLs in a file: PEM blocks, or else the whole file as one DER CRL (as step-ca
/// serves it).
fn revocation_lists(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, String> {
    let bytes =
        std::fs::read(path).map_err(|e| format!("tls.crl: cannot read {}: {e}", path.display()))?;
    let pem = CertificateRevocationListDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("tls.crl: {}: {e}", path.display()))?;
    if !pem.is_empty() {
        return Ok(pem);
    }
    if bytes.first() == Some(&0x30) {
        return Ok(vec![CertificateRevocationListDer::from(bytes)]);
    }
    Err(format!(
        "tls.crl: {} holds no X509 CRL, in PEM or DER",
        path.display()
    ))
}
