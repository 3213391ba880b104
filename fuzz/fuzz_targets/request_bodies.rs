//! Every JSON request body, as the router reads it: bytes to a wire type (serde with
//! `deny_unknown_fields`), then to the service's type, then the service's first checks
//! that need no token (claims policy for a mint, digest/message decoding for a sign,
//! the JWS verifier for a verify). Nothing may panic; errors are fine.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use signetd::api::wire;
use signetd::keys::JwkSet;
use signetd::token::verify::{Expected, verify};
use signetd::{Algorithm, Config, service, token};

/// One issuer with a claims policy, so `claims::build` has rules to check.
const CONFIG: &str = r#"
[pkcs11]
module = "/usr/lib/softhsm/libsofthsm2.so"
token_label = "t"
pin_env = "SIGNETD_FUZZ_UNUSED_PIN"

[issuers.demo]
iss = "https://issuer.example"
audiences = ["api", "other"]
callers = ["uid:1000"]
required_claims = ["tenant"]
forbidden_claims = ["admin"]
max_claims_bytes = 256
"#;

fn config() -> &'static Config {
    static CONFIG_ONCE: OnceLock<Config> = OnceLock::new();
    CONFIG_ONCE.get_or_init(|| Config::parse(CONFIG).expect("the fuzz config is valid"))
}

fuzz_target!(|data: &[u8]| {
    let policy = config().issuer("demo").expect("demo is configured");
    if let Ok(body) = serde_json::from_slice::<wire::MintRequest>(data) {
        let request = token::MintRequest::from(body);
        let _ = token::claims::build(policy, &request, 1_700_000_000);
    }
    if let Ok(body) = serde_json::from_slice::<wire::SignRequest>(data) {
        let request = service::SignRequest::from(body);
        for algorithm in [Algorithm::Es256, Algorithm::EdDsa] {
            let _ = service::sign_input(algorithm, &request);
        }
    }
    if let Ok(body) = serde_json::from_slice::<wire::VerifyRequest>(data) {
        let request = service::verify::VerifyRequest::from(body);
        let expected = Expected {
            issuer: Some(&policy.iss),
            audience: Some(&request.audience),
            max_ttl: Some(policy.max_ttl_seconds),
            now: 1_700_000_000,
            leeway: token::VERIFY_LEEWAY_SECONDS,
            profile: Some(policy.profile()),
        };
        let _ = verify(&request.token, &JwkSet::default(), &expected);
    }
    if let Ok(body) = serde_json::from_slice::<wire::GenerateRequest>(data) {
        let _ = config().issuer(&body.issuer);
    }
    if let Ok(body) = serde_json::from_slice::<wire::RevokeTokenRequest>(data) {
        let _ = service::admin::RevokeTokenRequest::from(body);
    }
});
