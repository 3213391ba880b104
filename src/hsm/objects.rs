//! Finding signetd's objects and reading their attributes (PKCS#11 §5.7).
//!
//! Searches happen at start-up, at lifecycle ticks and for operator commands; requests
//! use handles that [`super::handles`] keeps. Handles never leave `hsm`: what the rest of
//! signetd sees names a key by its `CKA_ID` ([`KeyPairInfo`]), and a data or certificate
//! object by its content ([`DataObject`], [`CertificateObject`]), which [`destroy_data`]
//! and [`destroy_certificate`] look up again in the token when they act.

use cryptoki::object::{
    Attribute, AttributeType, CertificateType, KeyType, ObjectClass, ObjectHandle,
};
use cryptoki::session::Session;

use super::HsmError;
use super::curve::{ED25519_PARAMS, EDWARDS25519_NAME, P256_PARAMS};
use crate::algorithm::Algorithm;

/// Security attributes of a private key as the token reports them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyAttributes {
    /// `CKA_SENSITIVE`.
    pub sensitive: bool,
    /// `CKA_ALWAYS_SENSITIVE`.
    pub always_sensitive: bool,
    /// `CKA_EXTRACTABLE`.
    pub extractable: bool,
    /// `CKA_NEVER_EXTRACTABLE`.
    pub never_extractable: bool,
    /// `CKA_LOCAL`: generated inside the token, not imported.
    pub local: bool,
}

impl KeyAttributes {
    /// True when the key was generated in the token and its value can never leave it.
    pub fn is_hardware_bound(&self) -> bool {
        self.sensitive
            && self.always_sensitive
            && !self.extractable
            && self.never_extractable
            && self.local
    }
}

/// A key pair found in (or just generated in) the token.
#[derive(Clone, Debug)]
pub struct KeyPairInfo {
    /// `CKA_ID`.
    pub id: Vec<u8>,
    /// `CKA_LABEL` of the private key.
    pub label: String,
    /// The algorithm the key's type and curve imply.
    pub algorithm: Algorithm,
    /// The public key: SEC1 uncompressed point (P-256) or the 32 raw bytes (Ed25519).
    pub public_key: Vec<u8>,
    /// What the token reports about the private key.
    pub attributes: KeyAttributes,
}

/// Handles of the two halves of a key pair. Private to `hsm`: handles can go stale (a
/// token removed and re-inserted), so only this room holds them, and looks them up again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct KeyObjects {
    pub(crate) private: ObjectHandle,
    pub(crate) public: ObjectHandle,
}

/// A key pair as a search found it: what it is, and its handles.
pub(crate) type FoundPair = (KeyPairInfo, KeyObjects);

/// A `CKO_DATA` object of one application, as the token holds it. Its label and exact
/// value (with the application) are what names it to [`super::Hsm::destroy_data`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataObject {
    /// `CKA_LABEL`.
    pub label: String,
    /// `CKA_VALUE`.
    pub value: Vec<u8>,
}

/// A signetd key whose objects could not be read; reported, never skipped silently.
#[derive(Debug)]
pub struct UnreadableKey {
    /// `CKA_LABEL` of the private key.
    pub label: String,
    /// Why it could not be read.
    pub error: HsmError,
}

/// An X.509 `CKO_CERTIFICATE` object, as the token holds it. Its id, label and value are
/// what names it to [`super::Hsm::destroy_certificate`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateObject {
    /// `CKA_LABEL`.
    pub label: String,
    /// `CKA_ID`.
    pub id: Vec<u8>,
    /// `CKA_VALUE`: the DER certificate.
    pub value: Vec<u8>,
}

