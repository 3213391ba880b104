//! Change notification among replicas sharing a PostgreSQL store: every write to shared
//! state (token revocations, key records) sends a `NOTIFY` on one channel inside its
//! transaction, delivered when it commits; each daemon `LISTEN`s and reloads at once
//! instead of at its next lifecycle tick. The tick's poll stays the fallback: a
//! notification lost while a listener reconnects delays a change by one tick at most.
//!
//! SQLite has no such mechanism and needs none: its replicas would be on one host, and
//! the tick polls.

use std::time::Duration;

use sqlx::AnyConnection;
use sqlx::postgres::PgListener;
use tokio::sync::Mutex;

use super::{ChangeFeed, StoreError};
use crate::util::BoxFuture;

/// The channel signetd notifies and listens on.
const CHANNEL: &str = "signetd_state";

/// How long after a notification the feed waits for more before reporting one change.
const COALESCE: Duration = Duration::from_millis(20);

/// The name sqlx's `Any` driver gives PostgreSQL connections.
const POSTGRES: &str = "PostgreSQL";

/// Tells the other replicas, when `conn`'s transaction commits, that shared state
/// changed. Nothing on SQLite.
pub(super) async fn notify_changed(conn: &mut AnyConnection) -> Result<(), sqlx::Error> {
    if conn.backend_name() == POSTGRES {
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(CHANNEL)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Commits `tx`, telling the other replicas (PostgreSQL) that shared state changed, so
/// they reload at once rather than at their next tick.
pub(super) async fn commit_notifying(
    mut tx: sqlx::Transaction<'_, sqlx::Any>,
) -> Result<(), sqlx::Error> {
    notify_changed(&mut tx).await?;
    tx.commit().await
}

/// A listener on the change channel.
pub struct PgChangeFeed {
    listener: Mutex<PgListener>,
}

impl PgChangeFeed {
    /// Listens on the change channel of the PostgreSQL database at `url`.
    pub(super) async fn connect(url: &str) -> Result<PgChangeFeed, sqlx::Error> {
        let mut listener = PgListener::connect(url).await?;
        listener.listen(CHANNEL).await?;
        Ok(PgChangeFeed {
            listener: Mutex::new(listener),
        })
    }
}

impl ChangeFeed for PgChangeFeed {
    fn changed(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let mut listener = self.listener.lock().await;
            // sqlx reconnects inside recv after a lost connection; an error means it
            // could not, and the caller waits before asking again.
            listener
                .recv()
                .await
                .map_err(|e| StoreError(format!("listening for changes: {e}")))?;
            // Coalesce a burst (10,000 revocations) into one reload: wait a moment for
            // the rest to arrive, then take what is buffered without reading again.
            tokio::time::sleep(COALESCE).await;
            while listener.next_buffered().is_some() {}
            Ok(())
        })
    }
}
