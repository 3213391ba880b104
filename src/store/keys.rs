//! Key metadata in the state store: what signetd knows about each key (issuer,
//! algorithm, purpose, state and its history, attestation certificate) and the
//! attestation CA's chain. The token keeps only the key pairs.
//!
//! [`KeyMetadata`] is the port the key and attestation rooms use; [`SqlStore`] implements
//! it. Every change is one transaction whose first statement writes, so concurrent
//! writers (the daemon and a CLI command) take turns at the database's write lock:
//!
//! - a state change is a compare-and-set (`UPDATE ... WHERE kid = $1 AND state = $2`);
//!   of two processes moving one key from the same state, one wins and the other is
//!   told the key changed under it;
//! - partial unique indexes allow one `active` and one `pending` key per issuer, so two
//!   concurrent generations or rotations of an issuer cannot both commit.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sqlx::Row;

use super::sql::{failed, int, uint};
use super::token_keys::{self, KEY_CERT_PREFIX, TokenKeyRecord};
use super::{SqlStore, StoreError};
use crate::algorithm::{Algorithm, KeyPurpose};
use crate::hsm::{DATA_APPLICATION, Hsm};
use crate::keys::state::KeyState;
use crate::util::{BoxFuture, hex};

/// A key as the state store records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRow {
    /// The key id.
    pub kid: String,
    /// The issuer it belongs to.
    pub issuer: String,
    /// Its algorithm.
    pub algorithm: Algorithm,
    /// What it signs.
    pub purpose: KeyPurpose,
    /// `CKA_ID` of its key pair in the token.
    pub token_id: Vec<u8>,
    /// Its lifecycle state.
    pub state: KeyState,
    /// When it was generated, seconds since the epoch.
    pub created_at: u64,
    /// When it entered its current state, seconds since the epoch.
    pub updated_at: u64,
    /// Its attestation certificate (DER).
    pub certificate: Vec<u8>,
}

/// One state a key entered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateChange {
    /// The state it left; `None` when the key was created (or imported) in `to`.
    pub from: Option<KeyState>,
    /// The state it entered.
    pub to: KeyState,
    /// When, seconds since the epoch.
    pub at: u64,
    /// Who: `lifecycle`, `cli`, `admin ...`, `import`.
    pub actor: String,
}

/// One key's move from one state to the next: a compare-and-set.
#[derive(Clone, Copy, Debug)]
pub struct StateMove<'a> {
    /// The key.
    pub kid: &'a str,
    /// The state it must still be in.
    pub from: KeyState,
    /// The state it moves to.
    pub to: KeyState,
}

/// Why a key could not be written.
#[derive(Debug, thiserror::Error)]
pub enum KeyWriteError {
    /// The issuer signs with another key already.
    #[error("issuer {issuer:?} already has active key {kid}")]
    ActiveExists {
        /// The issuer.
        issuer: String,
        /// Its active key.
        kid: String,
    },
    /// The issuer has a successor already.
    #[error("issuer {issuer:?} already has pending key {kid}")]
    PendingExists {
        /// The issuer.
        issuer: String,
        /// Its pending key.
        kid: String,
    },
    /// A rotation needs an active key to rotate from.
    #[error("issuer {0:?} has no active key")]
    NoActive(String),
    /// No such key.
    #[error("no key {0} in the state store")]
    NoKey(String),
    /// The key is there already.
    #[error("key {0} is already in the state store")]
    Exists(String),
    /// The compare-and-set lost: another process changed the key first.
    #[error("key {kid} is {now}, no longer {expected}: another process changed it first")]
    StateChanged {
        /// The key.
        kid: String,
        /// The state the change started from.
        expected: KeyState,
        /// The state it is in now.
        now: KeyState,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The port for key metadata. Rows are only ever added or moved forward in state;
/// nothing here deletes a key.
pub trait KeyMetadata: Send + Sync {
    /// Every key, ordered by issuer, creation time and kid.
    fn keys(&self) -> BoxFuture<'_, Result<Vec<KeyRow>, StoreError>>;

    /// Records a new key (with its certificate) and its first history entry, in one
    /// transaction. Refused if the issuer already has a key in `key.state` when that is
    /// `active` or `pending`, and, with `needs_active`, if the issuer has no active key.
    fn add_key<'a>(
        &'a self,
        key: &'a KeyRow,
        actor: &'a str,
        needs_active: bool,
    ) -> BoxFuture<'a, Result<(), KeyWriteError>>;

    /// Moves key `kid` from `from` to `to` at `at` if it is still in `from`, and records
    /// the change, in one transaction.
    fn set_state<'a>(
        &'a self,
        kid: &'a str,
        from: KeyState,
        to: KeyState,
        at: u64,
        actor: &'a str,
    ) -> BoxFuture<'a, Result<(), KeyWriteError>> {
        Box::pin(async move {
            let moves = [StateMove { kid, from, to }];
            self.set_states(&moves, at, actor).await
        })
    }

    /// Makes every move of `moves`, in order, each as [`KeyMetadata::set_state`] does,
    /// in one transaction: all of them, or none if any fails (a rotation's retirement
    /// and activation, so that no crash leaves an issuer without its active key).
    fn set_states<'a>(
        &'a self,
        moves: &'a [StateMove<'a>],
        at: u64,
        actor: &'a str,
    ) -> BoxFuture<'a, Result<(), KeyWriteError>>;

    /// Every state key `kid` entered, oldest first.
    fn history<'a>(&'a self, kid: &'a str) -> BoxFuture<'a, Result<Vec<StateChange>, StoreError>>;

    /// The attestation CA's certificate and the chain above it (DER); empty if none.
    fn ca_chain(&self) -> BoxFuture<'_, Result<Vec<Vec<u8>>, StoreError>>;

    /// Stores the CA's chain if the store has none; returns whether it did.
    fn put_ca_chain<'a>(
        &'a self,
        chain: &'a [Vec<u8>],
        at: u64,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;
}

