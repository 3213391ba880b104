//! `[replica]`: this daemon's name among several sharing one token and one state store.
//!
//! A replica's name goes into every record of its audit log (each replica keeps a log
//! of its own), so an auditor holding several logs knows which daemon wrote what.
//! Unset, as on a single host, the records carry no name and are exactly what they were
//! before replicas existed.

use serde::Deserialize;

use super::{ConfigError, field_error};

/// Longest replica name: it is written into every audit record.
const MAX_NAME: usize = 64;

/// `[replica]`.
#[derive(Debug, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicaConfig {
    /// This replica's name: 1 to 64 ASCII letters, digits, `.`, `_` or `-` (a host
    /// name fits). Default: none.
    #[serde(default)]
    pub name: Option<String>,
}

impl ReplicaConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let Some(name) = &self.name else {
            return Ok(());
        };
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if name.is_empty() || name.len() > MAX_NAME || !name.chars().all(allowed) {
            return Err(field_error(
                "replica.name",
                format!(
                    "{name:?} is not a replica name: use 1 to {MAX_NAME} ASCII letters, digits, '.', '_' or '-'"
                ),
            ));
        }
        Ok(())
    }
}
