//! What a reload (SIGHUP) may change, and what only a restart can.
//!
//! Issuers, who may do what (`[admin]`, `[verify]`, each issuer's callers), rate limits,
//! the request deadline, `[jwks]`, `[attestation]` and `[lifecycle]` are read per
//! request or per tick, so a new config takes effect at once. The rest is bound to
//! something opened at start (the token and its sessions, the sockets, the audit log,
//! the state store, this replica's name in every record, the per-connection limits of
//! the HTTP server): a config that changes it is refused whole, so the running daemon
//! never runs on a mix that neither file describes.

use std::collections::BTreeMap;

use super::Config;

/// How a new config differs from the running one.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ConfigChanges {
    /// Settings that only take effect at a restart, by name (`"pkcs11"`,
    /// `"limits.max_header_bytes"`): a reload that changes any is refused.
    pub restart_required: Vec<&'static str>,
    /// Issuers the new config adds.
    pub issuers_added: Vec<String>,
    /// Issuers the new config no longer has.
    pub issuers_removed: Vec<String>,
    /// Issuers whose settings changed.
    pub issuers_changed: Vec<String>,
    /// Other reloadable sections that changed (`"admin"`, `"limits"`, ...).
    pub sections_changed: Vec<&'static str>,
}

impl ConfigChanges {
    /// One line for logs and the audit record: what the reload changes.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        let mut list = |what: &str, names: &[String]| {
            if !names.is_empty() {
                parts.push(format!("{what}: {}", names.join(", ")));
            }
        };
        list("issuers added", &self.issuers_added);
        list("issuers removed", &self.issuers_removed);
        list("issuers changed", &self.issuers_changed);
        let sections: Vec<String> = self
            .sections_changed
            .iter()
            .map(|s| s.to_string())
            .collect();
        list("sections changed", &sections);
        if parts.is_empty() {
            "no changes".to_string()
        } else {
            parts.join("; ")
        }
    }
}

impl Config {
    /// How `new` differs from `self`.
    pub fn changes_to(&self, new: &Config) -> ConfigChanges {
        let (old_limits, new_limits) = (&self.limits, &new.limits);
        let restart = differing([
            ("pkcs11", self.pkcs11 == new.pkcs11),
            ("listen", self.listen == new.listen),
            ("tls", self.tls == new.tls),
            (
                "audit",
                self.audit.without_auditors() == new.audit.without_auditors(),
            ),
            ("store", self.store == new.store),
            ("replica", self.replica == new.replica),
            ("metrics.listen", self.metrics.listen == new.metrics.listen),
            (
                "limits.max_connections_per_principal",
                old_limits.max_connections_per_principal
                    == new_limits.max_connections_per_principal,
            ),
            (
                "limits.max_header_bytes",
                old_limits.max_header_bytes == new_limits.max_header_bytes,
            ),
            (
                "limits.idle_timeout_seconds",
                old_limits.idle_timeout_seconds == new_limits.idle_timeout_seconds,
            ),
        ]);
        let sections = differing([
            ("admin", self.admin == new.admin),
            ("verify", self.verify == new.verify),
            ("jwks", self.jwks == new.jwks),
            ("attestation", self.attestation == new.attestation),
            ("lifecycle", self.lifecycle == new.lifecycle),
            ("cors", self.cors == new.cors),
            ("audit.auditors", self.audit.auditors == new.audit.auditors),
            (
                "metrics",
                self.metrics.callers == new.metrics.callers
                    && self.metrics.allow_anonymous == new.metrics.allow_anonymous,
            ),
            (
                "limits",
                old_limits.rate_per_principal == new_limits.rate_per_principal
                    && old_limits.rate_per_issuer == new_limits.rate_per_issuer
                    && old_limits.request_timeout_seconds == new_limits.request_timeout_seconds,
            ),
        ]);
        let (added, removed, changed) = diff(&self.issuers, &new.issuers);
        ConfigChanges {
            restart_required: restart,
            issuers_added: added,
            issuers_removed: removed,
            issuers_changed: changed,
            sections_changed: sections,
        }
    }
}

/// The names whose settings are not the same, in order.
fn differing<const N: usize>(compared: [(&'static str, bool); N]) -> Vec<&'static str> {
    compared
        .into_iter()
        .filter(|(_, same)| !same)
        .map(|(name, _)| name)
        .collect()
}

/// Names added, removed and changed between two maps.
fn diff<V: PartialEq>(
    old: &BTreeMap<String, V>,
    new: &BTreeMap<String, V>,
) -> (Vec<String>, Vec<String>, Vec<String>) {
    let added = new
        .keys()
        .filter(|k| !old.contains_key(*k))
        .cloned()
        .collect();
    let removed = old
        .keys()
        .filter(|k| !new.contains_key(*k))
        .cloned()
        .collect();
    let changed = new
        .iter()
        .filter(|(k, v)| old.get(*k).is_some_and(|o| o != *v))
        .map(|(k, _)| k.clone())
        .collect();
    (added, removed, changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[pkcs11]
module = "/usr/lib/softhsm/libsofthsm2.so"
token_label = "t"
pin_env = "PIN"

[issuers.a]
iss = "https://a"
audiences = ["x"]
callers = ["uid:1000"]
"#;

    fn parse(extra: &str) -> Config {
        Config::parse(&format!("{BASE}{extra}")).expect("test config parses")
    }

    #[test]
    fn the_same_config_changes_nothing() {
        let changes = parse("").changes_to(&parse(""));
        assert_eq!(changes, ConfigChanges::default());
        assert_eq!(changes.summary(), "no changes");
    }

    #[test]
    fn issuers_policy_and_rates_reload() {
        let old = parse("");
        let new = parse(
            r#"
[admin]
callers = ["uid:0"]

[limits]
rate_per_principal = "5/s"

[issuers.b]
iss = "https://b"
audiences = ["y"]
callers = ["uid:1"]
"#,
        );
        let changes = old.changes_to(&new);
        assert!(changes.restart_required.is_empty(), "{changes:?}");
        assert_eq!(changes.issuers_added, ["b"]);
        assert_eq!(changes.sections_changed, ["admin", "limits"]);
        assert_eq!(
            changes.summary(),
            "issuers added: b; sections changed: admin, limits"
        );
        let changed =
            parse("").changes_to(&Config::parse(&BASE.replace("x\"]", "x\", \"z\"]")).unwrap());
        assert_eq!(changed.issuers_changed, ["a"]);
        let removed = new.changes_to(&old);
        assert_eq!(removed.issuers_removed, ["b"]);
    }

    #[test]
    fn what_is_opened_at_start_needs_a_restart() {
        let old = parse("");
        let new = parse(
            r#"
[listen]
socket = "/elsewhere.sock"

[limits]
max_header_bytes = 8192

[replica]
name = "r2"
"#,
        );
        let changes = old.changes_to(&new);
        assert_eq!(
            changes.restart_required,
            ["listen", "replica", "limits.max_header_bytes"]
        );
        let module = Config::parse(&BASE.replace("softhsm2.so", "other.so")).unwrap();
        assert_eq!(old.changes_to(&module).restart_required, ["pkcs11"]);
    }
}