/// Every private key whose label starts with `label_prefix`, with its public half.
///
/// A private key without a readable public half is returned as an [`UnreadableKey`] rather
/// than skipped, so the caller can report it.
pub(crate) fn key_pairs(
    session: &Session,
    label_prefix: &str,
) -> Result<Vec<Result<FoundPair, UnreadableKey>>, HsmError> {
    // Only private objects: anyone with a public session could plant public ones.
    let privates = session.find_objects(&[
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::Token(true),
        Attribute::Private(true),
    ])?;
    let mut found = Vec::new();
    for private in privates {
        let Some(attributes) =
            unless_vanished(session.get_attributes(private, &[AttributeType::Label]))?
        else {
            continue;
        };
        let label = match attributes.into_iter().next() {
            Some(Attribute::Label(bytes)) => String::from_utf8_lossy(&bytes).into_owned(),
            _ => continue,
        };
        if !label.starts_with(label_prefix) {
            continue;
        }
        let entry = find_public(session, private).and_then(|public| {
            let objects = KeyObjects { private, public };
            describe_pair(session, objects).map(|info| (info, objects))
        });
        match entry {
            Ok(pair) => found.push(Ok(pair)),
            // Deleted since the search (by another process): gone, not unreadable.
            Err(error) if error.stale_handle() => {}
            Err(error) => found.push(Err(UnreadableKey { label, error })),
        }
    }
    Ok(found)
}

fn find_public(session: &Session, private: ObjectHandle) -> Result<ObjectHandle, HsmError> {
    let id = read_bytes(session, private, AttributeType::Id)?;
    let mut publics =
        session.find_objects(&[Attribute::Class(ObjectClass::PUBLIC_KEY), Attribute::Id(id)])?;
    match publics.len() {
        1 => Ok(publics.remove(0)),
        0 => Err(HsmError::Malformed(
            "the public half of the key pair is missing".to_string(),
        )),
        n => Err(HsmError::Malformed(format!(
            "{n} public keys share this CKA_ID"
        ))),
    }
}

/// Reads identity, algorithm, public key and security attributes of a key pair.
pub(crate) fn describe_pair(
    session: &Session,
    objects: KeyObjects,
) -> Result<KeyPairInfo, HsmError> {
    let private_attrs = session.get_attributes(
        objects.private,
        &[
            AttributeType::Id,
            AttributeType::Label,
            AttributeType::KeyType,
            AttributeType::Sensitive,
            AttributeType::AlwaysSensitive,
            AttributeType::Extractable,
            AttributeType::NeverExtractable,
            AttributeType::Local,
        ],
    )?;
    let (mut id, mut label, mut key_type) = (None, None, None);
    let mut attributes = KeyAttributes {
        sensitive: false,
        always_sensitive: false,
        extractable: true,
        never_extractable: false,
        local: false,
    };
    for attribute in private_attrs {
        match attribute {
            Attribute::Id(v) => id = Some(v),
            Attribute::Label(v) => label = Some(String::from_utf8_lossy(&v).into_owned()),
            Attribute::KeyType(t) => key_type = Some(t),
            Attribute::Sensitive(b) => attributes.sensitive = b,
            Attribute::AlwaysSensitive(b) => attributes.always_sensitive = b,
            Attribute::Extractable(b) => attributes.extractable = b,
            Attribute::NeverExtractable(b) => attributes.never_extractable = b,
            Attribute::Local(b) => attributes.local = b,
            _ => {}
        }
    }
    let public_attrs = session.get_attributes(
        objects.public,
        &[AttributeType::EcParams, AttributeType::EcPoint],
    )?;
    let (mut params, mut point) = (None, None);
    for attribute in public_attrs {
        match attribute {
            Attribute::EcParams(v) => params = Some(v),
            Attribute::EcPoint(v) => point = Some(v),
            _ => {}
        }
    }
    let missing = |what: &str| HsmError::Malformed(format!("the key has no readable {what}"));
    let key_type = key_type.ok_or_else(|| missing("CKA_KEY_TYPE"))?;
    let params = params.ok_or_else(|| missing("CKA_EC_PARAMS"))?;
    let point = point.ok_or_else(|| missing("CKA_EC_POINT"))?;
    let algorithm = if key_type == KeyType::EC && params == P256_PARAMS {
        Algorithm::Es256
    } else if key_type == KeyType::EC_EDWARDS
        && (params == ED25519_PARAMS || params == EDWARDS25519_NAME)
    {
        Algorithm::EdDsa
    } else {
        return Err(HsmError::Unsupported(format!(
            "key type {key_type} with EC parameters {params:02x?}"
        )));
    };
    Ok(KeyPairInfo {
        id: id.ok_or_else(|| missing("CKA_ID"))?,
        label: label.ok_or_else(|| missing("CKA_LABEL"))?,
        public_key: decode_point(algorithm, &point)?,
        algorithm,
        attributes,
    })
}

