//! The attestation room: proof that each key was generated inside the token and can
//! never leave it, as X.509 certificates chained to the operator's attestation root.
//!
//! [`ca`] keeps the attestation CA in the token and issues key certificates;
//! [`profile`] says what goes into each certificate; [`extension`] is the signetd
//! extension carrying what the token reported about a key; [`verify`] checks chains
//! and attestations for `signetd attest verify`, chain imports and tests; [`signed`]
//! is the JWS with an `x5c` chain that transcripts and audit checkpoints use;
//! [`certificate`] holds the DER structures. The ASN.1 module is in `docs/attestation.md`.

pub mod ca;
pub mod certificate;
pub mod extension;
pub mod profile;
pub mod signed;
pub mod verify;

pub use ca::{AttestError, AttestationCa, CaState};
pub use extension::{KeyAttestation, ProofLevel};
pub use verify::Verdict;
