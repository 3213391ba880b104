//! signetd: a signing daemon that keeps token issuers' private keys inside a PKCS#11
//! token and mints short-lived JWTs under a per-issuer policy.
//!
//! # The rooms
//!
//! Roughly from the bottom of the tree up. (Outside the crate, the workspace member
//! `fault-pkcs11` is a PKCS#11 module for tests that forwards to SoftHSM2 and injects
//! faults on command.) No module imports a module that imports it:
//! `cargo test --test modules` checks this file by file (see `docs/design-notes.md`).
//!
//! | module | owns |
//! |---|---|
//! | [`util`] | hex, base64url, the clock, boxed futures: helpers that import nothing of signetd |
//! | [`algorithm`] | the signature algorithms and their JWS names (`EdDSA` or RFC 9864 `Ed25519`), and [`algorithm::KeyPurpose`] (what a key signs) |
//! | [`signer`] | the signer port: [`signer::Signer`] signs by key id; [`signer::SignInput`], [`signer::SignError`] |
//! | [`hsm`] | everything PKCS#11: module, token selection, login, the session pool with its bounded queue (`overloaded` past it), key generation, objects, each worker session's copies of the keys it signs with (`hsm::session_copies`), and the [`signer::Signer`] implementation; recovery by error class (`hsm::recovery`): a lost session is reopened and a repeatable operation retried once, a device or token error is an outage during which requests are refused while a background task re-initializes the library and finds the token and its keys again, reported through [`hsm::Hsm::health`]. The only importer of `cryptoki`; no object handle leaves it |
//! | [`identity`] | who is calling: [`identity::Principal`], built by the transports (peer credentials, or [`identity::CertificateIdentity::from_der`] for a verified client certificate), and the [`identity::CallerSelector`]s a config names principals with |
//! | [`config`] | the TOML config (`deny_unknown_fields`), validation, reading the PIN into a secret, the `[tls]`, `[limits]` and `[cors]` tables (rates as `"N/s"`), each issuer's `profile`, and who may own and write the files it trusts (`config::files`: config, PIN, TLS key) |
//! | [`policy`] | one decision, [`policy::Policy::decide`]: may this principal take this action; and [`policy::Policy::names`]: does any list name it |
//! | [`store`] | state behind ports: the replay store (a first use decided at once, made durable while its audit record is: on SQLite one shared WAL sync, [`store::Durable`]), the revocation store, key metadata ([`store::KeyMetadata`]: key records, state history, certificates, the CA chain), the lifecycle lease replicas take turns by ([`store::LeaseStore`]) and the changes they push to each other ([`store::ChangeFeed`], PostgreSQL `LISTEN/NOTIFY`); the daemon's implementation is an SQL database, SQLite by default or PostgreSQL, through one pool and one set of statements (docs/state.md), which also imports what earlier versions kept as token objects |
//! | [`telemetry`] | Prometheus metrics: every family's name, labels and recording function (no-ops until the daemon installs the process's recorder), and the text `GET /metrics` serves (docs/metrics.md); imports nothing of signetd |
//! | [`keys`] | keys: key pairs in the token, everything else about them in the state store; inventory (the two matched by `CKA_ID`, disagreements reported), generation, states; the in-memory registry, built from the last good view, and the revoked tokens' view ([`keys::RevokedTokens`]: one insert per revocation, incremental reads of the store) ([`keys::carry`] merges each reading, so a failed or empty reading never unpublishes keys, and a key gone from the token stays published until its tokens expire); JWKs, and each key parsed once for verifying ([`keys::VerifyingKey`]) |
//! | [`attest`] | the attestation CA (its key in the token, its chain in the state store), key certificates, the signetd extension, chain verification |
//! | [`token`] | JWS encoding, the claims policy, verification; each issuer's JWT profile ([`token::profile`]: `jwt`, RFC 9068 `at+jwt`, SPIFFE `jwt-svid`, custom `typ`) and SPIFFE IDs ([`token::spiffe`]) |
//! | [`error`] | the domain [`error::Error`] with its stable codes |
//! | [`audit`] | the hash-chained audit log behind the [`audit::AuditSink`] port: records, segments, the group-committing writer in parts, checkpoints signed by the audit key, offline verification; a transparency log too: [`audit::tree`] the RFC 6962 Merkle tree over the records (and `tree.hashes`, rebuilt from the segments at start), [`audit::note`] checkpoints as C2SP signed notes, [`audit::tiles`] the tree as C2SP tlog-tiles; [`audit::aggregate`] folds refusals of callers no policy names into one record per caller and interval, [`audit::reserve`] keeps refusal records out of the free space signing needs, and [`audit::ReopeningLog`] retries a log that could not be opened at start |
//! | [`ceremony`] | signed ceremony transcripts |
//! | [`service`] | the facade handlers call: mint, sign, [`service::verify`], [`service::admin`], a `jwt-svid` issuer's SPIFFE bundle ([`service::spiffe`]), the audit log's checkpoint and tiles ([`service::transparency`]), what each records in the audit log (refusals one by one for named callers, counted per interval for others); the rate limits per principal and issuer ([`service::limits`]); `service::publishing`: reloads through the merge, `key_missing` reports, and what `/readyz` checks (can sign now); [`service::leases`]: the lifecycle lease among replicas; [`service::follow`]: reload on a change pushed by the store; [`service::rollback`]: state that went backwards (a store restored from an older backup) set right from the audit log before it is served: key states moved forward (at every reload too), token revocations and single uses put back, and revocations the log lacks (made while no daemon ran) recorded at start; [`service::settings`]: the config with the policy and rate limits built from it, swapped whole by a reload (SIGHUP; [`config::reload`] says what may change without a restart) and taken once per request; [`service::wiring`] builds its ports from the config |
//! | [`lifecycle`] | the timer that activates, archives and rotates keys (under the lifecycle lease when replicas share the store) and rebuilds the registry |
//! | [`api`] | the axum router built from one route table ([`api::routes`]), handlers, every request/response/error body ([`api::wire`]), the OpenAPI 3.1 document generated from both ([`api::openapi`]), the HTTP-only refusals and the one error-to-HTTP mapping ([`api::error::ApiError`]), extractors; CORS on the public documents only ([`api::cors`]); transports: the Unix socket (`SO_PEERCRED`), TLS (rustls, client certificates, CRL, reload) and loopback-only plain HTTP; [`api::front`]: the one layer every request passes (its [`api::request_id`], the `X-Request-Id` of every response and the `request` span around every log line of it; its count; CORS); [`api::gate`]: the one route layer per group of routes (refusal audit, deadline, the policy's first check, declared length); [`api::limits`]: connection slots per principal, head and idle limits; [`api::metrics`]: `GET /metrics`, the request counter, the `[metrics] listen` router; [`api::audit_log`]: the audit log's checkpoint, verifier key and tiles |
//! | [`daemon`] | the whole daemon as one future: HTTP and the lifecycle until shutdown, and an audit record for each change of the token's health (`hsm_outage`, `hsm_recovered`) |
//! | [`client`] | the HTTP client of the CLI, the tests and the benchmark, over the socket, TCP, or TLS with a client certificate; on a Unix socket it checks who listens (`SO_PEERCRED`) before sending |
//!
//! # One request, end to end
//!
//! `POST /v1/tokens` on the Unix socket:
//!
//! 1. [`api::transport`] accepts the connection under the listener's connection cap.
//!    In the connection's own task, the transport establishes who is calling: on the
//!    socket the kernel's peer uid/gid/pid (`SO_PEERCRED`); over TLS the verified client
//!    certificate's SPIFFE ID, DNS names and hash ([`identity::Principal::Remote`]), or
//!    an anonymous principal without one. The task then takes one of that principal's
//!    connection slots ([`api::limits`]) and attaches the principal to every request on
//!    the connection.
//! 2. Every request gets its id and log span in [`api::front`]. Before any body is
//!    read, the signing routes' [`api::gate`] asks [`policy::Policy::decide`] whether
//!    the principal may use the signing routes at all (anonymous: 401; named by no
//!    issuer: 403), a declared `Content-Length` over the limit gets 413, and a deadline
//!    wraps the request. Then [`api::body::ApiJson`] parses the body (64 KiB cap, JSON only) into
//!    an [`api::wire::MintRequest`], which converts into the service's
//!    [`token::MintRequest`].
//! 3. [`service::Service::mint`] finds the issuer, asks the policy again for this exact
//!    action, checks the rate limits of the principal and of the issuer (429 with
//!    `Retry-After` over them), and builds the claims ([`token::claims::build`]): the
//!    daemon sets `iss`, `iat`, `exp`, `jti` and the header; the caller's TTL, audience
//!    and claims are checked against the issuer's limits.
//! 4. The service announces its audit record, then asks the [`signer::Signer`] port to
//!    sign by kid. [`hsm::Hsm`] finds the private key's handle in its map (refreshed at
//!    every inventory, looked up again if the token says it is stale) and hands one job
//!    to a worker thread that owns a logged-in session (a full queue answers `overloaded`
//!    at once; during a token outage the answer is `hsm_unavailable` with `Retry-After`);
//!    the worker hashes the signing input (ES256) and makes one `C_Sign`, on its session's
//!    copy of the key (made at the key's first signature in that session). The same
//!    worker then runs the service's continuation ([`signer::sign_then`]): it
//!    normalises an ES256 signature to low-S, so each token has exactly one valid
//!    encoding, assembles the token and starts its record.
//! 5. The `mint` record (principal, issuer, kid, jti, SHA-256 of the token) goes to the
//!    [`audit::AuditSink`]: when it is the only record announced and the writer is
//!    idle, the worker writes and fsyncs it itself; otherwise it is queued to the writer
//!    thread, which fsyncs it together with whatever else arrived meanwhile. The handler
//!    waits until it is durable. If it cannot be written, the token is dropped and the
//!    request fails with `audit_unavailable`.
//! 6. The compact JWS goes back as an [`api::wire::MintedToken`]. Any error, from the
//!    service or from HTTP itself (a bad path, method, media type, size or body), becomes
//!    an [`api::error::ApiError`], the only place that knows HTTP statuses, and goes out
//!    as `{"error":{"code":"...","message":"..."}}`. The route group's [`api::gate`]
//!    records the refusal with its code: a `refused` record for a caller a policy names,
//!    a count in the interval's `refused_aggregate` record for anyone else.
//!
//! Public keys are published by [`keys::KeyRegistry`], rebuilt at start-up and at every
//! [`lifecycle`] tick from each reading of the state store and the token merged into the
//! last good view (so changes made with the CLI reach a running daemon, and an
//! unreadable token unpublishes nothing) and swapped in atomically. The token holds the
//! key pairs and nothing else. Every published key carries its [`attest`] chain in
//! `x5c`.

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
pub mod signer;
pub mod store;
pub mod telemetry;
pub mod token;
pub mod util;

pub use algorithm::Algorithm;
pub use config::Config;
pub use error::Error;
pub use service::Service;