/// An attribute read of an object a search just returned, or `None` if the object has
/// been destroyed since (another process changed the token): a scan skips it rather than
/// failing as a whole.
fn unless_vanished(
    read: Result<Vec<Attribute>, cryptoki::error::Error>,
) -> Result<Option<Vec<Attribute>>, HsmError> {
    match read.map_err(HsmError::from) {
        Ok(attributes) => Ok(Some(attributes)),
        Err(e) if e.stale_handle() => Ok(None),
        Err(e) => Err(e),
    }
}

/// `CKA_EC_POINT` is a DER OCTET STRING by the standard, but some tokens return the bare
/// point; accept both and check the length the algorithm requires.
fn decode_point(algorithm: Algorithm, point: &[u8]) -> Result<Vec<u8>, HsmError> {
    let want = match algorithm {
        Algorithm::Es256 => 65,
        Algorithm::EdDsa => 32,
    };
    let bare = match point {
        [0x04, len, rest @ ..] if usize::from(*len) == want && rest.len() == want => rest,
        _ if point.len() == want => point,
        _ => {
            return Err(HsmError::Malformed(format!(
                "CKA_EC_POINT of {} bytes for {algorithm}",
                point.len()
            )));
        }
    };
    if algorithm == Algorithm::Es256 && bare[0] != 0x04 {
        return Err(HsmError::Malformed(
            "P-256 public key is not an uncompressed point".to_string(),
        ));
    }
    Ok(bare.to_vec())
}

fn read_bytes(
    session: &Session,
    object: ObjectHandle,
    kind: AttributeType,
) -> Result<Vec<u8>, HsmError> {
    match session.get_attributes(object, &[kind])?.pop() {
        Some(Attribute::Id(v) | Attribute::Label(v) | Attribute::Value(v)) => Ok(v),
        _ => Err(HsmError::Malformed(format!(
            "object has no readable {kind}"
        ))),
    }
}

/// Creates a private, modifiable token data object of `application`.
pub(crate) fn create_data(
    session: &Session,
    application: &str,
    label: &str,
    value: &[u8],
) -> Result<(), HsmError> {
    session.create_object(&[
        Attribute::Class(ObjectClass::DATA),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Modifiable(true),
        Attribute::Application(application.as_bytes().to_vec()),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Value(value.to_vec()),
    ])?;
    Ok(())
}

/// Every data object of `application`.
pub(crate) fn data_objects(
    session: &Session,
    application: &str,
) -> Result<Vec<DataObject>, HsmError> {
    let handles = session.find_objects(&[
        Attribute::Class(ObjectClass::DATA),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Application(application.as_bytes().to_vec()),
    ])?;
    let mut found = Vec::with_capacity(handles.len());
    for handle in handles {
        let mut label = None;
        let mut value = None;
        let read = session.get_attributes(handle, &[AttributeType::Label, AttributeType::Value]);
        let Some(attributes) = unless_vanished(read)? else {
            continue;
        };
        for attribute in attributes {
            match attribute {
                Attribute::Label(v) => label = Some(String::from_utf8_lossy(&v).into_owned()),
                Attribute::Value(v) => value = Some(v),
                _ => {}
            }
        }
        found.push(DataObject {
            label: label.unwrap_or_default(),
            value: value.unwrap_or_default(),
        });
    }
    Ok(found)
}

/// A session copy of the private key `token` (`C_CopyObject` with `CKA_TOKEN=false`;
/// see [`super::session_copies`]).
pub(crate) fn session_copy(
    session: &Session,
    token: ObjectHandle,
) -> Result<ObjectHandle, HsmError> {
    Ok(session.copy_object(token, &[Attribute::Token(false)])?)
}

