//! The `CKA_EC_PARAMS` values of the curves signetd uses, shared by key generation and
//! by reading keys back.

/// DER of the named curve OID prime256v1 (1.2.840.10045.3.1.7), the `CKA_EC_PARAMS` of P-256.
pub(crate) const P256_PARAMS: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// DER of the OID id-Ed25519 (1.3.101.112), the `CKA_EC_PARAMS` of Ed25519 keys.
pub(crate) const ED25519_PARAMS: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];
/// DER PrintableString "edwards25519", how PKCS#11 v3.0 tokens may name the same curve.
pub(crate) const EDWARDS25519_NAME: &[u8] = b"\x13\x0cedwards25519";
