//! Rate limits on signing: per principal and per issuer, from `[limits]` and each
//! issuer's overrides, checked before anything is signed.
//!
//! Each issuer has one limiter for all its callers together and one keyed by principal
//! ([`principal_key`]). Only principals the policy names for the issuer reach the keyed
//! limiter, and its memory is bounded all the same: when it tracks
//! [`MAX_TRACKED_PRINCIPALS`], principals whose allowance is full again are dropped
//! (`retain_recent`); if more than three quarters remain, it forgets them all. Forgetting
//! lets those principals burst once more, but never past the issuer's own limit.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota};

use crate::config::{Config, Rate};
use crate::error::Error;
use crate::identity::Principal;
use crate::telemetry::LimitKind;

/// Most principals whose recent use one issuer's limiter remembers.
pub const MAX_TRACKED_PRINCIPALS: usize = 100_000;

/// The stable string a principal is counted under, for rate limits and connection caps:
/// `uid:N` on the socket, the certificate's identity over TLS, the peer's IP address
/// when anonymous. A uid's processes share it, as do a certificate identity's certificates.
pub fn principal_key(principal: &Principal) -> String {
    match principal {
        Principal::Local(peer) => format!("uid:{}", peer.uid),
        Principal::Remote { certificate, .. } => {
            match (&certificate.spiffe_id, certificate.dns_names.first()) {
                (Some(id), _) => id.clone(),
                (None, Some(dns)) => format!("dns:{dns}"),
                (None, None) => format!("cert-sha256:{}", crate::util::hex(&certificate.sha256)),
            }
        }
        Principal::Anonymous(Some(addr)) => format!("ip:{}", addr.ip()),
        Principal::Anonymous(None) => "anonymous".to_string(),
    }
}

/// One issuer's limiters.
struct IssuerLimits {
    all: DefaultDirectRateLimiter,
    per_principal: RwLock<DefaultKeyedRateLimiter<String>>,
    /// The quota of `per_principal`, to start afresh with.
    each: Quota,
    /// The rates these limiters were built for: a reload keeps them (and what each
    /// caller has used) unless the rates change.
    rates: (Rate, Rate),
}

/// The rate limits of every configured issuer.
pub struct RateLimits {
    issuers: BTreeMap<String, Arc<IssuerLimits>>,
    clock: DefaultClock,
}

fn quota(rate: Rate) -> Quota {
    let each = rate.period / rate.count.get();
    Quota::with_period(each)
        .expect("a rate's period divided by a u32 is not zero")
        .allow_burst(rate.count)
}

impl RateLimits {
    /// The limits a (validated) config describes.
    pub fn new(config: &Config) -> RateLimits {
        Self::reloaded(config, None)
    }

    /// The limits `config` describes, keeping from `previous` the limiters of issuers
    /// whose rates did not change: a reload neither resets what callers have used nor
    /// hands everyone a fresh burst.
    pub fn reloaded(config: &Config, previous: Option<&RateLimits>) -> RateLimits {
        let defaults = &config.limits;
        let issuers = config
            .issuers
            .iter()
            .map(|(name, issuer)| {
                let all = issuer.rate_per_issuer.unwrap_or(defaults.rate_per_issuer);
                let own = issuer
                    .rate_per_principal
                    .unwrap_or(defaults.rate_per_principal);
                let kept = previous
                    .and_then(|p| p.issuers.get(name))
                    .filter(|l| l.rates == (all, own));
                let limits = match kept {
                    Some(limits) => limits.clone(),
                    None => Arc::new(IssuerLimits {
                        all: DefaultDirectRateLimiter::direct(quota(all)),
                        per_principal: RwLock::new(DefaultKeyedRateLimiter::keyed(quota(own))),
                        each: quota(own),
                        rates: (all, own),
                    }),
                };
                (name.clone(), limits)
            })
            .collect();
        RateLimits {
            issuers,
            clock: DefaultClock::default(),
        }
    }

