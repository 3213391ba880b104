//! `[cors]`: which browser origins may read the public documents (JWKS, keys,
//! revocations, SPIFFE bundles) across origins. None by default: no CORS headers at all.

use serde::Deserialize;

use super::{ConfigError, field_error};

/// `[cors]`: cross-origin reads of the public endpoints (docs/profiles.md, "CORS").
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsConfig {
    /// Origins allowed to read the public endpoints, each exactly as a browser sends it
    /// in `Origin`: `"https://app.example"`, `"http://localhost:3000"`. Empty (the
    /// default) answers no origin.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
}

impl CorsConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        for origin in &self.allowed_origins {
            check_origin(origin)
                .map_err(|why| field_error("cors.allowed_origins", format!("{origin:?} {why}")))?;
        }
        Ok(())
    }
}

/// An origin in its serialized form (RFC 6454 §6.2): `scheme://host[:port]`, lower case,
/// no path, user info, query or fragment. Browsers send exactly this in `Origin`, and
/// origins are compared byte for byte, so any other spelling would never match.
fn check_origin(origin: &str) -> Result<(), &'static str> {
    if origin == "*" || origin == "null" {
        return Err(
            "is not allowed: list each origin (public keys need no wildcard, and \"null\" is any sandboxed page)",
        );
    }
    let rest = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
        .ok_or("is not an origin: it starts with https:// or http://")?;
    let (host, port) = match rest.rsplit_once(':') {
        // An IPv6 literal has colons inside its brackets.
        Some((host, port)) if !port.contains(']') => (host, Some(port)),
        _ => (rest, None),
    };
    if host.is_empty() {
        return Err("has no host");
    }
    let host_ok = if let Some(inside) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        inside.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        host.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
    };
    if !host_ok {
        return Err(
            "is not an origin: write scheme://host[:port] in lower case, without path, user info, query or trailing '/'",
        );
    }
    if let Some(port) = port
        && (port.is_empty()
            || port.starts_with('0')
            || !port.chars().all(|c| c.is_ascii_digit())
            || port.parse::<u16>().is_err())
    {
        return Err("has a port that is not a number from 1 to 65535 without leading zeros");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_origin;

    #[test]
    fn origins() {
        for good in [
            "https://app.example",
            "http://localhost:3000",
            "https://127.0.0.1:8443",
            "https://[::1]:8443",
            "https://[::1]",
        ] {
            assert_eq!(check_origin(good), Ok(()), "{good}");
        }
        for bad in [
            "*",
            "null",
            "app.example",
            "ftp://app.example",
            "https://",
            "https://app.example/",
            "https://App.example",
            "https://user@app.example",
            "https://app.example/path",
            "https://app.example?x",
            "https://app.example:",
            "https://app.example:0443",
            "https://app.example:70000",
            "https://[zz]",
        ] {
            assert!(check_origin(bad).is_err(), "{bad}");
        }
    }
}