/// The key pair whose private half is a private token object with `CKA_ID` = `id`.
pub(crate) fn key_pair_by_id(
    session: &Session,
    id: &[u8],
) -> Result<Option<(KeyPairInfo, KeyObjects)>, HsmError> {
    let privates = session.find_objects(&[
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Id(id.to_vec()),
    ])?;
    match privates.as_slice() {
        [] => Ok(None),
        [private] => {
            let objects = KeyObjects {
                private: *private,
                public: find_public(session, *private)?,
            };
            describe_pair(session, objects).map(|info| Some((info, objects)))
        }
        more => Err(HsmError::Malformed(format!(
            "{} private keys share one CKA_ID",
            more.len()
        ))),
    }
}

/// Creates a private X.509 certificate token object.
///
/// Certificates are public data, but a private object can only be created by the logged-in
/// user: no one with a public session can plant one beside a key.
pub(crate) fn create_certificate(
    session: &Session,
    id: &[u8],
    label: &str,
    subject_der: &[u8],
    value: &[u8],
) -> Result<(), HsmError> {
    session.create_object(&[
        Attribute::Class(ObjectClass::CERTIFICATE),
        Attribute::CertificateType(CertificateType::X_509),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Modifiable(false),
        Attribute::Id(id.to_vec()),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Subject(subject_der.to_vec()),
        Attribute::Value(value.to_vec()),
    ])?;
    Ok(())
}

/// Every private X.509 certificate object whose label starts with `label_prefix`.
pub(crate) fn certificates(
    session: &Session,
    label_prefix: &str,
) -> Result<Vec<CertificateObject>, HsmError> {
    let handles = session.find_objects(&[
        Attribute::Class(ObjectClass::CERTIFICATE),
        Attribute::Token(true),
        Attribute::Private(true),
    ])?;
    let mut found = Vec::new();
    for handle in handles {
        let (mut label, mut id, mut value) = (String::new(), Vec::new(), Vec::new());
        let wanted = [
            AttributeType::Label,
            AttributeType::Id,
            AttributeType::Value,
        ];
        let Some(attributes) = unless_vanished(session.get_attributes(handle, &wanted))? else {
            continue;
        };
        for attribute in attributes {
            match attribute {
                Attribute::Label(v) => label = String::from_utf8_lossy(&v).into_owned(),
                Attribute::Id(v) => id = v,
                Attribute::Value(v) => value = v,
                _ => {}
            }
        }
        if label.starts_with(label_prefix) {
            found.push(CertificateObject { label, id, value });
        }
    }
    Ok(found)
}

/// Destroys one private data object of `application` with exactly this label and value,
/// found now; returns whether there was one.
///
/// The value is part of the search, so a state change (new record written, old one
/// destroyed) never touches the record just written under the same label. Objects that
/// match exactly are indistinguishable copies; one call destroys one of them.
pub(crate) fn destroy_data(
    session: &Session,
    application: &str,
    label: &str,
    value: &[u8],
) -> Result<bool, HsmError> {
    let found = session.find_objects(&[
        Attribute::Class(ObjectClass::DATA),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Application(application.as_bytes().to_vec()),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Value(value.to_vec()),
    ])?;
    destroy_one(session, found)
}

/// Destroys one private certificate object with exactly this `CKA_ID`, label and value
/// (any object [`certificates`] lists), found now; returns whether there was one. As for
/// [`destroy_data`], exact copies are indistinguishable and one call destroys one.
pub(crate) fn destroy_certificate(
    session: &Session,
    id: &[u8],
    label: &str,
    value: &[u8],
) -> Result<bool, HsmError> {
    let found = session.find_objects(&[
        Attribute::Class(ObjectClass::CERTIFICATE),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Id(id.to_vec()),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Value(value.to_vec()),
    ])?;
    destroy_one(session, found)
}

fn destroy_one(session: &Session, found: Vec<ObjectHandle>) -> Result<bool, HsmError> {
    match found.first() {
        Some(&handle) => {
            session.destroy_object(handle)?;
            Ok(true)
        }
        None => Ok(false),
    }
}