/// What [`SqlStore::import_token_keys`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct KeyImport {
    /// Keys whose records and certificates were written into the store.
    pub keys: usize,
    /// Certificates of the attestation CA's chain written into the store.
    pub ca_certificates: usize,
    /// Data and certificate objects destroyed from the token after the commit.
    pub destroyed: usize,
    /// What was left in the token, and why.
    pub left: Vec<String>,
}

impl KeyImport {
    /// Whether anything was imported or destroyed.
    pub fn did_anything(&self) -> bool {
        self.keys + self.ca_certificates + self.destroyed > 0
    }
}

impl std::fmt::Display for KeyImport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "imported {} key(s) and {} attestation CA certificate(s) from the token into the state store; destroyed {} data and certificate object(s) from the token",
            self.keys, self.ca_certificates, self.destroyed
        )?;
        if !self.left.is_empty() {
            write!(f, "; left in the token: {}", self.left.join("; "))?;
        }
        Ok(())
    }
}

fn name_of<T: serde::Serialize>(value: T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(name)) => name,
        other => unreachable!("a unit variant serializes as a string, not {other:?}"),
    }
}

fn parse_name<T: serde::de::DeserializeOwned>(name: String) -> Result<T, sqlx::Error> {
    serde_json::from_value(serde_json::Value::String(name))
        .map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

fn unhex(text: &str) -> Result<Vec<u8>, sqlx::Error> {
    let bad = || sqlx::Error::Decode(format!("token_id {text:?} is not hex").into());
    if !text.len().is_multiple_of(2) {
        return Err(bad());
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2).ok_or_else(bad)?, 16).map_err(|_| bad()))
        .collect()
}

