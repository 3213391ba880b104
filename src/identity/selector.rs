//! Caller selectors: the one form in which a config names principals.
//!
//! | form | matches |
//! |---|---|
//! | `uid:1000` | a local peer with that uid |
//! | `gid:50` | a local peer with that primary gid |
//! | `spiffe://example.org/ns/prod/sa/api` | a certificate with exactly that SPIFFE ID |
//! | `spiffe://example.org/ns/prod/*` | a certificate whose SPIFFE ID is under that path (any depth) |
//! | `spiffe://example.org/*` | a certificate with any workload SPIFFE ID in that trust domain |
//! | `dns:api.example.com` | a certificate with that DNS name (exact, case-insensitive) |
//! | `cert-sha256:<64 hex>` | the certificate whose DER has that SHA-256 |
//!
//! Selectors never match anonymous principals, and root gets no exemption: least
//! privilege means root is listed like anyone else.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

use super::Principal;

/// One entry of a `callers` list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallerSelector {
    /// `uid:N`.
    Uid(u32),
    /// `gid:N`.
    Gid(u32),
    /// `spiffe://TD/PATH`: exactly this SPIFFE ID.
    SpiffeId(String),
    /// `spiffe://TD/PATH/*`: any SPIFFE ID that starts with this text (which ends in `/`).
    SpiffePrefix(String),
    /// `dns:NAME`, lowercase.
    Dns(String),
    /// `cert-sha256:HEX`.
    CertSha256([u8; 32]),
}

/// Why a selector string is not one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{text:?} is not a caller selector: {why} (forms: \"uid:1000\", \"gid:50\", \"spiffe://trust.domain/path\", \"spiffe://trust.domain/path/*\", \"dns:host.example\", \"cert-sha256:<64 hex digits>\")"
)]
pub struct SelectorError {
    text: String,
    why: &'static str,
}

impl CallerSelector {
    /// Whether this selector names `principal`.
    pub fn matches(&self, principal: &Principal) -> bool {
        match (self, principal) {
            (CallerSelector::Uid(uid), Principal::Local(peer)) => peer.uid == *uid,
            (CallerSelector::Gid(gid), Principal::Local(peer)) => peer.gid == *gid,
            // A certificate's SPIFFE ID is matched only if it is a valid one: text such as
            // `/prod/../admin` or `/prod//x` must never fall under `/prod/*`.
            (CallerSelector::SpiffeId(id), Principal::Remote { certificate, .. }) => {
                valid_spiffe_id(certificate).is_some_and(|theirs| theirs == id)
            }
            (CallerSelector::SpiffePrefix(prefix), Principal::Remote { certificate, .. }) => {
                valid_spiffe_id(certificate)
                    .is_some_and(|id| id.len() > prefix.len() && id.starts_with(prefix.as_str()))
            }
            (CallerSelector::Dns(name), Principal::Remote { certificate, .. }) => certificate
                .dns_names
                .iter()
                .any(|n| n.eq_ignore_ascii_case(name)),
            (CallerSelector::CertSha256(hash), Principal::Remote { certificate, .. }) => {
                certificate.sha256 == *hash
            }
            _ => false,
        }
    }
}

/// The certificate's SPIFFE ID if it is a well-formed workload ID.
fn valid_spiffe_id(certificate: &super::CertificateIdentity) -> Option<&str> {
    let id = certificate.spiffe_id.as_deref()?;
    check_spiffe_id(id, false).ok().map(|()| id)
}

impl FromStr for CallerSelector {
    type Err = SelectorError;

