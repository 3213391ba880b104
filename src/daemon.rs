//! The whole daemon as one future: the HTTP server on its listeners and the lifecycle
//! timer, until `shutdown`. The binary and the integration tests run exactly this.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::api::{self, Listeners};
use crate::audit::{AuditError, CallerRecord, Entry, Event};
use crate::hsm::{HealthChanges, HsmHealth};
use crate::lifecycle;
use crate::service::Service;

/// Serves until `shutdown` completes, then drains requests, stops the lifecycle, writes
/// the refusals still being counted, and closes the audit log with a `stop` record and
/// a final checkpoint.
pub async fn run(listeners: Listeners, service: Arc<Service>, shutdown: impl Future<Output = ()>) {
    // Once per process (the binary installs it earlier, before opening the token):
    // daemons started in one test process share it.
    crate::telemetry::install();
    let token = service.hsm().token();
    let started = Entry::new(Event::Start)
        .caller(CallerRecord::internal("daemon"))
        .detail(format!(
            "signetd {} pid {}, token {:?} serial {}{}{}",
            env!("CARGO_PKG_VERSION"),
            std::process::id(),
            token.label,
            token.serial,
            crate::service::rollback::START_KEYS,
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
    // Subscribed before the lifecycle starts, so no change of the token's health is missed.
    let health_changes = service.hsm().health_changes();
    // Due transitions first (a rotation a crash interrupted), then requests.
    lifecycle::tick_now(&service).await;
    let stop = CancellationToken::new();
    let timer = tokio::spawn(lifecycle::run(service.clone(), stop.clone()));
    let follower = tokio::spawn(crate::service::follow::follow_changes(
        service.clone(),
        stop.clone(),
    ));
    let refusals = tokio::spawn({
        let (service, stop) = (service.clone(), stop.clone());
        async move { service.write_refusals_until(stop).await }
    });
    let health = tokio::spawn(record_hsm_health(
        service.clone(),
        health_changes,
        stop.clone(),
    ));
    api::serve(listeners, service.clone(), shutdown).await;
    stop.cancel();
    let _ = timer.await;
    let _ = follower.await;
    service.release_leases().await;
    let _ = health.await;
    // Every request has drained: the last refusal interval is complete, and is written
    // before the `stop` record.
    let _ = refusals.await;
    let stopped = Entry::new(Event::Stop).caller(CallerRecord::internal("daemon"));
    if let Err(e) = service.audit().close(stopped).await {
        tracing::error!(error = %e, "the audit log's stop record and final checkpoint were not written");
    }
}

/// Writes an `hsm_outage` or `hsm_recovered` record for each change of the token's
/// health, in order, until `stop`, and then for the changes still waiting: an outage
/// that begins and ends while a record is being written gets both of its records.
async fn record_hsm_health(
    service: Arc<Service>,
    mut changes: HealthChanges,
    stop: CancellationToken,
) {
    loop {
        let change = tokio::select! {
            _ = stop.cancelled() => break,
            change = changes.recv() => match change {
                Some(change) => change,
                None => return,
            },
        };
        service.note(health_entry(change)).await;
    }
    while let Ok(change) = changes.try_recv() {
        service.note(health_entry(change)).await;
    }
}

/// The audit record of a change of the token's health.
fn health_entry(health: HsmHealth) -> Entry {
    let entry = match health {
        HsmHealth::Outage { cause } => Entry::new(Event::HsmOutage).detail(cause),
        HsmHealth::Ready => Entry::new(Event::HsmRecovered)
            .detail("library re-initialized, token and keys found again".to_string()),
    };
    entry.caller(CallerRecord::internal("hsm"))
}
