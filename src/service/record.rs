//! What the service writes to the audit log, and when a failure to write it matters.
//!
//! Records of signatures (`Service::record`) fail closed: the request fails if the
//! record cannot be written. Records of everything else ([`Service::note`]: refusals,
//! key changes, start and stop) are written before the response too, but a failure is
//! logged rather than turned into a different answer. Refusals have rules of their
//! own: see `service::refusals`.

use std::sync::{Arc, Mutex};

use super::Service;
use crate::audit::{AUDIT_ISSUER, AuditSink, CallerRecord, Entry, Event, Expected};
use crate::error::Error;
use crate::keys::{KeyRegistry, KeyState};

/// The `token_revoke` record of a revocation this daemon did not make but found in the
/// state store (`signetd token revoke`, another replica): caller internal `store`,
/// `detail` "listed until EXP; revoked at T outside this daemon `how`". The detail must
/// begin `listed until EXP`: [`super::rollback::Witness`] reads it back from the log.
pub fn store_revocation(revoked: &crate::store::RevokedToken, how: &str) -> Entry {
    let mut entry = Entry::new(Event::TokenRevoke)
        .caller(CallerRecord::internal("store"))
        .ok()
        .detail(format!(
            "listed until {}; revoked at {} outside this daemon {how}",
            revoked.exp, revoked.revoked_at
        ));
    entry.jti = Some(revoked.jti.clone());
    entry
}

/// The audit event for a key entering `state`.
pub fn key_event(state: KeyState) -> Event {
    match state {
        KeyState::Pending => Event::KeyRotate,
        KeyState::Active => Event::KeyActivate,
        KeyState::Retired => Event::KeyRetire,
        KeyState::Archived => Event::KeyArchive,
        KeyState::Revoked => Event::KeyRevoke,
    }
}

/// Waits until a signature's record, started by [`AuditSink::append`], is durable; the
/// request fails if it cannot be.
async fn durable(event: Event, appended: Appending) -> Result<(), Error> {
    appended.await.map(|_| ()).map_err(|e| {
        tracing::error!(error = %e, ?event, "audit record not written; the request fails");
        Error::AuditUnavailable
    })
}

/// A record's announcement ([`AuditSink::expect`]), shared by the request and the
/// continuation that starts the record on the signer's thread. The continuation takes
/// it; if the request ends first (its deadline passed, its client went away) while the
/// job waits or hangs, dropping the request's side withdraws the announcement, so the
/// writer does not keep waiting for a record that may never come.
struct Announcement(Arc<Mutex<Option<Expected>>>);

/// The continuation's side of an [`Announcement`].
struct AnnouncementTaker(Arc<Mutex<Option<Expected>>>);

impl Announcement {
    fn new(expected: Option<Expected>) -> (Announcement, AnnouncementTaker) {
        let shared = Arc::new(Mutex::new(expected));
        (Announcement(shared.clone()), AnnouncementTaker(shared))
    }
}

impl Drop for Announcement {
    fn drop(&mut self) {
        drop(self.0.lock().unwrap_or_else(|p| p.into_inner()).take());
    }
}

impl AnnouncementTaker {
    /// The announcement, unless the request has withdrawn it.
    fn take(&self) -> Option<Expected> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// A record on its way to the log: what [`AuditSink::append`] returns.
type Appending = crate::util::BoxFuture<'static, Result<u64, crate::audit::AuditError>>;

impl Service {
    /// Signs `input` with `key` and makes the signature's record on the worker that
    /// signed, so a lone request waits for no other thread between the two: `make`
    /// turns the signature into what the request returns and its record, which is
    /// started there (and written there when it is the only one announced, see
    /// [`AuditSink::append_here`]). Returns once the record is durable; the request
    /// fails if it cannot be, and what `make` made is dropped unseen.
    pub(super) async fn sign_recorded<T: Send + 'static>(
        &self,
        key: crate::signer::KeyRef<'_>,
        input: crate::signer::SignInput,
        expected: Option<Expected>,
        make: impl FnOnce(Vec<u8>) -> Result<(T, Entry), Error> + Send + 'static,
    ) -> Result<T, Error> {
        let audit = self.audit.clone();
        let (_announced, expected) = Announcement::new(expected);
        let (made, event, appending) =
            crate::signer::sign_then(&*self.signer, key, input, move |signature| {
                let (made, entry) = make(signature)?;
                let event = entry.event;
                Ok::<_, Error>((made, event, audit.append_here(entry, expected.take())))
            })
            .await??;
        durable(event, appending).await?;
        Ok(made)
    }

    /// The audit log.
    pub fn audit(&self) -> &dyn AuditSink {
        &*self.audit
    }

    /// Refuses at once, before the token signs, while the log is known not to be
    /// writable; otherwise announces the record that will follow the signature.
    pub(super) fn audit_ready(&self) -> Result<Option<Expected>, Error> {
        self.audit_healthy().map(|()| self.audit.expect())
    }