    fn from_str(text: &str) -> Result<Self, SelectorError> {
        let fail = |why| SelectorError {
            text: text.to_string(),
            why,
        };
        let number = |digits: &str| {
            // u32::from_str takes a leading '+', which no id is written with.
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(fail("the id must be a decimal number"));
            }
            digits
                .parse()
                .map_err(|_| fail("the id does not fit in 32 bits"))
        };
        if let Some(digits) = text.strip_prefix("uid:") {
            return number(digits).map(CallerSelector::Uid);
        }
        if let Some(digits) = text.strip_prefix("gid:") {
            return number(digits).map(CallerSelector::Gid);
        }
        if text.starts_with("spiffe://") {
            return match text.strip_suffix("/*") {
                Some(base) => {
                    check_spiffe_id(base, true).map_err(fail)?;
                    Ok(CallerSelector::SpiffePrefix(format!("{base}/")))
                }
                None => {
                    check_spiffe_id(text, false).map_err(fail)?;
                    Ok(CallerSelector::SpiffeId(text.to_string()))
                }
            };
        }
        if let Some(name) = text.strip_prefix("dns:") {
            let ok = !name.is_empty()
                && name.len() <= 253
                && name.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                });
            if !ok {
                return Err(fail("not a DNS name (wildcards are not accepted)"));
            }
            return Ok(CallerSelector::Dns(name.to_ascii_lowercase()));
        }
        if let Some(hex) = text.strip_prefix("cert-sha256:") {
            return decode_sha256(hex)
                .map(CallerSelector::CertSha256)
                .ok_or_else(|| fail("the hash must be 64 hex digits"));
        }
        Err(fail("unknown form"))
    }
}

/// Checks a SPIFFE ID (the SPIFFE-ID standard, section 2): `spiffe://`, a trust domain of
/// lowercase letters, digits, `.`, `-` and `_`, then a path of non-empty segments of
/// letters, digits, `.`, `-` and `_` other than `.` and `..`. With `allow_bare`, the
/// trust domain alone is accepted (the base of `spiffe://TD/*`).
fn check_spiffe_id(id: &str, allow_bare: bool) -> Result<(), &'static str> {
    if id.len() > 2048 {
        return Err("a SPIFFE ID is at most 2048 bytes");
    }
    let rest = id.strip_prefix("spiffe://").ok_or("not a spiffe:// URI")?;
    let (domain, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if domain.is_empty()
        || !domain
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
    {
        return Err("the trust domain must be lowercase letters, digits, '.', '-' and '_'");
    }
    if path.is_empty() {
        return if allow_bare {
            Ok(())
        } else {
            Err("a workload SPIFFE ID has a path (use spiffe://TD/* for a whole trust domain)")
        };
    }
    for segment in path[1..].split('/') {
        if segment.is_empty() || segment == "." || segment == ".." {
            return Err("path segments must be non-empty and not '.' or '..'");
        }
        if !segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            return Err("path segments must be letters, digits, '.', '-' and '_'");
        }
    }
    Ok(())
}

fn decode_sha256(hex: &str) -> Option<[u8; 32]> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks(2).enumerate() {
        let digit = |c: u8| (c as char).to_digit(16);
        out[i] = u8::try_from(digit(pair[0])? * 16 + digit(pair[1])?).ok()?;
    }
    Some(out)
}

impl fmt::Display for CallerSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallerSelector::Uid(uid) => write!(f, "uid:{uid}"),
            CallerSelector::Gid(gid) => write!(f, "gid:{gid}"),
            CallerSelector::SpiffeId(id) => f.write_str(id),
            CallerSelector::SpiffePrefix(prefix) => write!(f, "{prefix}*"),
            CallerSelector::Dns(name) => write!(f, "dns:{name}"),
            CallerSelector::CertSha256(hash) => {
                f.write_str("cert-sha256:")?;
                hash.iter().try_for_each(|b| write!(f, "{b:02x}"))
            }
        }
    }
}

impl<'de> Deserialize<'de> for CallerSelector {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{CertificateIdentity, PeerCredentials};

    fn local(uid: u32, gid: u32) -> Principal {
        Principal::Local(PeerCredentials {
            uid,
            gid,
            pid: Some(1),
        })
    }

    fn remote(spiffe: Option<&str>, dns: &[&str], sha256: [u8; 32]) -> Principal {
        Principal::Remote {
            addr: None,
            certificate: CertificateIdentity {
                spiffe_id: spiffe.map(str::to_string),
                dns_names: dns.iter().map(|d| d.to_string()).collect(),
                sha256,
            },
        }
    }

    fn sel(text: &str) -> CallerSelector {
        text.parse().unwrap()
    }

    #[test]
    fn every_form_parses_and_prints_back() {
        let hash = format!("cert-sha256:{}", "ab".repeat(32));
        for text in [
            "uid:0",
            "uid:4294967295",
            "gid:50",
            "spiffe://example.org/ns/prod/sa/api",
            "spiffe://example.org/ns/prod/*",
            "spiffe://example.org/*",
            "dns:api.example.com",
            hash.as_str(),
        ] {
            assert_eq!(sel(text).to_string(), text);
        }
        assert_eq!(
            sel("dns:API.Example.com").to_string(),
            "dns:api.example.com"
        );
    }

