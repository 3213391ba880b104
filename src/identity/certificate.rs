//! A verified client certificate's identity: its SPIFFE ID, DNS names and hash.
//!
//! The TLS listener has already checked the chain, validity and revocation; this only
//! reads what the leaf says. A certificate identifies its holder by its one `spiffe://`
//! URI SAN (an X.509-SVID carries exactly one URI SAN), by its DNS SANs, and always by
//! the SHA-256 of its DER, so that `cert-sha256:` can name even a certificate with
//! neither.

use sha2::{Digest, Sha256};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::{CallerSelector, CertificateIdentity};

impl CertificateIdentity {
    /// Reads the identity of a DER-encoded certificate.
    ///
    /// The SPIFFE ID is set only when the certificate has exactly one URI SAN with the
    /// `spiffe` scheme and it is a valid workload SPIFFE ID (the same check a
    /// `spiffe://` selector passes); two, or a malformed one, give none, since which one
    /// would name the holder is then unclear. DNS names are lowercased.
    pub fn from_der(der: &[u8]) -> Result<CertificateIdentity, String> {
        let (_, cert) = X509Certificate::from_der(der)
            .map_err(|e| format!("the certificate cannot be parsed: {e}"))?;
        let san = cert
            .subject_alternative_name()
            .map_err(|e| format!("the certificate's subjectAltName cannot be parsed: {e}"))?;
        let names = san.map_or(&[][..], |san| &san.value.general_names[..]);
        let mut spiffe = Vec::new();
        let mut dns_names = Vec::new();
        for name in names {
            match name {
                GeneralName::URI(uri) if has_spiffe_scheme(uri) => spiffe.push(*uri),
                GeneralName::DNSName(dns) => dns_names.push(dns.to_ascii_lowercase()),
                _ => {}
            }
        }
        let spiffe_id = match spiffe[..] {
            [one] => match one.parse::<CallerSelector>() {
                Ok(CallerSelector::SpiffeId(id)) => Some(id),
                _ => None,
            },
            _ => None,
        };
        Ok(CertificateIdentity {
            spiffe_id,
            dns_names,
            sha256: Sha256::digest(der).into(),
        })
    }
}

fn has_spiffe_scheme(uri: &str) -> bool {
    uri.get(..9)
        .is_some_and(|s| s.eq_ignore_ascii_case("spiffe://"))
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, KeyPair, SanType};

    use super::*;

    fn cert(sans: &[&str]) -> Vec<u8> {
        let mut params = CertificateParams::default();
        params.subject_alt_names = sans
            .iter()
            .map(|s| match s.strip_prefix("dns:") {
                Some(dns) => SanType::DnsName(dns.try_into().unwrap()),
                None => SanType::URI((*s).try_into().unwrap()),
            })
            .collect();
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn one_spiffe_uri_is_the_spiffe_id() {
        let der = cert(&[
            "spiffe://example.org/ns/prod/sa/api",
            "https://not.spiffe/x",
            "dns:API.Example.com",
        ]);
        let id = CertificateIdentity::from_der(&der).unwrap();
        assert_eq!(
            id.spiffe_id.as_deref(),
            Some("spiffe://example.org/ns/prod/sa/api")
        );
        assert_eq!(id.dns_names, ["api.example.com"]);
        assert_eq!(id.sha256, <[u8; 32]>::from(Sha256::digest(&der)));
    }

    #[test]
    fn two_spiffe_uris_or_a_malformed_one_give_no_spiffe_id() {
        for sans in [
            &["spiffe://example.org/a", "spiffe://example.org/b"][..],
            &["spiffe://Example.org/a"],
            &["spiffe://example.org"],
            &["spiffe://example.org/a/*"],
        ] {
            let id = CertificateIdentity::from_der(&cert(sans)).unwrap();
            assert_eq!(id.spiffe_id, None, "{sans:?}");
        }
        let none = CertificateIdentity::from_der(&cert(&[])).unwrap();
        assert_eq!((none.spiffe_id, none.dns_names.len()), (None, 0));
        assert!(CertificateIdentity::from_der(b"\x30\x03junk").is_err());
    }
}
