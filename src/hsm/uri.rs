//! PKCS#11 URIs (RFC 7512), as far as selecting a token goes.
//!
//! Only the path attributes that name a token are accepted. Anything else, and in
//! particular `pin-value` or `pin-source` in the query, is refused: the PIN has its own,
//! file- or environment-based setting so that it never sits in a config string.

use std::fmt;

/// Which token to use, by any combination of its identity fields; all given must match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenSelector {
    /// `CK_TOKEN_INFO.label`, compared after trimming the padding.
    pub label: Option<String>,
    /// `CK_TOKEN_INFO.serialNumber`.
    pub serial: Option<String>,
    /// `CK_TOKEN_INFO.manufacturerID`.
    pub manufacturer: Option<String>,
    /// `CK_TOKEN_INFO.model`.
    pub model: Option<String>,
}

impl TokenSelector {
    /// Parses the token attributes of a `pkcs11:` URI such as
    /// `pkcs11:token=signetd;serial=1a2b3c4d`.
    pub fn from_uri(uri: &str) -> Result<Self, String> {
        let rest = uri
            .strip_prefix("pkcs11:")
            .ok_or_else(|| "a PKCS#11 URI starts with \"pkcs11:\"".to_string())?;
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        };
        if let Some(query) = query.filter(|q| !q.is_empty()) {
            let names: Vec<&str> = query
                .split('&')
                .map(|a| a.split('=').next().unwrap_or(""))
                .collect();
            return Err(format!(
                "query attributes are not supported ({}); give the PIN with pin_file or pin_env",
                names.join(", ")
            ));
        }
        let mut selector = TokenSelector::default();
        for attribute in path.split(';').filter(|a| !a.is_empty()) {
            let (name, value) = attribute
                .split_once('=')
                .ok_or_else(|| format!("attribute {attribute:?} has no value"))?;
            let value = percent_decode(value)?;
            let slot = match name {
                "token" => &mut selector.label,
                "serial" => &mut selector.serial,
                "manufacturer" => &mut selector.manufacturer,
                "model" => &mut selector.model,
                // Attributes of objects or the library do not select a token; reject them
                // rather than silently ignoring a constraint the operator meant.
                other => {
                    return Err(format!(
                        "unsupported attribute {other:?}: use token, serial, manufacturer or model"
                    ));
                }
            };
            if slot.replace(value).is_some() {
                return Err(format!("attribute {name:?} is given twice"));
            }
        }
        if selector.is_empty() {
            return Err("the URI names no token attribute".to_string());
        }
        Ok(selector)
    }

    /// True when nothing would constrain the choice of token.
    pub fn is_empty(&self) -> bool {
        self.label.is_none()
            && self.serial.is_none()
            && self.manufacturer.is_none()
            && self.model.is_none()
    }

    /// True when a token with this identity satisfies every given attribute.
    pub fn matches(&self, label: &str, serial: &str, manufacturer: &str, model: &str) -> bool {
        fn ok(want: &Option<String>, have: &str) -> bool {
            want.as_deref().is_none_or(|w| w == have.trim_end())
        }
        ok(&self.label, label)
            && ok(&self.serial, serial)
            && ok(&self.manufacturer, manufacturer)
            && ok(&self.model, model)
    }
}

impl fmt::Display for TokenSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = [
            ("token", &self.label),
            ("serial", &self.serial),
            ("manufacturer", &self.manufacturer),
            ("model", &self.model),
        ]
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v:?}")))
        .collect();
        f.write_str(&parts.join(", "))
    }
}

fn percent_decode(value: &str) -> Result<String, String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = value
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad percent-encoding in {value:?}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{value:?} does not decode to UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_token_and_serial_with_percent_encoding() {
        let s = TokenSelector::from_uri("pkcs11:token=my%20token;serial=00ab").unwrap();
        assert_eq!(s.label.as_deref(), Some("my token"));
        assert_eq!(s.serial.as_deref(), Some("00ab"));
        assert!(s.matches("my token                        ", "00ab", "x", "y"));
        assert!(!s.matches("my token", "00ac", "x", "y"));
    }

    #[test]
    fn refuses_pin_in_query_and_unknown_attributes() {
        let e = TokenSelector::from_uri("pkcs11:token=a?pin-value=1234").unwrap_err();
        assert!(e.contains("pin-value") && !e.contains("1234"), "{e}");
        assert!(
            TokenSelector::from_uri("pkcs11:object=key")
                .unwrap_err()
                .contains("object")
        );
        assert!(TokenSelector::from_uri("pkcs11:").is_err());
        assert!(TokenSelector::from_uri("token=a").is_err());
        assert!(TokenSelector::from_uri("pkcs11:token=a;token=b").is_err());
        assert!(TokenSelector::from_uri("pkcs11:token=%zz").is_err());
    }
}
