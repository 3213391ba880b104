//! SPIFFE IDs and trust domain names, as the SPIFFE ID standard (SPIFFE-ID.md, §2)
//! defines them: `spiffe://` + trust domain + path.
//!
//! The grammar is narrow on purpose, and so is this parser: a trust domain is
//! `[a-z0-9._-]`, so a port (`:`), user info (`@`) or upper case never parses; a path
//! segment is `[a-zA-Z0-9._-]`, so a query (`?`), fragment (`#`) or percent-encoding never
//! does either. Two SPIFFE IDs are equal exactly when their strings are.

/// Longest SPIFFE ID, in bytes (the standard's limit on the URI).
pub const MAX_ID_BYTES: usize = 2048;

/// Longest trust domain name, in bytes (the standard's limit, as for a DNS name).
pub const MAX_TRUST_DOMAIN_BYTES: usize = 255;

const SCHEME: &str = "spiffe://";

/// A SPIFFE ID taken apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpiffeId<'a> {
    /// The trust domain name, e.g. `example.org`.
    pub trust_domain: &'a str,
    /// The path, empty or starting with `/`, e.g. `/ns/prod/sa/web`.
    pub path: &'a str,
}

/// Checks a trust domain name: 1 to 255 characters of `a-z`, `0-9`, `.`, `-` and `_`.
pub fn check_trust_domain(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the trust domain is empty".to_string());
    }
    if name.len() > MAX_TRUST_DOMAIN_BYTES {
        return Err(format!(
            "the trust domain is longer than {MAX_TRUST_DOMAIN_BYTES} characters"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '.' | '-' | '_'))
    {
        return Err(format!(
            "the trust domain has {c:?}: only lower-case letters, digits, '.', '-' and '_' are allowed \
             (no scheme, port, user info or upper case)"
        ));
    }
    Ok(())
}

/// Parses a SPIFFE ID. The path may be empty (the ID of the trust domain itself); a
/// workload's ID has one, which [`parse_workload`] requires.
pub fn parse(id: &str) -> Result<SpiffeId<'_>, String> {
    if id.len() > MAX_ID_BYTES {
        return Err(format!("a SPIFFE ID is at most {MAX_ID_BYTES} bytes"));
    }
    // The scheme is compared exactly: the standard writes it in lower case, and so do
    // the verifiers that will compare these IDs as strings.
    let rest = id
        .strip_prefix(SCHEME)
        .ok_or_else(|| "a SPIFFE ID starts with \"spiffe://\"".to_string())?;
    let (trust_domain, path) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
    check_trust_domain(trust_domain)?;
    if !path.is_empty() {
        for segment in path[1..].split('/') {
            check_segment(segment)?;
        }
    }
    Ok(SpiffeId { trust_domain, path })
}

/// Parses the SPIFFE ID of a workload: one with a path.
pub fn parse_workload(id: &str) -> Result<SpiffeId<'_>, String> {
    let parsed = parse(id)?;
    if parsed.path.is_empty() {
        return Err(
            "the SPIFFE ID has no path: it names the trust domain, not a workload".to_string(),
        );
    }
    Ok(parsed)
}

fn check_segment(segment: &str) -> Result<(), String> {
    match segment {
        "" => Err("the path has an empty segment (\"//\" or a trailing \"/\")".to_string()),
        "." | ".." => Err(format!("the path has a {segment:?} segment")),
        _ => match segment
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
        {
            Some(c) => Err(format!(
                "the path has {c:?}: segments are letters, digits, '.', '-' and '_' \
                 (no query, fragment or percent-encoding)"
            )),
            None => Ok(()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_ids_parse() {
        let id = parse_workload("spiffe://example.org/ns/prod/sa/web-1_a.b").unwrap();
        assert_eq!(id.trust_domain, "example.org");
        assert_eq!(id.path, "/ns/prod/sa/web-1_a.b");
        assert_eq!(parse("spiffe://example.org").unwrap().path, "");
        assert!(parse("spiffe://my_td-1.example/x").is_ok());
        let longest = format!("spiffe://td/{}", "a".repeat(MAX_ID_BYTES - 12));
        assert_eq!(longest.len(), MAX_ID_BYTES);
        assert!(parse(&longest).is_ok());
    }

    #[test]
    fn invalid_ids_are_refused() {
        for bad in [
            "",
            "example.org/x",
            "https://example.org/x",
            "SPIFFE://example.org/x",
            "spiffe:example.org/x",
            "spiffe:///x",
            "spiffe://Example.org/x",
            "spiffe://example.org:443/x",
            "spiffe://user@example.org/x",
            "spiffe://example.org/x?q=1",
            "spiffe://example.org/x#frag",
            "spiffe://example.org/a%20b",
            "spiffe://example.org/",
            "spiffe://example.org/a//b",
            "spiffe://example.org/a/",
            "spiffe://example.org/./a",
            "spiffe://example.org/a/..",
            "spiffe://exa mple.org/a",
            "spiffe://example.org/ä",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
        let too_long = format!("spiffe://td/{}", "a".repeat(MAX_ID_BYTES - 11));
        assert!(parse(&too_long).is_err());
        let long_domain = format!("spiffe://{}/x", "a".repeat(MAX_TRUST_DOMAIN_BYTES + 1));
        assert!(parse(&long_domain).is_err());
        assert!(parse_workload("spiffe://example.org").is_err());
    }

    #[test]
    fn trust_domains() {
        assert!(check_trust_domain("example.org").is_ok());
        for bad in [
            "",
            "Example.org",
            "example.org:8443",
            "spiffe://example.org",
            "a/b",
        ] {
            assert!(check_trust_domain(bad).is_err(), "{bad:?}");
        }
    }
}
