//! Reading the keys (the state store's records, the token's key pairs) into the
//! registry without ever publishing less than verifiers need, and what `/readyz`
//! checks: whether the daemon can sign now.
//!
//! Each reload reads both and merges the reading into the last good view
//! ([`crate::keys::carry`]): a reading that fails, or in which the token shows none of
//! its objects, keeps the view whole and makes the daemon not-ready; a key gone from a
//! readable token stays published until its last token expires, and is reported at
//! error level, in the audit log (`key_missing`), in `/readyz` and by `keys list`. Keys
//! the store and the token disagree about ([`Mismatch`]) are reported at every start
//! (`key_missing`, `key_unknown`) and listed by `/readyz` while they last.

use std::collections::HashSet;
use std::sync::Mutex;

use super::rollback::Witness;
use super::{Service, unix_now};
use crate::attest::{self, AttestError, CaState};
use crate::audit::{CallerRecord, Entry, Event};
use crate::config::Config;
use crate::error::Error;
use crate::hsm::Hsm;
use crate::keys::carry::{self, LastGood, Merged, MissingKey, Reading};
use crate::keys::{self, Inventory, KeyRegistry, Mismatch};
use crate::service::verify::LEEWAY_SECONDS;
use crate::signer::SignError;
use crate::store::KeyMetadata;

/// What the service remembers between readings of the token.
#[derive(Debug, Default)]
pub(super) struct Publishing {
    inner: Mutex<Remembered>,
}

#[derive(Debug, Default)]
struct Remembered {
    last_good: LastGood,
    /// The reading's problems last reported, so reloads log only new ones.
    problems: Vec<String>,
    /// Why the last reading could not be used, while it could not.
    unreadable: Option<String>,
    /// Keys reported missing, so each is reported once per disappearance.
    missing: HashSet<String>,
    /// Keys the store and the token disagreed about at the last usable reading.
    mismatches: Vec<Mismatch>,
}

/// Reads the keys (the store's records matched to the token's key pairs) and the CA
/// chain. Problems of the CA are returned apart: they are not part of the inventory's
/// own report.
pub(super) async fn read(
    hsm: &Hsm,
    meta: &dyn KeyMetadata,
) -> Result<(Reading, Vec<String>), Error> {
    let inventory = keys::store::inventory(hsm, meta)
        .await
        .map_err(|e| match e {
            keys::InventoryError::Hsm(e) => Error::from(e),
            keys::InventoryError::Store(e) => Error::from(e),
        })?;
    let mut problems = Vec::new();
    let ca_chain = match attest::ca::load(hsm, meta).await {
        Ok(CaState::Ready(ca)) => ca.chain,
        Ok(CaState::Missing) | Err(AttestError::NoCa) => {
            problems.push(AttestError::NoCa.to_string());
            Vec::new()
        }
        Ok(CaState::KeyOnly(_)) | Err(AttestError::CaNotCertified) => {
            problems.push(AttestError::CaNotCertified.to_string());
            Vec::new()
        }
        Err(AttestError::Hsm(e)) => return Err(e.into()),
        Err(AttestError::Store(e)) => return Err(e.into()),
        Err(e) => {
            problems.push(format!("the attestation CA is unusable: {e}"));
            Vec::new()
        }
    };
    let reading = Reading {
        inventory,
        ca_chain,
    };
    Ok((reading, problems))
}

/// How many times [`read_checked`] reads the store and the token before giving up on a
/// store that keeps going backwards under it.
const READ_ATTEMPTS: u32 = 3;

/// Why [`read_checked`] has no reading to serve.
pub(super) enum ReadFailure {
    /// The token or the store could not be read.
    Unreadable(Error),
    /// Keys read behind their recorded state [`READ_ATTEMPTS`] times, or moving them
    /// forward failed: the message says which.
    Behind(String),
}

