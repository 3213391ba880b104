//! PKCS#11 URIs (RFC 7512) as `token_uri` gives them: path attributes, percent-decoding,
//! refused query attributes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use signetd::hsm::TokenSelector;

fuzz_target!(|data: &[u8]| {
    if let Ok(uri) = std::str::from_utf8(data) {
        let _ = TokenSelector::from_uri(uri);
        let _ = TokenSelector::from_uri(&format!("pkcs11:{uri}"));
    }
});
