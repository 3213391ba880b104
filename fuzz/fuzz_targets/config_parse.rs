//! The config parser: TOML, legacy-field folding and every validation rule.
//! `Config::parse` reads no files (the PIN is read later, by `hsm_settings`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use signetd::Config;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(config) = Config::parse(text)
    {
        let _ = config.pkcs11.selector();
    }
});
