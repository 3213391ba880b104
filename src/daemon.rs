//! The whole daemon as one future: the HTTP server on its listeners and the lifecycle
//! timer, until `shutdown`. The binary and the integration tests run exactly this.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::api::{self, Listeners};
use crate::audit::{AuditError, CallerRecord, Entry, Event};
use crate::hsm::HsmHealth;
use crate::lifecycle;
use crate::service::Service;

/// Serves until `shutdown` completes, then drains requests, stops the lifecycle, writes
/// the refusals still being counted, and closes the audit log with a `stop` record and
/// a final checkpoint.
pub async fn run(listeners: Listeners, service: Arc<Service>, shutdown: impl Future<Output = ()>) {
    let token = service.hsm().token();
    let started = Entry::new(Event::Start)
        .caller(CallerRecord::internal("daemon"))
        .detail(format!(
            "signetd {} pid {}, token {:?} serial {}; keys: {}",
            env!("CARGO_PKG_VERSION"),
            std::process::id(),
            token.label,
            token.serial,
            service.key_states()
        ));
    service.note(started).await;
    // Sign the log's head at once: this also finds or generates the audit key, so a
    // token without an attestation CA is reported at start, not at the first checkpoint.
    match service.audit().checkpoint().await {
        Ok(_) => {}
        Err(AuditError::Unavailable) => {
            tracing::error!("the audit log is unavailable: signing is refused")
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot sign an audit checkpoint at start; retrying with every checkpoint")
        }
    }
    let stop = CancellationToken::new();
    let timer = tokio::spawn(lifecycle::run(service.clone(), stop.clone()));
    let refusals = tokio::spawn({
        let (service, stop) = (service.clone(), stop.clone());
        async move { service.write_refusals_until(stop).await }
    });
    let health = tokio::spawn(record_hsm_health(service.clone(), stop.clone()));
    api::serve(listeners, service.clone(), shutdown).await;
    stop.cancel();
    let _ = timer.await;
    let _ = health.await;
    // Every request has drained: the last refusal interval is complete, and is written
    // before the `stop` record.
    let _ = refusals.await;
    let stopped = Entry::new(Event::Stop).caller(CallerRecord::internal("daemon"));
    if let Err(e) = service.audit().close(stopped).await {
        tracing::error!(error = %e, "the audit log's stop record and final checkpoint were not written");
    }
}

/// Writes an `hsm_outage` or `hsm_recovered` record at each change of the token's
/// health, until `stop`. (Changes closer together than a record takes to write are seen
/// as the latest one only.)
async fn record_hsm_health(service: Arc<Service>, stop: CancellationToken) {
    let mut health = service.hsm().health();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            changed = health.changed() => if changed.is_err() { return },
        }
        let now = health.borrow_and_update().clone();
        let entry = match now {
            HsmHealth::Outage { cause } => Entry::new(Event::HsmOutage).detail(cause),
            HsmHealth::Ready => Entry::new(Event::HsmRecovered)
                .detail("library re-initialized, token and keys found again".to_string()),
        };
        service
            .note(entry.caller(CallerRecord::internal("hsm")))
            .await;
    }
}
