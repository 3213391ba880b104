//! signetd: a signing daemon that keeps token issuers' private keys inside a PKCS#11
//! token and mints short-lived JWTs under a per-issuer policy.
//!
//! # The rooms
//!
//! | module | owns |
//! |---|---|
//! | [`config`] | the TOML config (`deny_unknown_fields`), validation, reading the PIN into a secret |
//! | [`error`] | the domain [`error::Error`] with its stable codes |
//! | [`hsm`] | everything PKCS#11: module, token selection, login, the session pool, key generation, signing. The only importer of `cryptoki` |
//! | [`keys`] | the token as key database: inventory, generation, states, revocations; the in-memory registry; JWKs |
//! | [`attest`] | the attestation CA in the token, key certificates, the signetd extension, chain verification |
//! | [`ceremony`] | signed ceremony transcripts |
//! | [`token`] | JWS encoding, the claims policy, verification, the replay store |
//! | [`policy`] | who the caller is and what an issuer lets it do |
//! | [`service`] | the facade handlers call: mint, sign, [`service::verify`], [`service::admin`], and what each records in the audit log |
//! | [`audit`] | the hash-chained audit log: records, segments, the group-committing writer, checkpoints signed by the audit key, offline verification |
//! | [`lifecycle`] | the timer that activates, archives and rotates keys and re-reads the token |
//! | [`api`] | the axum router, handlers, every request/response/error body ([`api::wire`]), the HTTP-only refusals and the one error-to-HTTP mapping ([`api::error::ApiError`]), extractors, transports |
//! | [`daemon`] | the whole daemon as one future: HTTP and the lifecycle, until shutdown |
//! | [`client`] | the CLI's small HTTP client |
//!
//! # One request, end to end
//!
//! `POST /v1/tokens` on the Unix socket:
//!
//! 1. [`api::transport`] accepts the connection under a connection cap, asks the kernel
//!    for the peer's uid/gid/pid (`SO_PEERCRED`) and attaches an [`identity::Principal`] to every
//!    request on it. A TCP connection gets an anonymous caller.
//! 2. The router refuses anonymous callers on signing routes (401), then
//!    [`api::body::ApiJson`] parses the body (64 KiB cap, JSON only) into a
//!    [`token::MintRequest`].
//! 3. [`service::Service::mint`] finds the issuer, checks the caller against its policy
//!    ([`policy::Policy::decide`]), and builds the claims ([`token::claims::build`]): the daemon
//!    sets `iss`, `iat`, `exp`, `jti` and the header; the caller's TTL, audience and claims
//!    are checked against the issuer's limits.
//! 4. [`hsm::Hsm::sign`] hashes the signing input on the host (ES256) and hands one
//!    `C_Sign` on a handle resolved at start-up to a worker thread that owns a logged-in
//!    session; the handler awaits the reply.
//! 5. The service appends a `mint` record (caller, issuer, kid, jti, SHA-256 of the token)
//!    to the [`audit`] log and waits until the writer has fsynced it, together with
//!    whatever other records arrived meanwhile. If it cannot be written, the token is
//!    dropped and the request fails with `audit_unavailable`.
//! 6. The compact JWS goes back as an [`api::wire::MintedToken`]. Any error, from the
//!    service or from HTTP itself (a bad path, method, media type, size or body), becomes
//!    an [`api::error::ApiError`], the only place that knows HTTP statuses, and goes out
//!    as `{"error":{"code":"...","message":"..."}}`; the router's audit middleware
//!    records the refusal with its code.
//!
//! Public keys are published by [`keys::KeyRegistry`], rebuilt from the token at start-up
//! and at every [`lifecycle`] tick and swapped in atomically: the token is the only key
//! database. Every published key carries its [`attest`] chain in `x5c`.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod algorithm;
pub mod api;
pub mod attest;
pub mod audit;
pub mod ceremony;
pub mod client;
pub mod config;
pub mod daemon;
pub mod error;
pub mod hsm;
pub mod identity;
pub mod keys;
pub mod lifecycle;
pub mod policy;
pub mod service;
pub mod token;

pub use algorithm::Algorithm;
pub use config::Config;
pub use error::Error;
pub use service::Service;
