//! Verifying attestation chains: each check is named, so a verdict says exactly what
//! failed. Signatures are checked for ECDSA P-256 with SHA-256, the algorithm of
//! signetd's CA; a chain through a CA of another algorithm fails with a clear message.

use std::time::SystemTime;

use der::Decode;
use der::asn1::ObjectIdentifier;
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage, KeyUsages};

use super::certificate::{Certificate, Oid};
use super::extension::{self, CKK_EC, CKK_EC_EDWARDS, ID_ED25519, KeyAttestation, PRIME256V1};
use super::profile::{ECDSA_WITH_SHA256, ID_EC_PUBLIC_KEY};
use crate::keys::Jwk;
use crate::util::b64;

/// One named check and its outcome.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Check {
    /// What was checked.
    pub name: String,
    /// Whether it passed.
    pub ok: bool,
    /// Why it failed, or what was found.
    pub detail: String,
}

/// The outcome of verifying an attestation.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Verdict {
    /// Every check, in order.
    pub checks: Vec<Check>,
    /// The signetd extension, when it decoded.
    #[serde(skip)]
    pub attestation: Option<KeyAttestation>,
}

impl Verdict {
    /// True when every check passed.
    pub fn ok(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.ok)
    }

    fn check(&mut self, name: &str, result: Result<String, String>) -> bool {
        let ok = result.is_ok();
        let detail = result.unwrap_or_else(|e| e);
        self.checks.push(Check {
            name: name.to_string(),
            ok,
            detail,
        });
        ok
    }

    /// The first failure, if any.
    pub fn first_failure(&self) -> Option<&Check> {
        self.checks.iter().find(|c| !c.ok)
    }
}

/// Parses a DER certificate.
pub fn parse(der: &[u8]) -> Result<Certificate, String> {
    Certificate::from_der(der).map_err(|e| format!("not a DER X.509 certificate: {e}"))
}

fn name_der(name: &x509_cert::name::Name) -> Vec<u8> {
    der::Encode::to_der(name).unwrap_or_default()
}

/// Checks that `issuer` signed `cert`.
pub fn verify_signature(cert: &Certificate, issuer: &Certificate) -> Result<(), String> {
    use p256::ecdsa::signature::Verifier;
    if cert.signature_algorithm.oid != ECDSA_WITH_SHA256 {
        return Err(format!(
            "signature algorithm {} is not supported (only ecdsa-with-SHA256)",
            cert.signature_algorithm.oid
        ));
    }
    let spki = &issuer.tbs_certificate.subject_public_key_info;
    let p256_params = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
    if spki.algorithm.oid != ID_EC_PUBLIC_KEY || p256_params != Some(PRIME256V1) {
        return Err("the issuer's key is not a P-256 key".to_string());
    }
    let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(spki.subject_public_key.raw_bytes())
        .map_err(|_| "the issuer's public key is invalid".to_string())?;
    let signature = p256::ecdsa::Signature::from_der(cert.signature.raw_bytes())
        .map_err(|_| "the signature is not a DER ECDSA signature".to_string())?;
    let tbs = der::Encode::to_der(&cert.tbs_certificate).map_err(|e| e.to_string())?;
    key.verify(&tbs, &signature)
        .map_err(|_| "the signature does not verify".to_string())
}

fn subject_cn(cert: &Certificate) -> String {
    cert.tbs_certificate.subject.to_string()
}

/// Whether `cert` is an attestation CA certificate: cA, allowed to sign certificates and
/// other data (keyCertSign and digitalSignature), and not a key certificate (no signetd
/// key attestation extension). Only such a certificate may sign ceremony transcripts.
pub fn is_attestation_ca(cert: &Certificate) -> bool {
    let ca = basic_constraints(cert).is_some_and(|(_, b)| b.ca);
    let usage = key_usage(cert).is_some_and(|(_, k)| {
        k.0.contains(KeyUsages::KeyCertSign) && k.0.contains(KeyUsages::DigitalSignature)
    });
    ca && usage && cert.tbs_certificate.extension(&extension::oid()).is_none()
}

fn basic_constraints(cert: &Certificate) -> Option<(bool, BasicConstraints)> {
    let e = cert
        .tbs_certificate
        .extension(&Oid::of(<BasicConstraints as der::oid::AssociatedOid>::OID))?;
    BasicConstraints::from_der(e.extn_value.as_bytes())
        .ok()
        .map(|b| (e.critical, b))
}