/// [`read`], checked against `witness` once read: the store may have been put back
/// after its keys were last moved forward (SQL by hand, or a restore, landing between
/// the check and the read). Such a reading is never served: the keys behind are moved
/// forward (the records pushed onto `records`) and both are read again, at most
/// [`READ_ATTEMPTS`] times in all.
pub(super) async fn read_checked(
    hsm: &Hsm,
    meta: &dyn KeyMetadata,
    witness: &Witness,
    now: u64,
    records: &mut Vec<Entry>,
) -> Result<(Reading, Vec<String>), ReadFailure> {
    let mut attempt = 1;
    loop {
        let (reading, problems) = read(hsm, meta).await.map_err(ReadFailure::Unreadable)?;
        let keys = reading
            .inventory
            .keys
            .iter()
            .map(|k| (k.kid.clone(), k.issuer.clone(), k.state));
        let behind: Vec<String> = witness
            .behind_of(keys)
            .iter()
            .map(ToString::to_string)
            .collect();
        if behind.is_empty() {
            return Ok((reading, problems));
        }
        let behind = behind.join(", ");
        if attempt == READ_ATTEMPTS {
            return Err(ReadFailure::Behind(format!(
                "keys read behind their recorded state in the state store {READ_ATTEMPTS} times: {behind}"
            )));
        }
        tracing::warn!(
            "the state store went backwards while it was read ({behind}); moving forward and reading again"
        );
        super::rollback::catch_up_keys(witness, meta, now, records)
            .await
            .map_err(ReadFailure::Behind)?;
        attempt += 1;
    }
}

/// How long after a key of `issuer` was last seen a token it signed may still verify:
/// `max_ttl` and the leeway, and a tick (a key retired with the CLI signs until the
/// next reload).
fn grace(config: &Config, issuer: &str) -> u64 {
    let max_ttl = config.issuer(issuer).map_or(0, |i| i.max_ttl_seconds);
    max_ttl + LEEWAY_SECONDS + config.lifecycle.tick_seconds
}

/// Merges a reading at `now` into `last` under `config`'s issuers.
pub(super) fn merge(config: &Config, last: &LastGood, reading: Reading, now: u64) -> Merged {
    carry::merge(last, reading, now, |issuer| grace(config, issuer))
}

/// The registry of a merged view.
pub(super) fn registry(config: &Config, merged: &Merged) -> KeyRegistry {
    let view = &merged.view;
    let inventory = Inventory {
        keys: view.keys.clone(),
        ..Inventory::default()
    };
    KeyRegistry::build(inventory, &config.issuers, view.ca_chain.clone())
        .with_missing(merged.missing.clone())
}