    /// Takes one request of `principal` to `issuer` from both allowances, or refuses
    /// with [`Error::RateLimited`]. The principal's own allowance is checked first, so a
    /// caller over its limit does not use up the issuer's.
    pub fn check(&self, issuer: &str, principal: &Principal) -> Result<(), Error> {
        let Some(limits) = self.issuers.get(issuer) else {
            return Ok(());
        };
        let key = principal_key(principal);
        let own = {
            let keyed = limits
                .per_principal
                .read()
                .unwrap_or_else(|p| p.into_inner());
            if keyed.len() < MAX_TRACKED_PRINCIPALS {
                Some(keyed.check_key(&key))
            } else {
                None
            }
        };
        let own = match own {
            Some(own) => own,
            None => {
                let mut keyed = limits
                    .per_principal
                    .write()
                    .unwrap_or_else(|p| p.into_inner());
                shrink(&mut keyed, limits.each, issuer);
                keyed.check_key(&key)
            }
        };
        if let Err(not_until) = own {
            let wait = not_until.wait_time_from(self.clock.now());
            crate::telemetry::rate_limited(issuer, LimitKind::Principal);
            return Err(refusal(issuer, "this caller's", wait));
        }
        if let Err(not_until) = limits.all.check() {
            let wait = not_until.wait_time_from(self.clock.now());
            crate::telemetry::rate_limited(issuer, LimitKind::Issuer);
            return Err(refusal(issuer, "the issuer's", wait));
        }
        Ok(())
    }

    /// How many principals `issuer`'s keyed limiter tracks now.
    pub fn tracked(&self, issuer: &str) -> usize {
        self.issuers.get(issuer).map_or(0, |limits| {
            limits
                .per_principal
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .len()
        })
    }
}

/// Makes room in a full keyed limiter: drops the principals whose allowance is full
/// again, and starts afresh if that frees less than a quarter, so each sweep is paid for
/// by at least a quarter of the cap in new principals.
fn shrink(keyed: &mut DefaultKeyedRateLimiter<String>, each: Quota, issuer: &str) {
    if keyed.len() < MAX_TRACKED_PRINCIPALS {
        return; // another request made room meanwhile
    }
    keyed.retain_recent();
    if keyed.len() > MAX_TRACKED_PRINCIPALS / 4 * 3 {
        tracing::warn!(
            issuer,
            tracked = keyed.len(),
            "rate limiter tracks too many principals; forgetting their recent use (the issuer's limit still holds)"
        );
        *keyed = DefaultKeyedRateLimiter::keyed(each);
    } else {
        keyed.shrink_to_fit();
    }
}

fn refusal(issuer: &str, whose: &'static str, wait: Duration) -> Error {
    Error::RateLimited {
        issuer: issuer.to_string(),
        whose,
        retry_after_seconds: retry_after(wait),
    }
}