fn key_usage(cert: &Certificate) -> Option<(bool, KeyUsage)> {
    let e = cert
        .tbs_certificate
        .extension(&Oid::of(<KeyUsage as der::oid::AssociatedOid>::OID))?;
    KeyUsage::from_der(e.extn_value.as_bytes())
        .ok()
        .map(|k| (e.critical, k))
}

/// Verifies a chain (key certificate first) up to `root`, as of `at`. Returns the
/// verdict with every chain check; callers add key-specific checks.
pub fn verify_chain(
    chain: &[Vec<u8>],
    root_der: &[u8],
    at: SystemTime,
) -> (Verdict, Vec<Certificate>) {
    let mut verdict = Verdict::default();
    let parsed: Result<Vec<Certificate>, String> = chain.iter().map(|d| parse(d)).collect();
    let root = parse(root_der);
    let (certs, root) = match (parsed, root) {
        (Ok(certs), Ok(root)) if !certs.is_empty() => {
            verdict.check(
                "certificates parse",
                Ok(format!("{} in the chain, plus the root", certs.len())),
            );
            (certs, root)
        }
        (Ok(_), Ok(_)) => {
            verdict.check("certificates parse", Err("the chain is empty".to_string()));
            return (verdict, Vec::new());
        }
        (Err(e), _) => {
            verdict.check("certificates parse", Err(format!("chain: {e}")));
            return (verdict, Vec::new());
        }
        (_, Err(e)) => {
            verdict.check("certificates parse", Err(format!("root: {e}")));
            return (verdict, Vec::new());
        }
    };
    for (i, pair) in certs.windows(2).enumerate() {
        let (cert, issuer) = (&pair[0], &pair[1]);
        let linked = if name_der(&cert.tbs_certificate.issuer)
            != name_der(&issuer.tbs_certificate.subject)
        {
            Err(format!(
                "certificate {i}'s issuer is not certificate {}'s subject",
                i + 1
            ))
        } else {
            verify_signature(cert, issuer)
                .map(|()| format!("{} signed {}", subject_cn(issuer), subject_cn(cert)))
        };
        verdict.check(
            &format!("link {i} -> {}", i + 1),
            linked.map_err(|e| format!("certificate {i}: {e}")),
        );
    }
    let last = certs.last().expect("non-empty");
    let anchored = if chain.last().map(Vec::as_slice) == Some(root_der) {
        Ok("the chain ends with the trusted root".to_string())
    } else if name_der(&last.tbs_certificate.issuer) != name_der(&root.tbs_certificate.subject) {
        Err(format!(
            "the chain does not lead to the trusted root: the last certificate was issued by {}, the root is {}",
            last.tbs_certificate.issuer, root.tbs_certificate.subject
        ))
    } else {
        verify_signature(last, &root)
            .map(|()| format!("{} signed {}", subject_cn(&root), subject_cn(last)))
    };
    verdict.check("anchored at the trusted root", anchored);

    let mut cas: Vec<&Certificate> = certs.iter().skip(1).collect();
    if chain.last().map(Vec::as_slice) != Some(root_der) {
        cas.push(&root);
    }
    let can_issue = cas.iter().try_for_each(|ca| {
        let bc = basic_constraints(ca).map(|(_, b)| b.ca).unwrap_or(false);
        let ku = key_usage(ca).is_some_and(|(_, k)| k.0.contains(KeyUsages::KeyCertSign));
        if bc && ku {
            Ok(())
        } else {
            Err(format!(
                "{} is not a CA certificate (basicConstraints cA and keyCertSign)",
                subject_cn(ca)
            ))
        }
    });
    verdict.check(
        "issuers are CA certificates",
        can_issue.map(|()| {
            format!(
                "{} issuing certificate(s) with cA and keyCertSign",
                cas.len()
            )
        }),
    );
    let mut all: Vec<&Certificate> = certs.iter().collect();
    all.push(&root);
    let valid = all.iter().try_for_each(|c| {
        let v = &c.tbs_certificate.validity;
        if at < v.not_before.to_system_time() || at > v.not_after.to_system_time() {
            Err(format!(
                "{} is valid from {} to {}, not at the time checked",
                subject_cn(c),
                v.not_before,
                v.not_after
            ))
        } else {
            Ok(())
        }
    });
    verdict.check(
        "validity",
        valid.map(|()| "every certificate is valid at the time checked".to_string()),
    );
    (verdict, certs)
}