impl Publishing {
    /// Remembers the view the service starts with.
    pub(super) fn new(merged: &Merged, problems: Vec<String>, mismatches: Vec<Mismatch>) -> Self {
        let remembered = Remembered {
            last_good: merged.view.clone(),
            problems,
            unreadable: None,
            missing: merged.missing.iter().map(|m| m.kid.clone()).collect(),
            mismatches,
        };
        Publishing {
            inner: Mutex::new(remembered),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Remembered> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Service {
    /// Merges the state store's revocations into the published view: those made by the
    /// CLI or another replica arrive here, and each gets a `token_revoke` audit record
    /// (caller `store`), as the API's own do. A store that cannot be read keeps the view as
    /// it is (revocations never leave it before they expire) and is logged.
    pub(super) async fn refresh_revocations(&self) {
        let expired_before = unix_now().saturating_sub(LEEWAY_SECONDS);
        match self
            .revoked
            .refresh(&*self.revocations, expired_before)
            .await
        {
            Ok(learned) => {
                for revoked in learned {
                    tracing::warn!(jti = %revoked.jti, "token revoked outside this daemon");
                    let how = "(signetd token revoke, or another replica)";
                    self.note(super::record::store_revocation(&revoked, how))
                        .await;
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot read token revocations from the state store; the published list is kept as it was");
            }
        }
    }

    /// Reads the token again and swaps in the registry of the merged view: after a
    /// lifecycle change, and periodically so changes made with the CLI while the daemon
    /// runs take effect. A reading that fails or shows nothing keeps the registry as it
    /// is and fails; problems are logged when they first appear.
    pub async fn reload(&self) -> Result<(), Error> {
        // One at a time: a reload that read earlier must not swap its reading in after
        // one that read later (a key revoked in between would be served active again).
        let _one = self.reloading.lock().await;
        self.refresh_revocations().await;
        let (reading, ca_problems) = self.read_caught_up().await?;
        let now = unix_now();
        let mismatches = reading.inventory.mismatches.clone();
        let last = self.publishing.lock().last_good.clone();
        let merged = merge(&self.config(), &last, reading, now);
        if merged.looks_empty {
            let why = format!(
                "the token shows none of its objects (it had {} keys): treated as unreadable, the last good view is kept",
                last.keys.len()
            );
            self.unreadable(why.clone());
            // No call failed, so nothing else starts a recovery: a library that shows an
            // empty token (SoftHSM2 whose store went away) sees it again only after
            // re-initialization.
            self.hsm.report_lost(why.clone());
            return Err(Error::Signer(SignError::Unavailable(why)));
        }
        let registry =
            std::sync::Arc::new(registry(&self.config(), &merged).bridging(&self.registry()));
        let (appeared, back) = self.remember(&merged, ca_problems, mismatches);
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = registry.clone();
        registry.count_keys(self.config().issuers.keys());
        for gone in appeared {
            self.report_missing(&gone).await;
        }
        for kid in back {
            tracing::warn!(%kid, "key is back in the token");
        }
        for dropped in &merged.dropped {
            tracing::warn!(kid = %dropped.kid, issuer = %dropped.issuer, "missing key no longer published: every token it signed has expired");
        }
        self.record_outside_changes(&registry).await;
        Ok(())
    }

    /// Moves forward any key the store shows behind ([`Self::catch_up_keys`]), then
    /// reads the token and the store, checked once read ([`read_checked`]). A reading
    /// that cannot be used fails the reload, and the last good view stays.
    async fn read_caught_up(&self) -> Result<(Reading, Vec<String>), Error> {
        self.catch_up_keys().await?;
        let mut records = Vec::new();
        let read = read_checked(
            &self.hsm,
            &*self.key_records,
            &self.witness,
            unix_now(),
            &mut records,
        )
        .await;
        for entry in records {
            self.note(entry).await;
        }
        match read {
            Ok(read) => Ok(read),
            Err(ReadFailure::Unreadable(e)) => {
                let what = match e {
                    Error::Store(_) => "the state store",
                    _ => "the token",
                };
                self.unreadable(format!("{what} could not be read: {e}"));
                Err(e)
            }
            Err(ReadFailure::Behind(e)) => {
                tracing::error!("state rollback: {e}; the last good view is kept");
                Err(Error::Internal(format!("state rollback: {e}")))
            }
        }
    }

    /// Moves forward any key the store shows behind a state this daemon recorded (the
    /// store restored under it). A move that fails fails the reload, so the last good
    /// view, which never had the key in the earlier state, stays. Until token
    /// revocations and single uses have been checked against the log (it was unreadable
    /// at start, or putting back failed at a reload), that is tried too, with the log
    /// read afresh, at most every `rollback::RETRY_SECONDS`; its failure is logged and
    /// fails nothing else. The single uses held in memory since the start
    /// (`Witness::used`) that have expired are forgotten here, once a tick.
    async fn catch_up_keys(&self) -> Result<(), Error> {
        let failed = |e: String| {
            tracing::error!("state rollback: {e}; the last good view is kept");
            Error::Internal(format!("state rollback: {e}"))
        };
        let now = unix_now();
        self.witness.forget_expired_uses(now);
        let mut tokens_too = false;
        if self.witness.retry_due(now) {
            self.witness.tried_at(now);
            // Off the runtime: the whole log is read.
            let dir = self.config().audit.dir.clone();
            match tokio::task::spawn_blocking(move || super::rollback::Witness::from_log(&dir))
                .await
            {
                Ok(Ok(read)) => {
                    self.witness.absorb(read);
                    tokens_too = true;
                }
                Ok(Err(e)) => tracing::error!(
                    error = %e,
                    "cannot read the audit log: the state store is checked for rollback once it can be read; tried again in {} s",
                    super::rollback::RETRY_SECONDS
                ),
                Err(e) => tracing::error!(error = %e, "reading the audit log failed"),
            }
        }
        // Always: with the log unread, against the states this run has seen.
        let mut records = Vec::new();
        let keys =
            super::rollback::catch_up_keys(&self.witness, &*self.key_records, now, &mut records)
                .await;
        let tokens = match &keys {
            Ok(()) if tokens_too => {
                super::rollback::catch_up_tokens(
                    &self.witness,
                    &*self.revocations,
                    &*self.replay,
                    now,
                    self.started_at,
                    &mut records,
                )
                .await
            }
            _ => Ok(()),
        };
        // Those of what was done, even if the rest failed: a retry finds it done.
        for entry in records {
            self.note(entry).await;
        }
        if let Err(e) = tokens {
            tracing::error!(
                "state rollback: {e}; tried again in {} s",
                super::rollback::RETRY_SECONDS
            );
        }
        keys.map_err(failed)
    }

    /// Notes that the token cannot be read now (logged once per outage).
    fn unreadable(&self, why: String) {
        let mut remembered = self.publishing.lock();
        if remembered.unreadable.is_none() {
            tracing::error!(token = %self.hsm.token().label, "{why}; publishing the last good view");
        }
        remembered.unreadable = Some(why);
    }

    /// Remembers `merged` as the last good view; returns the keys newly missing and the
    /// kids of those that came back.
    fn remember(
        &self,
        merged: &Merged,
        ca_problems: Vec<String>,
        mismatches: Vec<Mismatch>,
    ) -> (Vec<MissingKey>, Vec<String>) {
        let mut remembered = self.publishing.lock();
        remembered.mismatches = mismatches;
        if remembered.unreadable.take().is_some() {
            tracing::warn!(token = %self.hsm.token().label, "the token can be read again");
        }
        let problems: Vec<String> = ca_problems
            .into_iter()
            .chain(merged.problems.iter().cloned())
            .collect();
        for problem in problems.iter().filter(|p| !remembered.problems.contains(p)) {
            tracing::error!(token = %self.hsm.token().label, "{problem}");
        }
        remembered.problems = problems;
        remembered.last_good = merged.view.clone();
        let now: HashSet<String> = merged.missing.iter().map(|m| m.kid.clone()).collect();
        let appeared = merged
            .missing
            .iter()
            .filter(|m| !remembered.missing.contains(&m.kid))
            .cloned()
            .collect();
        let back = remembered
            .missing
            .iter()
            .filter(|kid| !now.contains(*kid) && merged.view.seen_at.contains_key(*kid))
            .cloned()
            .collect();
        remembered.missing = now;
        (appeared, back)
    }

    /// A key gone from a readable token: an error line and a `key_missing` record.
    pub(super) async fn report_missing(&self, gone: &MissingKey) {
        tracing::error!(kid = %gone.kid, issuer = %gone.issuer, until = gone.until, "{gone}");
        let entry = Entry::new(Event::KeyMissing)
            .caller(CallerRecord::internal("token"))
            .issuer(&gone.issuer)
            .kid(&gone.kid)
            .detail(gone.to_string());
        self.note(entry).await;
    }

    /// Logs each key the state store and the token disagree about, and records it:
    /// `key_missing` for a key the store has and the token does not, `key_unknown` for a
    /// signetd key pair the store does not know. Nothing is repaired.
    pub(super) async fn report_mismatches(&self, mismatches: &[Mismatch]) {
        for mismatch in mismatches {
            tracing::error!(token = %self.hsm.token().label, kid = %mismatch.kid(), "{mismatch}");
            let event = match mismatch {
                Mismatch::NotInToken { .. } => Event::KeyMissing,
                Mismatch::NotInStore { .. } => Event::KeyUnknown,
            };
            let mut entry = Entry::new(event)
                .caller(CallerRecord::internal("store"))
                .kid(mismatch.kid())
                .detail(mismatch.to_string());
            if let Some(issuer) = mismatch.issuer() {
                entry = entry.issuer(issuer);
            }
            self.note(entry).await;
        }
    }

    /// What stops the daemon from signing now; empty when it can. A session answers,
    /// the last reading of the token was usable, every configured issuer's active key
    /// resolves in the token, no published key is missing from it (carried, or a key the
    /// store has and the token lost), and the audit log takes records.
    pub async fn readiness(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Err(e) = self.hsm.ping().await {
            problems.push(format!("no token session answers: {e}"));
        }
        if let Some(why) = self.publishing.lock().unreadable.clone() {
            problems.push(why);
        }
        let (abandoned, stuck) = self.hsm.hung_calls();
        if stuck > 0 {
            problems.push(format!(
                "{stuck} PKCS#11 call(s) hang inside the module past their deadline ({abandoned} abandoned since the pool started); their workers were replaced"
            ));
        }
        let registry = self.registry();
        for name in self.config().issuers.keys() {
            match registry.active(name) {
                None => problems.push(format!("issuer {name} has no active key")),
                Some(key) => {
                    if let Err(e) = self.hsm.check_key(key.key_ref()).await {
                        problems.push(format!(
                            "issuer {name}: its active key {} does not resolve in the token: {e}",
                            key.kid
                        ));
                    }
                }
            }
        }
        // Keys of issuers this daemon does not serve are not its to worry about.
        let ours = registry
            .missing()
            .iter()
            .filter(|m| self.config().issuers.contains_key(&m.issuer));
        problems.extend(ours.map(ToString::to_string));
        // A key the store has and the token lost, that is or may still be published
        // (and is not already listed as carried): verifiers may need it.
        let lost = self.mismatches_of_ours().into_iter().filter(|m| {
            matches!(m, Mismatch::NotInToken { kid, state, .. }
                if state.is_published() && !registry.is_missing(kid))
        });
        problems.extend(lost.map(|m| m.to_string()));
        if let Some(why) = self.audit.unavailable_because() {
            problems.push(why);
        }
        problems
    }

    /// What `/readyz` lists without failing: key pairs of configured issuers that the
    /// state store does not know (an interrupted generation). They sign nothing and are
    /// published nowhere, so they do not stop the daemon signing; the operator finishes
    /// or undoes them.
    pub fn readiness_warnings(&self) -> Vec<String> {
        self.mismatches_of_ours()
            .into_iter()
            .filter(|m| matches!(m, Mismatch::NotInStore { .. }))
            .map(|m| m.to_string())
            .collect()
    }

    /// The last usable reading's mismatches about keys of configured issuers (keys of
    /// issuers this daemon does not serve are not its to worry about).
    fn mismatches_of_ours(&self) -> Vec<Mismatch> {
        let mismatches = self.publishing.lock().mismatches.clone();
        mismatches
            .into_iter()
            .filter(|m| {
                m.issuer()
                    .is_some_and(|i| self.config().issuers.contains_key(i))
            })
            .collect()
    }

    /// Ok when [`Service::readiness`] finds nothing wrong; otherwise
    /// [`Error::NotReady`] naming every problem.
    pub async fn ready(&self) -> Result<(), Error> {
        let problems = self.readiness().await;
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::NotReady(problems))
        }
    }
}
