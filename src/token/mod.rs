//! JWS/JWT: the compact encoding, the claims policy of an issuer, and verification.
//!
//! [`claims::build`] turns a caller's request into a claims set under the issuer's policy;
//! [`jws`] assembles the signing input and the compact token around a signature made
//! elsewhere (the token never sees claims, only bytes to sign). [`profile`] says what
//! `typ` each issuer's tokens carry and what its profile (plain JWT, RFC 9068 access
//! token, SPIFFE JWT-SVID, custom) asks of them; [`spiffe`] parses SPIFFE IDs.

pub mod claims;
pub mod jws;
pub mod profile;
pub mod spiffe;
pub mod verify;

pub use claims::{Audience, ClaimsSet, MintRequest};

/// Clock skew verifiers accept on `exp`, `nbf` and `iat`; revocations are kept this much
/// past a token's `exp` for the same reason.
pub const VERIFY_LEEWAY_SECONDS: u64 = 5;

/// No issuer may mint tokens that live longer than this, whatever its config says.
pub const HARD_MAX_TTL_SECONDS: u64 = 3600;

/// Registered claims a caller may not put in `claims`: the daemon sets `iss`, `iat`,
/// `exp` and `jti`; `sub` and `aud` have their own request fields; `nbf` is reserved so a
/// caller cannot post-date a token past the lifetime cap.
pub const RESERVED_CLAIMS: &[&str] = &["iss", "sub", "aud", "exp", "nbf", "iat", "jti"];
