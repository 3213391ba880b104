//! Following changes made by others (another replica, the CLI) as they commit, when the
//! state store can push them (PostgreSQL `LISTEN/NOTIFY`, see
//! [`crate::store::ChangeFeed`]); the lifecycle tick's reload is the fallback.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Service;

/// How long to wait after the feed failed before listening again (the tick polls
/// meanwhile).
const RETRY: Duration = Duration::from_secs(5);

/// Reloads whenever the store reports a change, until `stop`. Returns at once if the
/// store pushes nothing (SQLite).
pub async fn follow_changes(service: Arc<Service>, stop: CancellationToken) {
    let Some(feed) = service.changes.clone() else {
        return;
    };
    loop {
        tokio::select! {
            changed = feed.changed() => match changed {
                Ok(()) => {
                    let _turn = service.lifecycle_turn().await;
                    if let Err(e) = service.reload().await {
                        tracing::warn!(error = %e, code = e.code(), "reload after a change in the state store failed; the next tick tries again");
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot follow changes in the state store; polling at every tick until it answers");
                    tokio::select! {
                        () = tokio::time::sleep(RETRY) => {}
                        () = stop.cancelled() => return,
                    }
                }
            },
            () = stop.cancelled() => return,
        }
    }
}
