//! Leases in the state store: which of several replicas sharing one store does a job
//! that must be done by one at a time (the lifecycle's transitions).
//!
//! A lease is one row taken or renewed by one statement: the insert succeeds if the
//! row is absent, held by the same holder, or expired. The database orders concurrent
//! attempts, so at most one holder succeeds until the lease expires; a holder that dies
//! stops renewing, and another takes the lease over within one lease period.
//!
//! Expiry is judged by the clock of the replica that asks, so replicas need synchronized
//! clocks (NTP) for the lease to be exclusive. Exclusivity is an economy, not the
//! safety: each transition is itself a compare-and-set in the store, so two replicas
//! that both believed they held the lease would still not apply one transition twice.

use super::sql::{SqlStore, failed, int};
use super::{LeaseStore, StoreError};
use crate::util::BoxFuture;

impl SqlStore {
    async fn hold_sql(
        &self,
        name: &str,
        holder: &str,
        seconds: u64,
        now: u64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, \
             expires_at = excluded.expires_at \
             WHERE leases.holder = excluded.holder OR leases.expires_at < $4",
        )
        .bind(name)
        .bind(holder)
        .bind(int(now.saturating_add(seconds)))
        .bind(int(now))
        .execute(self.pool())
        .await
        .map_err(failed("taking a lease"))?;
        Ok(done.rows_affected() == 1)
    }

    async fn release_sql(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM leases WHERE name = $1 AND holder = $2")
            .bind(name)
            .bind(holder)
            .execute(self.pool())
            .await
            .map_err(failed("releasing a lease"))?;
        Ok(())
    }
}

impl LeaseStore for SqlStore {
    fn hold<'a>(
        &'a self,
        name: &'a str,
        holder: &'a str,
        seconds: u64,
        now: u64,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(super::sql::bounded(
            "taking a lease",
            self.hold_sql(name, holder, seconds, now),
        ))
    }

    fn release<'a>(
        &'a self,
        name: &'a str,
        holder: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(super::sql::bounded(
            "releasing a lease",
            self.release_sql(name, holder),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_db::{Engine, TestDb};

    #[tokio::test]
    async fn on_sqlite_one_holder_at_a_time_until_it_expires_or_is_released() {
        one_holder_at_a_time(Engine::Sqlite).await;
    }

    #[tokio::test]
    async fn on_postgres_one_holder_at_a_time_until_it_expires_or_is_released() {
        one_holder_at_a_time(Engine::Postgres).await;
    }

    async fn one_holder_at_a_time(engine: Engine) {
        let Some(db) = TestDb::new(engine).await else {
            return;
        };
        // Two stores on one database, as two replicas hold them.
        let a = SqlStore::open(db.location()).await.unwrap();
        let b = SqlStore::open(db.location()).await.unwrap();
        assert!(a.hold("lifecycle", "a", 15, 100).await.unwrap());
        assert!(!b.hold("lifecycle", "b", 15, 101).await.unwrap());
        // The holder renews; the other still may not take it.
        assert!(a.hold("lifecycle", "a", 15, 110).await.unwrap());
        assert!(!b.hold("lifecycle", "b", 15, 120).await.unwrap());
        // Another lease is another row.
        assert!(b.hold("other", "b", 15, 120).await.unwrap());
        // A holder that stopped renewing loses it once it expires...
        assert!(b.hold("lifecycle", "b", 15, 126).await.unwrap());
        assert!(!a.hold("lifecycle", "a", 15, 127).await.unwrap());
        // ...and a released lease is free at once.
        b.release("lifecycle", "b").await.unwrap();
        assert!(a.hold("lifecycle", "a", 15, 128).await.unwrap());
        // Releasing a lease one does not hold changes nothing.
        b.release("lifecycle", "b").await.unwrap();
        assert!(!b.hold("lifecycle", "b", 15, 129).await.unwrap());
    }
}