/// Verifies a key's attestation: the chain, the key certificate's profile, the signetd
/// extension, and, when given, that the certificate's key is the JWK's and its kid.
pub fn verify_key_attestation(
    chain: &[Vec<u8>],
    root_der: &[u8],
    jwk: Option<&Jwk>,
    at: SystemTime,
) -> Verdict {
    let (mut verdict, certs) = verify_chain(chain, root_der, at);
    let Some(leaf) = certs.first() else {
        return verdict;
    };
    let profile = match (basic_constraints(leaf), key_usage(leaf)) {
        (Some((_, bc)), Some((true, ku)))
            if !bc.ca && ku.0.contains(KeyUsages::DigitalSignature) =>
        {
            Ok("end-entity, digitalSignature (critical)".to_string())
        }
        _ => Err(
            "the key certificate must be CA:false with a critical digitalSignature key usage"
                .to_string(),
        ),
    };
    verdict.check("key certificate profile", profile);

    let attestation = leaf
        .tbs_certificate
        .extension(&extension::oid())
        .ok_or_else(|| "the signetd attestation extension is missing".to_string())
        .and_then(|e| {
            KeyAttestation::from_der(e.extn_value.as_bytes())
                .map_err(|e| format!("the extension does not decode: {e}"))
        });
    let spki = &leaf.tbs_certificate.subject_public_key_info;
    let decoded = attestation.as_ref().map_err(Clone::clone).and_then(|a| {
        if a.version != 1 {
            return Err(format!("unknown extension version {}", a.version));
        }
        if !a.is_hardware_bound() {
            return Err(format!(
                "the token reported a key that could leave it: {:?}",
                a.key_attributes
            ));
        }
        let matches_key = match (a.key_type, a.curve) {
            (CKK_EC, c) if c == PRIME256V1 => spki.algorithm.oid == ID_EC_PUBLIC_KEY,
            (CKK_EC_EDWARDS, c) if c == ID_ED25519 => spki.algorithm.oid == ID_ED25519,
            _ => false,
        };
        if !matches_key {
            return Err(
                "the extension's key type and curve do not match the certificate's key".to_string(),
            );
        }
        Ok(format!(
            "{:?} proof; local, never extractable, always sensitive; token {} {} serial {}",
            a.proof_level, a.token.manufacturer, a.token.model, a.token.serial_number
        ))
    });
    verdict.check("signetd attestation extension", decoded);

    if let Some(jwk) = jwk {
        let cert_key = leaf.public_key();
        let jwk_key = match (jwk.kty.as_str(), jwk.y.as_deref()) {
            ("EC", Some(y)) => [
                vec![0x04],
                crate::util::unb64(&jwk.x).unwrap_or_default(),
                crate::util::unb64(y).unwrap_or_default(),
            ]
            .concat(),
            _ => crate::util::unb64(&jwk.x).unwrap_or_default(),
        };
        let same_key = if cert_key == jwk_key.as_slice() {
            Ok("the certificate certifies the JWK's key".to_string())
        } else {
            Err("the JWK's key differs from the certificate's key".to_string())
        };
        verdict.check("certificate key equals the JWK", same_key);
        let kid_ok = match &attestation {
            Ok(a) if a.key_id.as_bytes() == jwk.kid.as_bytes() => Ok(format!("kid {}", jwk.kid)),
            Ok(_) => Err(format!(
                "the certificate attests a different key id than kid {}",
                jwk.kid
            )),
            Err(_) => Err("no extension to compare the kid with".to_string()),
        };
        verdict.check("key id equals the JWK's kid", kid_ok);
        if let Some(x5t) = &jwk.x5t_s256 {
            let ok = *x5t == b64(super::profile::thumbprint(&chain[0]));
            verdict.check(
                "x5t#S256 matches the key certificate",
                if ok {
                    Ok("the JWK's thumbprint is its certificate's".to_string())
                } else {
                    Err("x5t#S256 does not match x5c[0]".to_string())
                },
            );
        }
    }
    verdict.attestation = attestation.ok();
    verdict
}