    #[test]
    fn malformed_selectors_are_refused_with_the_forms() {
        for text in [
            "1000",
            "uid:",
            "uid:+5",
            "uid:-1",
            "uid:4294967296",
            "gid:x",
            "user:alice",
            "spiffe://",
            "spiffe://Example.org/a",
            "spiffe://example.org",
            "spiffe://example.org/",
            "spiffe://example.org/a//b",
            "spiffe://example.org/a/../b",
            "spiffe://example.org/a b",
            "spiffe://example.org/a/*/b",
            "dns:",
            "dns:*.example.com",
            "dns:a..b",
            "cert-sha256:abcd",
            "cert-sha256:zz",
        ] {
            let e = text.parse::<CallerSelector>().unwrap_err().to_string();
            assert!(
                e.contains("uid:1000") && e.contains("spiffe://"),
                "{text}: {e}"
            );
        }
    }

    #[test]
    fn uid_and_gid_match_local_peers_only() {
        assert!(sel("uid:1000").matches(&local(1000, 5)));
        assert!(!sel("uid:1000").matches(&local(1001, 1000)));
        assert!(sel("gid:5").matches(&local(1000, 5)));
        assert!(!sel("gid:5").matches(&local(5, 6)));
        assert!(!sel("uid:0").matches(&Principal::Anonymous(None)));
        assert!(!sel("uid:0").matches(&remote(None, &[], [0; 32])));
    }

    #[test]
    fn spiffe_selectors_match_exactly_or_under_a_path() {
        let api = remote(Some("spiffe://example.org/ns/prod/sa/api"), &[], [1; 32]);
        assert!(sel("spiffe://example.org/ns/prod/sa/api").matches(&api));
        assert!(!sel("spiffe://example.org/ns/prod/sa/ap").matches(&api));
        assert!(sel("spiffe://example.org/ns/prod/*").matches(&api));
        assert!(sel("spiffe://example.org/*").matches(&api));
        // A prefix ends at a segment boundary, and never matches its own base.
        assert!(!sel("spiffe://example.org/ns/pro/*").matches(&api));
        let base = remote(Some("spiffe://example.org/ns/prod/"), &[], [1; 32]);
        assert!(!sel("spiffe://example.org/ns/prod/*").matches(&base));
        assert!(!sel("spiffe://example.org.evil/*").matches(&api));
        assert!(!sel("spiffe://example.org/*").matches(&local(0, 0)));
        assert!(!sel("spiffe://example.org/*").matches(&remote(None, &["example.org"], [1; 32])));
    }

    #[test]
    fn malformed_spiffe_ids_in_certificates_match_nothing() {
        let prefix = sel("spiffe://example.org/ns/prod/*");
        for id in [
            "spiffe://example.org/ns/prod/../admin",
            "spiffe://example.org/ns/prod//x",
            "spiffe://example.org/ns/prod/./x",
            "spiffe://example.org/ns/prod/%2e%2e",
            "spiffe://example.org/ns/prod/x?y",
            "spiffe://example.org/ns/prod/x#y",
            "spiffe://example.org/ns/prod/x/",
            "spiffe://EXAMPLE.org/ns/prod/x",
        ] {
            let peer = remote(Some(id), &[], [1; 32]);
            assert!(!prefix.matches(&peer), "{id}");
            assert!(!sel("spiffe://example.org/*").matches(&peer), "{id}");
        }
        let exact = "spiffe://example.org/ns/prod/x/";
        assert!(exact.parse::<CallerSelector>().is_err());
    }

    #[test]
    fn dns_and_hash_selectors_match_certificates() {
        let peer = remote(None, &["api.example.com", "alt.example.com"], [7; 32]);
        assert!(sel("dns:ALT.example.com").matches(&peer));
        assert!(!sel("dns:example.com").matches(&peer));
        assert!(sel(&format!("cert-sha256:{}", "07".repeat(32))).matches(&peer));
        assert!(!sel(&format!("cert-sha256:{}", "08".repeat(32))).matches(&peer));
    }
}
