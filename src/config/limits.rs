//! `[limits]`: how much of the daemon one caller may use (requests, connections,
//! header bytes, time), and the [`Rate`] syntax issuers override it with.

use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::{ConfigError, field_error};

/// `[limits]`: the defaults every issuer inherits, and the per-connection limits.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Mint and sign requests one principal may make to one issuer (default `"1000/s"`).
    /// An issuer's `rate_per_principal` overrides it.
    #[serde(default = "default_rate_per_principal")]
    pub rate_per_principal: Rate,
    /// Mint and sign requests one issuer serves, all principals together (default
    /// `"10000/s"`). An issuer's `rate_per_issuer` overrides it.
    #[serde(default = "default_rate_per_issuer")]
    pub rate_per_issuer: Rate,
    /// Most connections one principal holds at once, per daemon (default 64): a uid on
    /// the socket, a certificate identity over TLS, an address for anonymous peers.
    #[serde(default = "default_connections_per_principal")]
    pub max_connections_per_principal: usize,
    /// Largest request head (request line and headers), in bytes (default 16384).
    /// Larger heads get `431` from the HTTP layer, with no body.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    /// A connection must send each request's headers within this time; a connection
    /// idle before its first request or between requests is closed after it (default 10).
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_seconds: u64,
    /// Longest a request may take from its headers to its response (default 30); past
    /// it the request is answered `503 deadline_exceeded`.
    #[serde(default = "default_request_timeout")]
    pub request_timeout_seconds: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            rate_per_principal: default_rate_per_principal(),
            rate_per_issuer: default_rate_per_issuer(),
            max_connections_per_principal: default_connections_per_principal(),
            max_header_bytes: default_max_header_bytes(),
            idle_timeout_seconds: default_idle_timeout(),
            request_timeout_seconds: default_request_timeout(),
        }
    }
}

fn default_rate_per_principal() -> Rate {
    Rate::new(1000, Duration::from_secs(1))
}
fn default_rate_per_issuer() -> Rate {
    Rate::new(10_000, Duration::from_secs(1))
}
fn default_connections_per_principal() -> usize {
    64
}
fn default_max_header_bytes() -> usize {
    16 * 1024
}
fn default_idle_timeout() -> u64 {
    10
}
fn default_request_timeout() -> u64 {
    30
}

impl LimitsConfig {
    /// The idle timeout as a duration.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_seconds)
    }

    /// The total time limit of a request as a duration.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_seconds)
    }

    pub(super) fn validate(&self, max_connections: usize) -> Result<(), ConfigError> {
        let per_principal = self.max_connections_per_principal;
        if !(1..=max_connections).contains(&per_principal) {
            return Err(field_error(
                "limits.max_connections_per_principal",
                format!("must be between 1 and listen.max_connections ({max_connections})"),
            ));
        }
        // hyper needs 8 KiB of buffer at least; a megabyte of headers is no request.
        if !(4096..=1 << 20).contains(&self.max_header_bytes) {
            return Err(field_error(
                "limits.max_header_bytes",
                "must be between 4096 and 1048576",
            ));
        }
        if !(1..=3600).contains(&self.idle_timeout_seconds) {
            return Err(field_error(
                "limits.idle_timeout_seconds",
                "must be between 1 and 3600",
            ));
        }
        if !(1..=3600).contains(&self.request_timeout_seconds) {
            return Err(field_error(
                "limits.request_timeout_seconds",
                "must be between 1 and 3600",
            ));
        }
        Ok(())
    }
}

/// A rate such as `"100/s"`: at most `count` requests at once, refilled evenly over
/// `period` (`s`, `m` or `h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// The burst, and how many the period refills.
    pub count: NonZeroU32,
    /// The period.
    pub period: Duration,
}

impl Rate {
    fn new(count: u32, period: Duration) -> Rate {
        Rate {
            count: NonZeroU32::new(count).expect("a default rate is not zero"),
            period,
        }
    }
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(text: &str) -> Result<Rate, String> {
        let bad = || format!("{text:?} is not a rate like \"100/s\", \"20/m\" or \"500/h\"");
        let (count, unit) = text.split_once('/').ok_or_else(bad)?;
        let period = match unit.trim() {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            _ => return Err(bad()),
        };
        let count: u32 = count.trim().parse().map_err(|_| bad())?;
        let count = NonZeroU32::new(count)
            .ok_or_else(|| format!("{text:?}: the count must be at least 1"))?;
        Ok(Rate { count, period })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.period.as_secs() {
            1 => "s",
            60 => "m",
            _ => "h",
        };
        write!(f, "{}/{unit}", self.count)
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Rate, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_and_print() {
        for text in ["100/s", "20/m", "500/h"] {
            assert_eq!(text.parse::<Rate>().unwrap().to_string(), text);
        }
        let rate: Rate = "3/m".parse().unwrap();
        assert_eq!((rate.count.get(), rate.period.as_secs()), (3, 60));
        for bad in ["", "100", "0/s", "-1/s", "10/d", "x/s", "10/"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad}");
        }
    }

    const BASE: &str = "[pkcs11]\nmodule = \"/m.so\"\ntoken_label = \"t\"\npin_env = \"P\"\n\
        [issuers.demo]\niss = \"https://i\"\naudiences = [\"a\"]\ncallers = [\"uid:1\"]\n";

    #[test]
    fn defaults_and_issuer_overrides() {
        let config = crate::Config::parse(BASE).unwrap();
        let limits = &config.limits;
        assert_eq!(limits.rate_per_principal.to_string(), "1000/s");
        assert_eq!(limits.rate_per_issuer.to_string(), "10000/s");
        assert_eq!(limits.max_connections_per_principal, 64);
        assert_eq!(limits.max_header_bytes, 16384);
        assert_eq!(limits.idle_timeout_seconds, 10);
        assert_eq!(limits.request_timeout_seconds, 30);
        let config = crate::Config::parse(&format!(
            "{BASE}rate_per_principal = \"5/m\"\nrate_per_issuer = \"50/h\"\n"
        ))
        .unwrap();
        let demo = config.issuer("demo").unwrap();
        assert_eq!(demo.rate_per_principal.unwrap().to_string(), "5/m");
        assert_eq!(demo.rate_per_issuer.unwrap().to_string(), "50/h");
    }

    #[test]
    fn bad_limits_name_their_field() {
        let cases = [
            (
                "[limits]\nmax_connections_per_principal = 0",
                "limits.max_connections_per_principal",
            ),
            (
                "[limits]\nmax_connections_per_principal = 2000",
                "listen.max_connections (1024)",
            ),
            (
                "[limits]\nmax_header_bytes = 100",
                "limits.max_header_bytes",
            ),
            (
                "[limits]\nidle_timeout_seconds = 0",
                "limits.idle_timeout_seconds",
            ),
            (
                "[limits]\nrequest_timeout_seconds = 0",
                "limits.request_timeout_seconds",
            ),
            ("[limits]\nrate_per_issuer = \"0/s\"", "at least 1"),
            (
                "[limits]\nrate_per_principal = \"fast\"",
                "rate_per_principal",
            ),
        ];
        for (table, expected) in cases {
            let error = crate::Config::parse(&format!("{BASE}{table}\n"))
                .unwrap_err()
                .to_string();
            assert!(error.contains(expected), "{table}: {error}");
        }
    }
}