    /// Refuses while the log cannot take records: before signing, and before key and
    /// revocation changes, since every change leaves a record. (The CLI stays available
    /// for emergencies; the next `start` record lists every key's state.)
    pub(super) fn audit_healthy(&self) -> Result<(), Error> {
        if self.audit.is_healthy() {
            Ok(())
        } else {
            Err(Error::AuditUnavailable)
        }
    }

    /// Appends a record that must be durable before the request may succeed.
    pub(super) async fn record(
        &self,
        expected: Option<Expected>,
        entry: Entry,
    ) -> Result<(), Error> {
        let event = entry.event;
        durable(event, self.audit.append(entry, expected)).await
    }

    /// Appends a record whose failure is logged, not returned ([`note_to`]).
    pub async fn note(&self, entry: Entry) {
        note_to(&*self.audit, entry).await;
    }

    /// The keys and their states, for the `start` record: changes made while the daemon
    /// was stopped show as differences between consecutive starts.
    pub fn key_states(&self) -> String {
        let registry = self.registry();
        let mut keys: Vec<String> = registry
            .all()
            .iter()
            .map(|k| format!("{}={}", k.kid, k.state))
            .collect();
        keys.sort();
        keys.join(" ")
    }

    /// Records a key the daemon moved to `state` (or generated in it), by `caller`.
    pub async fn note_key_change(
        &self,
        event: Event,
        caller: CallerRecord,
        issuer: &str,
        kid: &str,
        state: KeyState,
    ) {
        self.recorded_states
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(kid.to_string(), state);
        self.witness.raise(kid, state, "this run");
        if issuer == AUDIT_ISSUER {
            self.audit.forget_key();
        }
        let entry = Entry::new(event)
            .caller(caller)
            .issuer(issuer)
            .kid(kid)
            .ok()
            .detail(super::rollback::changed_detail(state));
        self.note(entry).await;
    }

    /// Records keys that appeared or changed state since the last reload without the
    /// daemon doing it: the CLI or a ceremony script, while the daemon ran. A new key is
    /// a generation like any other (`key_generate`, or `key_rotate` for a pending one),
    /// its maker taken from the state store's history; a change of state is
    /// `key_observed`. A new audit key is left out (the log records its generation
    /// itself); any change to one makes the writer look the key up again.
    pub(super) async fn record_outside_changes(&self, registry: &KeyRegistry) {
        let changes: Vec<(Entry, Option<KeyState>)> = {
            let mut recorded = self
                .recorded_states
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let mut changes = Vec::new();
            for key in registry.all() {
                self.witness.raise(&key.kid, key.state, "this run");
                let before = recorded.insert(key.kid.clone(), key.state);
                if before == Some(key.state) {
                    continue;
                }
                if key.issuer == AUDIT_ISSUER {
                    self.audit.forget_key();
                    if before.is_none() {
                        continue;
                    }
                }
                let (event, detail) = match before {
                    Some(before) => (
                        Event::KeyObserved,
                        super::rollback::observed_detail(Some(before), key.state),
                    ),
                    None if key.state == KeyState::Pending => (Event::KeyRotate, String::new()),
                    None => (Event::KeyGenerate, String::new()),
                };
                let entry = Entry::new(event)
                    .caller(CallerRecord::internal("token"))
                    .issuer(&key.issuer)
                    .kid(&key.kid)
                    .ok()
                    .detail(detail);
                changes.push((entry, before.is_none().then_some(key.state)));
            }
            changes
        };
        for (entry, new) in changes {
            let entry = match new {
                Some(state) => {
                    let made = self.maker(entry.kid.as_deref().unwrap_or_default()).await;
                    entry.detail(super::rollback::generated_detail(&made, state))
                }
                None => entry,
            };
            self.note(entry).await;
        }
    }

    /// Who made key `kid` and when, from the first entry of its state history.
    async fn maker(&self, kid: &str) -> String {
        match self.key_records.history(kid).await {
            Ok(history) => history.first().map_or_else(
                || "an unknown actor (no state history)".to_string(),
                |first| {
                    let at = i64::try_from(first.at)
                        .ok()
                        .and_then(|at| time::OffsetDateTime::from_unix_timestamp(at).ok())
                        .and_then(|t| {
                            t.format(&time::format_description::well_known::Rfc3339)
                                .ok()
                        })
                        .unwrap_or_else(|| first.at.to_string());
                    format!("{} at {at}", first.actor)
                },
            ),
            Err(e) => format!("an unknown actor (state history unreadable: {e})"),
        }
    }
}

/// Appends `entry` to `audit`, logging a failure rather than returning it: for records
/// of what was done anyway (a rollback at start, an import, a key change observed).
pub async fn note_to(audit: &dyn AuditSink, entry: Entry) {
    let event = entry.event;
    if let Err(e) = audit.append(entry, None).await {
        tracing::warn!(error = %e, ?event, "audit record not written");
    }
}
