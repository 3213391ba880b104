//! The key lifecycle: applies due transitions on a timer.
//!
//! Every `lifecycle.tick_seconds`, for each issuer:
//! - a `pending` key published for `lifecycle.prepublish_seconds` becomes `active`, and
//!   the previous active key `retired` (retired first: a crash in between leaves a
//!   pending key and no active one, which the next tick completes);
//! - a `retired` key whose last token has expired (`max_ttl_seconds` plus the verify
//!   leeway after it retired) is `archived`: out of the JWKS, still served by kid;
//! - with `rotation_period_seconds`, an active key that old gets a pending successor.
//!
//! Of several replicas sharing one state store, only the holder of an issuer's lifecycle
//! lease ([`crate::service::leases`]) applies that issuer's; the others only reload.
//!
//! Then expired token revocations are pruned and the registry is rebuilt from the state
//! store and the token, which also picks up changes made with the CLI (merged into the
//! last good view:
//! a read failure never empties it, see [`crate::keys::carry`]). At no point does the JWKS lack
//! a key that signed an unexpired token: keys are published before they sign and stay
//! published until everything they signed has expired.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::audit::CallerRecord;
use crate::error::Error;
use crate::keys::{KeyState, store};
use crate::service::record::key_event;
use crate::service::verify::LEEWAY_SECONDS;
use crate::service::{Service, unix_now};

/// Who the lifecycle's changes are by, in each key's state history.
const ACTOR: &str = "lifecycle";

/// Runs [`tick`] every `lifecycle.tick_seconds` until `shutdown`. The daemon runs the
/// first one itself, before it serves (see [`tick_now`]).
pub async fn run(service: Arc<Service>, shutdown: CancellationToken) {
    loop {
        // Read each time: a reload may change it.
        let period = Duration::from_secs(service.config().lifecycle.tick_seconds);
        tokio::select! {
            () = tokio::time::sleep(period) => {}
            () = shutdown.cancelled() => return,
        }
        tick_now(&service).await;
    }
}

/// One [`tick`] now, its changes and failure logged.
///
/// The daemon ticks once before it serves: one killed between retiring the old key and
/// activating the new one restarts with no active key, and would otherwise refuse every
/// mint with `no_active_key` for a whole period (found by the crash soak,
/// docs/reliability.md).
pub async fn tick_now(service: &Service) {
    let started = std::time::Instant::now();
    match tick(service, unix_now()).await {
        Ok(changes) => {
            let count = changes.len();
            for change in changes {
                tracing::info!("lifecycle: {change}");
            }
            // What a tick costs as state grows (docs/scaling.md measures it from this).
            let elapsed_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            tracing::debug!(elapsed_us, changes = count, "lifecycle tick done");
        }
        Err(e) => tracing::error!(error = %e, code = e.code(), "lifecycle tick failed"),
    }
}

/// Applies every transition due at `now`; returns what changed.
///
/// Plans from the token as it is now (not from the last snapshot), takes each issuer's
/// steps separately so one issuer's failure cannot stall the others, and always ends by
/// reloading the registry.
pub async fn tick(service: &Service, now: u64) -> Result<Vec<String>, Error> {
    let _turn = service.lifecycle_turn().await;
    service.reload().await?;
    let mut changes = Vec::new();
    // Every key change leaves a record: none while the log cannot take one.
    let audited = service.audit().is_healthy();
    if !audited {
        tracing::warn!("the audit log is unavailable: key transitions wait until it is back");
    }
    // Of replicas sharing the store, the holder of an issuer's lease applies its
    // transitions; every replica reloads, which is how the others follow.
    for name in service.config().issuers.keys().filter(|_| audited) {
        if !service.hold_lifecycle_lease(name, now).await {
            continue;
        }
        if let Err(e) = issuer_step(service, name, now, &mut changes).await {
            tracing::error!(issuer = %name, error = %e, code = e.code(), "lifecycle step failed; retrying next tick");
        }
    }
    // Idempotent, so every replica may: one indexed delete.
    match service
        .revocation_store()
        .prune(now.saturating_sub(LEEWAY_SECONDS))
        .await
    {
        Ok(0) => {}
        Ok(pruned) => changes.push(format!("pruned {pruned} expired token revocations")),
        Err(e) => tracing::error!(error = %e, "cannot prune token revocations"),
    }
    match service.replay_store().live(now).await {
        Ok(jtis) => crate::telemetry::replay_store_jtis(jtis),
        Err(e) => tracing::warn!(error = %e, "cannot count single-use jtis for the metrics"),
    }
    service.reload().await?;
    Ok(changes)
}

/// The transitions due for one issuer.
async fn issuer_step(
    service: &Service,
    name: &str,
    now: u64,
    changes: &mut Vec<String>,
) -> Result<(), Error> {
    let config = service.config();
    let issuer = &config.issuers[name];
    let (hsm, meta) = (service.hsm(), service.key_records());
    let tick = config.lifecycle.tick_seconds;
    let registry = service.registry();
    // A key missing from the token (carried from the last good view) cannot change
    // state: plan from the keys the token shows.
    let keys: Vec<_> = registry
        .all()
        .into_iter()
        .filter(|k| k.issuer == name && !registry.is_missing(&k.kid))
        .collect();
    let active = keys.iter().find(|k| k.state == KeyState::Active);
    let pending = keys.iter().find(|k| k.state == KeyState::Pending);
    // A key made outside the daemon (the CLI) is published at the next reload, up to a
    // tick after it was made: count that tick too, so it is always published for the
    // full pre-publication delay before it signs.
    let published_long_enough = |k: &&&std::sync::Arc<crate::keys::StoredKey>| {
        k.changed_at + config.lifecycle.prepublish_seconds + tick <= now
    };
    if let Some(next) = pending.filter(published_long_enough) {
        // One transaction: a crash between the two never leaves the issuer without
        // an active key.
        let current = active.map(|k| k.kid.as_str());
        store::promote(meta, current, &next.kid, ACTOR).await?;
        if let Some(current) = current {
            note(service, name, current, KeyState::Retired).await;
            changes.push(format!("{name}: retired {current}"));
        }
        note(service, name, &next.kid, KeyState::Active).await;
        changes.push(format!("{name}: activated {}", next.kid));
    } else if let (Some(period), Some(current), None) =
        (issuer.rotation_period_seconds, active, pending)
        && current.changed_at + period <= now
    {
        let days = config.attestation.key_certificate_days;
        let purpose = issuer.key_purpose();
        let next = store::prepare_rotation(hsm, meta, name, issuer.algorithm, purpose, days, ACTOR)
            .await?;
        note(service, name, &next.kid, KeyState::Pending).await;
        changes.push(format!(
            "{name}: rotation period reached; {} is pending",
            next.kid
        ));
    }
    // A key retired with the CLI may still sign until the daemon's next reload, a tick
    // later: its last token can expire that much after max_ttl.
    let grace = issuer.max_ttl_seconds + LEEWAY_SECONDS + tick;
    for retired in keys.iter().filter(|k| k.state == KeyState::Retired) {
        if retired.changed_at + grace < now {
            store::transition(meta, &retired.kid, KeyState::Archived, ACTOR).await?;
            note(service, name, &retired.kid, KeyState::Archived).await;
            changes.push(format!("{name}: archived {}", retired.kid));
        }
    }
    Ok(())
}

/// Records a change the lifecycle made.
async fn note(service: &Service, issuer: &str, kid: &str, state: KeyState) {
    let caller = CallerRecord::internal("lifecycle");
    service
        .note_key_change(key_event(state), caller, issuer, kid, state)
        .await;
}
