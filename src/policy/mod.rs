//! One decision: may this [`Principal`] take this [`Action`]?
//!
//! [`Policy`] is built once from the config's caller lists (`[issuers.NAME] callers`,
//! `[admin] callers`, `[verify] single_use_callers`) and answered by
//! [`Policy::decide`], the only place that knows who may do what. The router asks it
//! before reading a body ([`Action::UseSigningRoutes`], [`Action::Admin`]); the service
//! asks it again for the exact action, so a handler called some other way stays guarded.

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use crate::config::Config;
use crate::error::Error;
use crate::identity::{CallerSelector, Principal};

/// What a principal wants to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action<'a> {
    /// Reach the signing routes at all: decided before the body is read, so processes
    /// that may use no issuer cannot tie up the daemon with slow bodies.
    UseSigningRoutes,
    /// Mint a JWT with the named issuer.
    Mint(&'a str),
    /// Make a raw signature with the named issuer's key.
    RawSign(&'a str),
    /// Verify a token with `single_use`, consuming its `jti`.
    SingleUseVerify,
    /// Use the lifecycle API (keys, token revocations).
    Admin,
    /// Read `GET /metrics`: any local caller; over TLS those `[metrics] callers` names;
    /// anonymous callers only with `[metrics] allow_anonymous`.
    ReadMetrics,
    /// Read the audit log's records and tiles: those `[audit] auditors` names.
    ReadAudit,
}

/// One issuer's part of the policy.
#[derive(Clone, Debug)]
struct IssuerRule {
    callers: Vec<CallerSelector>,
    raw_sign: bool,
}

/// Who may do what, from the config.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    issuers: BTreeMap<String, IssuerRule>,
    admins: Vec<CallerSelector>,
    single_use: Vec<CallerSelector>,
    metrics: Vec<CallerSelector>,
    anonymous_metrics: bool,
    auditors: Vec<CallerSelector>,
}

impl Policy {
    /// The policy a (validated) config describes.
    pub fn new(config: &Config) -> Policy {
        Policy {
            issuers: config
                .issuers
                .iter()
                .map(|(name, issuer)| {
                    let rule = IssuerRule {
                        callers: issuer.callers.clone(),
                        raw_sign: issuer.raw_sign,
                    };
                    (name.clone(), rule)
                })
                .collect(),
            admins: config.admin.callers.clone(),
            single_use: config.verify.single_use_callers.clone(),
            metrics: config.metrics.callers.clone(),
            anonymous_metrics: config.metrics.allow_anonymous,
            auditors: config.audit.auditors.clone(),
        }
    }

    /// Whether any list names `principal`: an issuer's callers, the admins or the
    /// single-use verifiers. Anonymous principals are named nowhere. The audit log
    /// records refusals of named principals one by one and folds the others'
    /// (`audit::aggregate`), so this must stay cheap: one pass over the selectors.
    pub fn names(&self, principal: &Principal) -> bool {
        if !principal.is_authenticated() {
            return false;
        }
        let named = |selectors: &[CallerSelector]| selectors.iter().any(|s| s.matches(principal));
        self.issuers.values().any(|r| named(&r.callers))
            || named(&self.admins)
            || named(&self.single_use)
    }

    /// Allows `principal` to take `action`, or says why not with the error the caller
    /// gets. Anonymous principals are refused every action as unauthenticated, except
    /// single-use verification, which names its permission (anyone may verify without
    /// `single_use`), and reading metrics, which `[metrics] allow_anonymous` may allow.
    pub fn decide(&self, principal: &Principal, action: Action<'_>) -> Result<(), Error> {
        let named = |selectors: &[CallerSelector]| selectors.iter().any(|s| s.matches(principal));
        if action == Action::ReadMetrics {
            return match principal {
                // Whoever can reach the socket is on this host, like the metrics.
                Principal::Local(_) => Ok(()),
                Principal::Anonymous(_) if self.anonymous_metrics => Ok(()),
                Principal::Anonymous(_) => Err(Error::Unauthenticated),
                Principal::Remote { .. } if named(&self.metrics) => Ok(()),
                Principal::Remote { .. } => Err(Error::MetricsNotAllowed),
            };
        }
        if action != Action::SingleUseVerify && !principal.is_authenticated() {
            return Err(Error::Unauthenticated);
        }
        match action {
            Action::UseSigningRoutes if self.issuers.values().any(|r| named(&r.callers)) => Ok(()),
            Action::UseSigningRoutes => Err(Error::CallerUnknown),
            Action::Admin if named(&self.admins) => Ok(()),
            Action::Admin => Err(Error::NotAdmin),
            Action::ReadAudit if named(&self.auditors) => Ok(()),
            Action::ReadAudit => Err(Error::NotAuditor),
            Action::Mint(name) | Action::RawSign(name) => {
                let rule = self
                    .issuers
                    .get(name)
                    .ok_or_else(|| Error::UnknownIssuer(name.to_string()))?;
                if !named(&rule.callers) {
                    return Err(Error::CallerNotAllowed(name.to_string()));
                }
                match (action, rule.raw_sign) {
                    (Action::RawSign(_), false) => Err(Error::RawSignDisabled(name.to_string())),
                    (Action::Mint(_), true) => Err(Error::MintDisabled(name.to_string())),
                    _ => Ok(()),
                }
            }
            Action::SingleUseVerify if named(&self.single_use) => Ok(()),
            Action::SingleUseVerify => Err(Error::CallerNotAllowed(
                "single-use verification".to_string(),
            )),
            Action::ReadMetrics => unreachable!("decided above"),
        }
    }
}
