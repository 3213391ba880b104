//! Certificates made at test time with rcgen: a CA, server and client leaves, CRLs, and
//! the files a `[tls]` table names.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SanType, SerialNumber,
};
use rustls::ClientConfig;
use signetd::config::TlsConfig;
use tempfile::TempDir;
use time::{Duration, OffsetDateTime};

/// A certificate authority.
pub struct Ca {
    pub pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A leaf certificate and its key.
pub struct Leaf {
    pub pem: String,
    pub key_pem: String,
    pub der: Vec<u8>,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Ca {
            pem,
            issuer: Issuer::new(params, key),
        }
    }

    /// A client certificate with these SANs (`spiffe://…` URIs, else DNS names), valid
    /// from an hour ago for a day unless `expired` (then it ended yesterday).
    pub fn client(&self, serial: u64, sans: &[&str], expired: bool) -> Leaf {
        let sans = sans
            .iter()
            .map(|s| match s.starts_with("spiffe://") {
                true => SanType::URI((*s).try_into().unwrap()),
                false => SanType::DnsName((*s).try_into().unwrap()),
            })
            .collect();
        self.leaf(serial, sans, ExtendedKeyUsagePurpose::ClientAuth, expired)
    }

    /// A server certificate for `localhost` and 127.0.0.1.
    pub fn server(&self, serial: u64) -> Leaf {
        let sans = vec![
            SanType::DnsName("localhost".try_into().unwrap()),
            SanType::IpAddress([127, 0, 0, 1].into()),
        ];
        self.leaf(serial, sans, ExtendedKeyUsagePurpose::ServerAuth, false)
    }

    fn leaf(
        &self,
        serial: u64,
        sans: Vec<SanType>,
        usage: ExtendedKeyUsagePurpose,
        expired: bool,
    ) -> Leaf {
        let now = OffsetDateTime::now_utc();
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("leaf {serial}"));
        params.subject_alt_names = sans;
        params.extended_key_usages = vec![usage];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.serial_number = Some(SerialNumber::from(serial));
        (params.not_before, params.not_after) = match expired {
            true => (now - Duration::days(3), now - Duration::days(1)),
            false => (now - Duration::hours(1), now + Duration::days(1)),
        };
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }

    /// A PEM CRL revoking these serial numbers.
    pub fn crl(&self, revoked: &[u64]) -> String {
        let now = OffsetDateTime::now_utc();
        let params = CertificateRevocationListParams {
            this_update: now - Duration::hours(1),
            next_update: now + Duration::days(1),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|&serial| RevokedCertParams {
                    serial_number: SerialNumber::from(serial),
                    revocation_time: now - Duration::minutes(5),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        params.signed_by(&self.issuer).unwrap().pem().unwrap()
    }
}

/// Serial numbers the CRL of [`Pki::new`] revokes.
pub const REVOKED: u64 = 666;

/// A CA, a server certificate and a CRL in files, and the `[tls]` config naming them.
pub struct Pki {
    pub dir: TempDir,
    pub ca: Ca,
    pub server: Leaf,
    pub tls: TlsConfig,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new("signetd test client and server CA");
        let server = ca.server(1);
        let path = |name: &str| dir.path().join(name);
        let mut tls = TlsConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            path("server.pem"),
            path("server.key"),
            path("ca.pem"),
        );
        tls.crl = Some(path("crl.pem"));
        write(&tls.cert, &server.pem);
        write_key(&tls.key, &server.key_pem);
        write(&tls.client_ca, &ca.pem);
        write(tls.crl.as_ref().unwrap(), &ca.crl(&[REVOKED]));
        Pki {
            dir,
            ca,
            server,
            tls,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `leaf` as `NAME.pem` and `NAME.key`; returns their paths.
    pub fn write_leaf(&self, name: &str, leaf: &Leaf) -> (PathBuf, PathBuf) {
        let (cert, key) = (
            self.path(&format!("{name}.pem")),
            self.path(&format!("{name}.key")),
        );
        write(&cert, &leaf.pem);
        write_key(&key, &leaf.key_pem);
        (cert, key)
    }

    /// A client trusting the CA, presenting `leaf` if given.
    pub fn client(&self, leaf: Option<&Leaf>) -> Arc<ClientConfig> {
        let files = leaf.map(|leaf| {
            let name = format!("client-{}", rand::random::<u32>());
            self.write_leaf(&name, leaf)
        });
        let identity = files.as_ref().map(|(c, k)| (c.as_path(), k.as_path()));
        signetd::client::tls_config(&self.tls.client_ca, identity).unwrap()
    }
}

/// Replaces `path` by rename, as certificate tools do.
pub fn write(path: &Path, text: &str) {
    let staged = path.with_extension("new");
    std::fs::write(&staged, text).unwrap();
    std::fs::rename(&staged, path).unwrap();
}

/// [`write`] with mode 0600.
pub fn write_key(path: &Path, text: &str) {
    let staged = path.with_extension("new");
    std::fs::write(&staged, text).unwrap();
    std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::rename(&staged, path).unwrap();
}