/// Whole seconds to wait, rounded up, at least one (`Retry-After` takes no fractions,
/// and `0` would invite an immediate retry that fails again).
pub fn retry_after(wait: Duration) -> u64 {
    let whole = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    whole.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::PeerCredentials;

    fn limits(issuers: &str) -> RateLimits {
        let text = format!(
            "[pkcs11]\nmodule = \"/m.so\"\ntoken_label = \"t\"\npin_env = \"P\"\n\
             [limits]\nrate_per_principal = \"3/m\"\nrate_per_issuer = \"1000000/s\"\n{issuers}"
        );
        RateLimits::new(&Config::parse(&text).unwrap())
    }

    fn issuer(name: &str, extra: &str) -> String {
        format!(
            "[issuers.{name}]\niss = \"https://{name}\"\naudiences = [\"a\"]\ncallers = [\"gid:1\"]\n{extra}\n"
        )
    }

    fn uid(uid: u32) -> Principal {
        Principal::Local(PeerCredentials {
            uid,
            gid: 1,
            pid: None,
        })
    }

    fn retry_after_of(result: Result<(), Error>) -> (u64, &'static str) {
        match result {
            Err(Error::RateLimited {
                retry_after_seconds,
                whose,
                ..
            }) => (retry_after_seconds, whose),
            other => panic!("expected rate_limited, got {other:?}"),
        }
    }

    #[test]
    fn a_principal_over_its_limit_waits_while_others_go_on() {
        let limits = limits(&format!("{}{}", issuer("a", ""), issuer("b", "")));
        for _ in 0..3 {
            limits.check("a", &uid(1)).unwrap();
        }
        let (wait, whose) = retry_after_of(limits.check("a", &uid(1)));
        // 3 a minute: the next one comes 20 s after the burst began.
        assert!((1..=20).contains(&wait), "{wait}");
        assert_eq!(whose, "this caller's");
        limits.check("a", &uid(2)).unwrap();
        limits.check("b", &uid(1)).unwrap();
    }

    #[test]
    fn an_issuer_limit_holds_for_all_principals_together() {
        let limits = limits(&issuer(
            "c",
            "rate_per_issuer = \"2/h\"\nrate_per_principal = \"10/s\"",
        ));
        limits.check("c", &uid(1)).unwrap();
        limits.check("c", &uid(2)).unwrap();
        let (wait, whose) = retry_after_of(limits.check("c", &uid(3)));
        assert!((1..=1800).contains(&wait), "{wait}");
        assert_eq!(whose, "the issuer's");
    }

    #[test]
    fn a_reload_keeps_what_callers_used_unless_the_rates_change() {
        let config = |a_rate: &str| {
            let text = format!(
                "[pkcs11]\nmodule = \"/m.so\"\ntoken_label = \"t\"\npin_env = \"P\"\n\
                 [limits]\nrate_per_principal = \"3/m\"\n{}{}",
                issuer("a", a_rate),
                issuer("b", "")
            );
            Config::parse(&text).unwrap()
        };
        let before = RateLimits::new(&config(""));
        for _ in 0..3 {
            before.check("a", &uid(1)).unwrap();
            before.check("b", &uid(1)).unwrap();
        }
        // Same rates for b: its caller is still out of allowance after the reload.
        let after = RateLimits::reloaded(&config("rate_per_principal = \"5/m\""), Some(&before));
        retry_after_of(after.check("b", &uid(1)));
        // a's rate changed: its limiter starts afresh with the new allowance.
        for _ in 0..5 {
            after.check("a", &uid(1)).unwrap();
        }
        retry_after_of(after.check("a", &uid(1)));
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after(Duration::ZERO), 1);
        assert_eq!(retry_after(Duration::from_millis(1)), 1);
        assert_eq!(retry_after(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after(Duration::from_secs(20)), 20);
    }

    #[test]
    fn principals_are_keyed_by_a_stable_identity() {
        use crate::identity::CertificateIdentity;
        let pid = |pid| {
            Principal::Local(PeerCredentials {
                uid: 7,
                gid: 8,
                pid: Some(pid),
            })
        };
        assert_eq!(principal_key(&pid(1)), principal_key(&pid(2)));
        let cert = |spiffe: Option<&str>, dns: &[&str]| Principal::Remote {
            addr: Some("10.0.0.1:1234".parse().unwrap()),
            certificate: CertificateIdentity {
                spiffe_id: spiffe.map(str::to_string),
                dns_names: dns.iter().map(|d| d.to_string()).collect(),
                sha256: [0xab; 32],
            },
        };
        assert_eq!(
            principal_key(&cert(Some("spiffe://td/a"), &["x"])),
            "spiffe://td/a"
        );
        assert_eq!(principal_key(&cert(None, &["x.example"])), "dns:x.example");
        assert_eq!(
            principal_key(&cert(None, &[])),
            format!("cert-sha256:{}", "ab".repeat(32))
        );
        let anon = |port| Principal::Anonymous(Some(format!("127.0.0.2:{port}").parse().unwrap()));
        assert_eq!(principal_key(&anon(1)), principal_key(&anon(2)));
    }

    #[test]
    fn the_principals_tracked_stay_bounded() {
        let limits = limits(&issuer("d", ""));
        let cycles = MAX_TRACKED_PRINCIPALS as u32 + 1000;
        for n in 0..cycles {
            let _ = limits.check("d", &uid(n));
            assert!(limits.tracked("d") <= MAX_TRACKED_PRINCIPALS);
        }
        assert!(limits.tracked("d") < MAX_TRACKED_PRINCIPALS);
    }
}
