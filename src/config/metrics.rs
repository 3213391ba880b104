//! `[metrics]`: who may read `GET /metrics`, and a plain listener that serves only it.

use std::net::SocketAddr;

use serde::Deserialize;

use super::{ConfigError, field_error};
use crate::identity::CallerSelector;

/// `[metrics]`. Local callers on the Unix socket may always read `/metrics`; over TLS
/// only the certificate holders `callers` names; anonymous callers (TLS without a
/// client certificate, the loopback HTTP listener) only with `allow_anonymous`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// A plain HTTP listener that serves `/metrics` and nothing else, to anyone who can
    /// reach it (default: none). A loopback address unless `allow_anonymous`.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// Who may read `/metrics` over TLS ([`CallerSelector`]s such as
    /// `"spiffe://example.org/prometheus"`).
    #[serde(default)]
    pub callers: Vec<CallerSelector>,
    /// Whether anonymous callers may read `/metrics` on the TLS and loopback listeners,
    /// and whether `listen` may be a non-loopback address (default false).
    #[serde(default)]
    pub allow_anonymous: bool,
}

impl MetricsConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if let Some(addr) = self.listen
            && !addr.ip().is_loopback()
            && !self.allow_anonymous
        {
            return Err(field_error(
                "metrics.listen",
                format!(
                    "{addr} is not a loopback address: its callers are anonymous, and anonymous \
                     remote callers read metrics only with allow_anonymous = true"
                ),
            ));
        }
        Ok(())
    }
}