fn unbase64(text: &str) -> Result<Vec<u8>, sqlx::Error> {
    STANDARD
        .decode(text)
        .map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

/// The statement that inserts a key; with [`INSERT_KEY_UNLESS_CONFLICT`], the one that
/// does nothing on any unique conflict.
const INSERT_KEY: &str = "INSERT INTO keys \
     (kid, issuer, algorithm, purpose, token_id, state, created_at, updated_at, certificate) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
const INSERT_KEY_UNLESS_CONFLICT: &str = "INSERT INTO keys \
     (kid, issuer, algorithm, purpose, token_id, state, created_at, updated_at, certificate) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING";

fn key_row(row: &sqlx::any::AnyRow) -> Result<KeyRow, sqlx::Error> {
    let algorithm: String = row.try_get(2)?;
    Ok(KeyRow {
        kid: row.try_get(0)?,
        issuer: row.try_get(1)?,
        algorithm: algorithm
            .parse()
            .map_err(|e: String| sqlx::Error::Decode(e.into()))?,
        purpose: parse_name(row.try_get(3)?)?,
        token_id: unhex(&row.try_get::<String, _>(4)?)?,
        state: parse_name(row.try_get(5)?)?,
        created_at: uint(row.try_get(6)?),
        updated_at: uint(row.try_get(7)?),
        certificate: unbase64(&row.try_get::<String, _>(8)?)?,
    })
}

/// Inserts `key` with `statement` ([`INSERT_KEY`], or [`INSERT_KEY_UNLESS_CONFLICT`] to
/// skip a key that conflicts with a row: its kid, or the issuer's one active or one
/// pending key); returns whether it was inserted. Its first history entry goes with it.
async fn insert_key(
    conn: &mut sqlx::AnyConnection,
    key: &KeyRow,
    actor: &str,
    statement: &'static str,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(statement)
        .bind(&key.kid)
        .bind(&key.issuer)
        .bind(key.algorithm.jws_name())
        .bind(name_of(key.purpose))
        .bind(hex(&key.token_id))
        .bind(key.state.to_string())
        .bind(int(key.created_at))
        .bind(int(key.updated_at))
        .bind(STANDARD.encode(&key.certificate))
        .execute(&mut *conn)
        .await?
        .rows_affected()
        == 1;
    if inserted {
        sqlx::query(
            "INSERT INTO key_state_history (kid, from_state, to_state, at, actor) \
             VALUES ($1, NULL, $2, $3, $4)",
        )
        .bind(&key.kid)
        .bind(key.state.to_string())
        .bind(int(key.updated_at))
        .bind(actor)
        .execute(&mut *conn)
        .await?;
    }
    Ok(inserted)
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

impl SqlStore {
    async fn keys_sql(&self) -> Result<Vec<KeyRow>, StoreError> {
        sqlx::query(
            "SELECT kid, issuer, algorithm, purpose, token_id, state, created_at, updated_at, \
             certificate FROM keys ORDER BY issuer, created_at, kid",
        )
        .fetch_all(self.pool())
        .await
        .and_then(|rows| rows.iter().map(key_row).collect())
        .map_err(failed("reading keys"))
    }

    /// The kid of `issuer`'s key in `state`, if any.
    async fn kid_in_state(
        &self,
        issuer: &str,
        state: KeyState,
    ) -> Result<Option<String>, StoreError> {
        sqlx::query("SELECT kid FROM keys WHERE issuer = $1 AND state = $2")
            .bind(issuer)
            .bind(state.to_string())
            .fetch_optional(self.pool())
            .await
            .and_then(|row| row.map(|r| r.try_get(0)).transpose())
            .map_err(failed("reading keys"))
    }

    async fn add_key_sql(
        &self,
        key: &KeyRow,
        actor: &str,
        needs_active: bool,
    ) -> Result<(), KeyWriteError> {
        let what = "recording a new key";
        let mut tx = self.pool().begin().await.map_err(failed(what))?;
        match insert_key(&mut tx, key, actor, INSERT_KEY).await {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
                drop(tx);
                return Err(self.why_not_unique(key).await?);
            }
            Err(e) => return Err(failed(what)(e).into()),
        }
        if needs_active {
            let active = sqlx::query("SELECT kid FROM keys WHERE issuer = $1 AND state = $2")
                .bind(&key.issuer)
                .bind(KeyState::Active.to_string())
                .fetch_optional(&mut *tx)
                .await
                .map_err(failed(what))?;
            if active.is_none() {
                return Err(KeyWriteError::NoActive(key.issuer.clone()));
            }
        }
        super::notify::commit_notifying(tx)
            .await
            .map_err(failed(what))?;
        Ok(())
    }

    /// Which row a new key conflicted with.
    async fn why_not_unique(&self, key: &KeyRow) -> Result<KeyWriteError, StoreError> {
        let taken = match key.state {
            KeyState::Active | KeyState::Pending => {
                self.kid_in_state(&key.issuer, key.state).await?
            }
            _ => None,
        };
        Ok(match (taken, key.state) {
            (Some(kid), KeyState::Active) => KeyWriteError::ActiveExists {
                issuer: key.issuer.clone(),
                kid,
            },
            (Some(kid), _) => KeyWriteError::PendingExists {
                issuer: key.issuer.clone(),
                kid,
            },
            (None, _) => KeyWriteError::Exists(key.kid.clone()),
        })
    }

    async fn set_states_sql(
        &self,
        moves: &[StateMove<'_>],
        at: u64,
        actor: &str,
    ) -> Result<(), KeyWriteError> {
        let what = "changing a key's state";
        let mut tx = self.pool().begin().await.map_err(failed(what))?;
        for &StateMove { kid, from, to } in moves {
            // The write comes first: it takes the write lock, so the check and the
            // change are one step for every other writer.
            let updated = sqlx::query(
                "UPDATE keys SET state = $3, updated_at = $4 WHERE kid = $1 AND state = $2",
            )
            .bind(kid)
            .bind(from.to_string())
            .bind(to.to_string())
            .bind(int(at))
            .execute(&mut *tx)
            .await;
            let updated = match updated {
                Ok(done) => done.rows_affected(),
                Err(e) if is_unique_violation(&e) => {
                    // Rolled back (every move before this one too) before asking why.
                    drop(tx);
                    let issuer = self.issuer_of(kid).await?;
                    let other = self.kid_in_state(&issuer, to).await?.unwrap_or_default();
                    return Err(match to {
                        KeyState::Active => KeyWriteError::ActiveExists { issuer, kid: other },
                        _ => KeyWriteError::PendingExists { issuer, kid: other },
                    });
                }
                Err(e) => return Err(failed(what)(e).into()),
            };
            if updated != 1 {
                let now = sqlx::query("SELECT state FROM keys WHERE kid = $1")
                    .bind(kid)
                    .fetch_optional(&mut *tx)
                    .await
                    .and_then(|row| row.map(|r| parse_name(r.try_get(0)?)).transpose())
                    .map_err(failed(what))?;
                return Err(match now {
                    None => KeyWriteError::NoKey(kid.to_string()),
                    Some(now) => KeyWriteError::StateChanged {
                        kid: kid.to_string(),
                        expected: from,
                        now,
                    },
                });
            }
            // States only move forward, so a key reaches a state once and the history
            // has a row per state. A second move into one is a state column set back
            // behind its own history (edited, not restored whole) and moved forward
            // again by the rollback check: the first row, the real move, is kept.
            sqlx::query(
                "INSERT INTO key_state_history (kid, from_state, to_state, at, actor) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (kid, to_state) DO NOTHING",
            )
            .bind(kid)
            .bind(from.to_string())
            .bind(to.to_string())
            .bind(int(at))
            .bind(actor)
            .execute(&mut *tx)
            .await
            .map_err(failed(what))?;
        }
        super::notify::commit_notifying(tx)
            .await
            .map_err(failed(what))?;
        Ok(())
    }

    async fn issuer_of(&self, kid: &str) -> Result<String, StoreError> {
        sqlx::query("SELECT issuer FROM keys WHERE kid = $1")
            .bind(kid)
            .fetch_one(self.pool())
            .await
            .and_then(|r| r.try_get(0))
            .map_err(failed("reading keys"))
    }

    async fn history_sql(&self, kid: &str) -> Result<Vec<StateChange>, StoreError> {
        let mut history: Vec<StateChange> = sqlx::query(
            "SELECT from_state, to_state, at, actor FROM key_state_history WHERE kid = $1",
        )
        .bind(kid)
        .fetch_all(self.pool())
        .await
        .and_then(|rows| {
            rows.iter()
                .map(|r| {
                    Ok(StateChange {
                        from: r
                            .try_get::<Option<String>, _>(0)?
                            .map(parse_name)
                            .transpose()?,
                        to: parse_name(r.try_get(1)?)?,
                        at: uint(r.try_get(2)?),
                        actor: r.try_get(3)?,
                    })
                })
                .collect()
        })
        .map_err(failed("reading a key's history"))?;
        // States only move forward, in the order they are declared: within one second,
        // that order is the order they were entered.
        history.sort_by_key(|c| (c.at, c.to as u8));
        Ok(history)
    }

    async fn ca_chain_sql(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        sqlx::query("SELECT certificate FROM attestation_ca_chain ORDER BY position")
            .fetch_all(self.pool())
            .await
            .and_then(|rows| {
                rows.iter()
                    .map(|r| unbase64(&r.try_get::<String, _>(0)?))
                    .collect()
            })
            .map_err(failed("reading the attestation CA chain"))
    }

    async fn put_ca_chain_sql(&self, chain: &[Vec<u8>], at: u64) -> Result<bool, StoreError> {
        let what = "storing the attestation CA chain";
        let mut tx = self.pool().begin().await.map_err(failed(what))?;
        let stored = put_chain(&mut tx, chain, at).await.map_err(failed(what))?;
        super::notify::commit_notifying(tx)
            .await
            .map_err(failed(what))?;
        Ok(stored)
    }

    /// Moves key metadata kept as objects in the token (state records, key certificates
    /// and the CA chain, as versions before the state store wrote them) into the store:
    /// the newest record of each key with its certificate, and the CA chain if the store
    /// has none, in one transaction; only after it commits are the objects the store now
    /// holds destroyed, never a key pair. Run at every start, like
    /// [`SqlStore::import_token_revocations`], so objects left by an interrupted import
    /// are taken up again (a key already in the store keeps its row: the store is the
    /// truth once it has one).
    pub async fn import_token_keys(&self, hsm: &Hsm) -> Result<KeyImport, StoreError> {
        let objects = token_keys::list(hsm).await?;
        if objects.is_empty() {
            return Ok(KeyImport::default());
        }
        let what = "importing key metadata from the token";
        let mut report = KeyImport {
            left: objects.unreadable.clone(),
            ..KeyImport::default()
        };
        let mut newest: std::collections::BTreeMap<&str, &TokenKeyRecord> = Default::default();
        for (record, _) in &objects.records {
            let newer = newest.get(record.kid.as_str()).is_none_or(|have| {
                // On a tie (two writers raced), revocation wins: it is terminal.
                record.revision > have.revision
                    || (record.revision == have.revision
                        && record.state == KeyState::Revoked
                        && have.state != KeyState::Revoked)
            });
            if newer {
                newest.insert(&record.kid, record);
            }
        }
        let certificate_of = |kid: &str| {
            objects
                .key_certificates
                .iter()
                .find(|c| c.label == format!("{KEY_CERT_PREFIX}{kid}"))
        };
        let mut rows = Vec::new();
        for record in newest.values() {
            let Some(certificate) = certificate_of(&record.kid) else {
                report.left.push(format!(
                    "the state record of key {} (no certificate object to import with it)",
                    record.kid
                ));
                continue;
            };
            rows.push(KeyRow {
                kid: record.kid.clone(),
                issuer: record.issuer.clone(),
                algorithm: record.alg,
                purpose: record.purpose,
                token_id: record.kid.as_bytes().to_vec(),
                state: record.state,
                created_at: record.created_at,
                updated_at: if record.changed_at == 0 {
                    record.created_at
                } else {
                    record.changed_at
                },
                certificate: certificate.value.clone(),
            });
        }
        let chain: Vec<Vec<u8>> = objects.ca_chain.iter().map(|c| c.value.clone()).collect();
        let mut tx = self.pool().begin().await.map_err(failed(what))?;
        for row in &rows {
            // DO NOTHING on any conflict: a key the store has keeps its row, and one that
            // would be a second active or pending key of its issuer stays in the token,
            // reported below, rather than failing the whole import.
            if insert_key(&mut tx, row, "import", INSERT_KEY_UNLESS_CONFLICT)
                .await
                .map_err(failed(what))?
            {
                report.keys += 1;
            }
        }
        if !chain.is_empty()
            && put_chain(&mut tx, &chain, crate::util::unix_now())
                .await
                .map_err(failed(what))?
        {
            report.ca_certificates = chain.len();
        }
        super::notify::commit_notifying(tx)
            .await
            .map_err(failed(what))?;

        // Destroy exactly what the committed store holds: records of keys it has, and
        // certificates equal to its own.
        let stored: std::collections::HashMap<String, Vec<u8>> = self
            .keys_sql()
            .await?
            .into_iter()
            .map(|k| (k.kid, k.certificate))
            .collect();
        for (record, object) in &objects.records {
            if stored.contains_key(&record.kid) {
                if hsm
                    .destroy_data(DATA_APPLICATION, &object.label, &object.value)
                    .await?
                {
                    report.destroyed += 1;
                }
            } else if newest.get(record.kid.as_str()) == Some(&record)
                && certificate_of(&record.kid).is_some()
            {
                report.left.push(format!(
                    "the state record of key {} ({} for issuer {}): the store refused it (the issuer already has a {} key?)",
                    record.kid, record.state, record.issuer, record.state
                ));
            }
        }
        for cert in &objects.key_certificates {
            let kid = &cert.label[KEY_CERT_PREFIX.len()..];
            if stored.get(kid) == Some(&cert.value) {
                if hsm
                    .destroy_certificate(&cert.id, &cert.label, &cert.value)
                    .await?
                {
                    report.destroyed += 1;
                }
            } else if !newest.contains_key(kid) {
                report.left.push(format!(
                    "the certificate of key {kid} (no state record: an interrupted generation; `signetd keys finish` or `destroy-incomplete` clears it)"
                ));
            }
        }
        let stored_chain = self.ca_chain_sql().await?;
        for (i, cert) in objects.ca_chain.iter().enumerate() {
            if stored_chain.get(i) == Some(&cert.value) {
                if hsm
                    .destroy_certificate(&cert.id, &cert.label, &cert.value)
                    .await?
                {
                    report.destroyed += 1;
                }
            } else {
                report.left.push(format!(
                    "attestation CA certificate {:?}: the store holds another chain",
                    cert.label
                ));
            }
        }
        if report.did_anything() || !report.left.is_empty() {
            tracing::info!(
                imported_keys = report.keys,
                imported_ca_certificates = report.ca_certificates,
                destroyed = report.destroyed,
                store = %self.location(),
                "{report}"
            );
        }
        Ok(report)
    }
}

/// Inserts `chain` unless the store has a chain; returns whether it did.
async fn put_chain(
    conn: &mut sqlx::AnyConnection,
    chain: &[Vec<u8>],
    at: u64,
) -> Result<bool, sqlx::Error> {
    // Position 0 first: of two writers, the second conflicts and stores nothing.
    for (position, der) in chain.iter().enumerate() {
        let inserted = sqlx::query(
            "INSERT INTO attestation_ca_chain (position, certificate, stored_at) \
             VALUES ($1, $2, $3) ON CONFLICT (position) DO NOTHING",
        )
        .bind(i64::try_from(position).unwrap_or(i64::MAX))
        .bind(STANDARD.encode(der))
        .bind(int(at))
        .execute(&mut *conn)
        .await?
        .rows_affected();
        if inserted == 0 {
            return Ok(false);
        }
    }
    Ok(true)
}

impl KeyMetadata for SqlStore {
    fn keys(&self) -> BoxFuture<'_, Result<Vec<KeyRow>, StoreError>> {
        Box::pin(self.keys_sql())
    }

    fn add_key<'a>(
        &'a self,
        key: &'a KeyRow,
        actor: &'a str,
        needs_active: bool,
    ) -> BoxFuture<'a, Result<(), KeyWriteError>> {
        Box::pin(self.add_key_sql(key, actor, needs_active))
    }

    fn set_states<'a>(
        &'a self,
        moves: &'a [StateMove<'a>],
        at: u64,
        actor: &'a str,
    ) -> BoxFuture<'a, Result<(), KeyWriteError>> {
        Box::pin(self.set_states_sql(moves, at, actor))
    }

    fn history<'a>(&'a self, kid: &'a str) -> BoxFuture<'a, Result<Vec<StateChange>, StoreError>> {
        Box::pin(self.history_sql(kid))
    }

    fn ca_chain(&self) -> BoxFuture<'_, Result<Vec<Vec<u8>>, StoreError>> {
        Box::pin(self.ca_chain_sql())
    }

    fn put_ca_chain<'a>(
        &'a self,
        chain: &'a [Vec<u8>],
        at: u64,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        Box::pin(self.put_ca_chain_sql(chain, at))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::test_db::{Engine, TestDb};

    /// Each test named here runs twice, once per engine, on a database of its own.
    macro_rules! on_both_engines {
        ($($test:ident),* $(,)?) => {
            mod sqlite {
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                    async fn $test() {
                        let db = super::TestDb::new(super::Engine::Sqlite).await.unwrap();
                        super::$test(super::two_stores(&db).await).await;
                    }
                )*
            }
            mod postgres {
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                    async fn $test() {
                        let Some(db) = super::TestDb::new(super::Engine::Postgres).await else {
                            return;
                        };
                        super::$test(super::two_stores(&db).await).await;
                    }
                )*
            }
        };
    }

    on_both_engines!(
        a_key_round_trips_with_its_history,
        an_issuer_has_at_most_one_active_and_one_pending_key,
        concurrent_transitions_from_two_connections_are_serialized,
        concurrent_rotations_of_one_issuer_leave_one_pending_key,
        a_transition_of_a_key_not_there_says_so,
        the_ca_chain_is_stored_once,
        a_promotion_retires_and_activates_together_or_not_at_all,
    );

    /// Two stores on one database: two connection pools, as the daemon and a CLI
    /// command have.
    type Two = (Arc<SqlStore>, Arc<SqlStore>);

    async fn two_stores(db: &TestDb) -> Two {
        let one = SqlStore::open(db.location()).await.unwrap();
        let other = SqlStore::open(db.location()).await.unwrap();
        (Arc::new(one), Arc::new(other))
    }

    fn row(kid: &str, issuer: &str, state: KeyState) -> KeyRow {
        KeyRow {
            kid: kid.to_string(),
            issuer: issuer.to_string(),
            algorithm: Algorithm::EdDsa,
            purpose: KeyPurpose::Raw,
            token_id: kid.as_bytes().to_vec(),
            state,
            created_at: 10,
            updated_at: 10,
            certificate: vec![0x30, 0x03, 1, 2, 3],
        }
    }

    async fn a_key_round_trips_with_its_history((store, _): Two) {
        let key = row("a-1", "a", KeyState::Active);
        store.add_key(&key, "test", false).await.unwrap();
        assert_eq!(store.keys().await.unwrap(), vec![key.clone()]);
        store
            .set_state("a-1", KeyState::Active, KeyState::Retired, 20, "lifecycle")
            .await
            .unwrap();
        let history = store.history("a-1").await.unwrap();
        assert_eq!(
            history,
            vec![
                StateChange {
                    from: None,
                    to: KeyState::Active,
                    at: 10,
                    actor: "test".into()
                },
                StateChange {
                    from: Some(KeyState::Active),
                    to: KeyState::Retired,
                    at: 20,
                    actor: "lifecycle".into()
                },
            ]
        );
        let stored = &store.keys().await.unwrap()[0];
        assert_eq!((stored.state, stored.updated_at), (KeyState::Retired, 20));
        assert!(matches!(
            store.add_key(&key, "test", false).await,
            Err(KeyWriteError::Exists(kid)) if kid == "a-1"
        ));
    }

    async fn an_issuer_has_at_most_one_active_and_one_pending_key((store, _): Two) {
        assert!(matches!(
            store
                .add_key(&row("b-0", "b", KeyState::Pending), "test", true)
                .await,
            Err(KeyWriteError::NoActive(issuer)) if issuer == "b"
        ));
        assert!(store.keys().await.unwrap().is_empty(), "rolled back");
        store
            .add_key(&row("b-1", "b", KeyState::Active), "test", false)
            .await
            .unwrap();
        assert!(matches!(
            store.add_key(&row("b-2", "b", KeyState::Active), "test", false).await,
            Err(KeyWriteError::ActiveExists { kid, .. }) if kid == "b-1"
        ));
        store
            .add_key(&row("b-3", "b", KeyState::Pending), "test", true)
            .await
            .unwrap();
        assert!(matches!(
            store.add_key(&row("b-4", "b", KeyState::Pending), "test", true).await,
            Err(KeyWriteError::PendingExists { kid, .. }) if kid == "b-3"
        ));
        // Activating the successor before the current key retires is refused.
        assert!(matches!(
            store
                .set_state("b-3", KeyState::Pending, KeyState::Active, 11, "test")
                .await,
            Err(KeyWriteError::ActiveExists { kid, .. }) if kid == "b-1"
        ));
        // Another issuer is not affected.
        store
            .add_key(&row("c-1", "c", KeyState::Active), "test", false)
            .await
            .unwrap();
    }

    /// A rotation's two moves are one transaction: when the second is refused (the
    /// pending key was revoked by another process meanwhile), the first is rolled back
    /// and the issuer keeps its active key.
    async fn a_promotion_retires_and_activates_together_or_not_at_all((daemon, cli): Two) {
        daemon
            .add_key(&row("p-1", "p", KeyState::Active), "test", false)
            .await
            .unwrap();
        daemon
            .add_key(&row("p-2", "p", KeyState::Pending), "test", true)
            .await
            .unwrap();
        let promotion = [
            StateMove {
                kid: "p-1",
                from: KeyState::Active,
                to: KeyState::Retired,
            },
            StateMove {
                kid: "p-2",
                from: KeyState::Pending,
                to: KeyState::Active,
            },
        ];
        cli.set_state("p-2", KeyState::Pending, KeyState::Revoked, 15, "cli")
            .await
            .unwrap();
        assert!(matches!(
            daemon.set_states(&promotion, 20, "lifecycle").await,
            Err(KeyWriteError::StateChanged { kid, now: KeyState::Revoked, .. }) if kid == "p-2"
        ));
        let states = |keys: Vec<KeyRow>| -> Vec<(String, KeyState)> {
            keys.into_iter().map(|k| (k.kid, k.state)).collect()
        };
        assert_eq!(
            states(daemon.keys().await.unwrap()),
            [
                ("p-1".into(), KeyState::Active),
                ("p-2".into(), KeyState::Revoked)
            ],
            "the retirement was rolled back with the refused activation"
        );
        assert_eq!(
            daemon.history("p-1").await.unwrap().len(),
            1,
            "no retirement recorded"
        );

        // With a pending key still pending, both moves land, each with its history row.
        daemon
            .add_key(&row("p-3", "p", KeyState::Pending), "test", true)
            .await
            .unwrap();
        let promotion = [
            promotion[0],
            StateMove {
                kid: "p-3",
                ..promotion[1]
            },
        ];
        daemon
            .set_states(&promotion, 30, "lifecycle")
            .await
            .unwrap();
        assert_eq!(
            states(cli.keys().await.unwrap()),
            [
                ("p-1".into(), KeyState::Retired),
                ("p-2".into(), KeyState::Revoked),
                ("p-3".into(), KeyState::Active)
            ]
        );
        for kid in ["p-1", "p-3"] {
            let last = daemon.history(kid).await.unwrap().pop().unwrap();
            assert_eq!((last.at, last.actor.as_str()), (30, "lifecycle"), "{kid}");
        }
    }

    /// The daemon and a CLI command moving one key from the same state at once: the
    /// database orders them, one wins, the other is told the key changed under it.
    async fn concurrent_transitions_from_two_connections_are_serialized((daemon, cli): Two) {
        for i in 0..8 {
            let kid = format!("d-{i}");
            daemon
                .add_key(
                    &row(&kid, &format!("d{i}"), KeyState::Active),
                    "test",
                    false,
                )
                .await
                .unwrap();
            let retire = {
                let (daemon, kid) = (daemon.clone(), kid.clone());
                tokio::spawn(async move {
                    daemon
                        .set_state(&kid, KeyState::Active, KeyState::Retired, 20, "lifecycle")
                        .await
                })
            };
            let revoke = {
                let (cli, kid) = (cli.clone(), kid.clone());
                tokio::spawn(async move {
                    cli.set_state(&kid, KeyState::Active, KeyState::Revoked, 20, "cli")
                        .await
                })
            };
            let outcomes = [retire.await.unwrap(), revoke.await.unwrap()];
            let won: Vec<_> = outcomes.iter().filter(|o| o.is_ok()).collect();
            assert_eq!(won.len(), 1, "{outcomes:?}");
            let lost = outcomes.iter().find_map(|o| o.as_ref().err()).unwrap();
            let now = daemon
                .keys()
                .await
                .unwrap()
                .into_iter()
                .find(|k| k.kid == kid)
                .unwrap()
                .state;
            assert!(
                matches!(lost, KeyWriteError::StateChanged { expected: KeyState::Active, now: n, .. } if *n == now),
                "{lost:?}"
            );
            // One history entry per state entered: the loser left none.
            assert_eq!(cli.history(&kid).await.unwrap().len(), 2);
        }
    }

    /// Two rotations of one issuer at once, from two connections: one pending key.
    async fn concurrent_rotations_of_one_issuer_leave_one_pending_key((daemon, cli): Two) {
        daemon
            .add_key(&row("e-1", "e", KeyState::Active), "test", false)
            .await
            .unwrap();
        let tasks: Vec<_> = (0..6)
            .map(|i| {
                let store = if i % 2 == 0 {
                    daemon.clone()
                } else {
                    cli.clone()
                };
                tokio::spawn(async move {
                    store
                        .add_key(
                            &row(&format!("e-p{i}"), "e", KeyState::Pending),
                            "test",
                            true,
                        )
                        .await
                })
            })
            .collect();
        let mut added = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(()) => added += 1,
                Err(KeyWriteError::PendingExists { .. }) => {}
                Err(other) => panic!("{other:?}"),
            }
        }
        assert_eq!(added, 1);
        let pending = daemon
            .keys()
            .await
            .unwrap()
            .into_iter()
            .filter(|k| k.state == KeyState::Pending)
            .count();
        assert_eq!(pending, 1);
    }

    async fn a_transition_of_a_key_not_there_says_so((store, _): Two) {
        assert!(matches!(
            store
                .set_state("nope", KeyState::Active, KeyState::Retired, 1, "test")
                .await,
            Err(KeyWriteError::NoKey(kid)) if kid == "nope"
        ));
    }

    async fn the_ca_chain_is_stored_once((store, other): Two) {
        assert!(store.ca_chain().await.unwrap().is_empty());
        let chain = vec![vec![1, 2], vec![3]];
        assert!(store.put_ca_chain(&chain, 5).await.unwrap());
        assert!(!other.put_ca_chain(&[vec![9]], 6).await.unwrap());
        assert_eq!(other.ca_chain().await.unwrap(), chain);
    }
}
