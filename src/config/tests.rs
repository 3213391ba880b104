//! Config parsing and validation: defaults, unknown fields, field-named errors, the PIN.

use super::*;
use crate::algorithm::Algorithm;
use std::os::unix::fs::PermissionsExt;

const BASE: &str = r#"
[pkcs11]
module = "/usr/lib/softhsm/libsofthsm2.so"
token_label = "t"
pin_env = "SIGNETD_TEST_UNUSED_PIN"

[issuers.demo]
iss = "https://issuer.example"
audiences = ["api"]
callers = ["uid:1000"]
"#;

fn err(text: &str) -> String {
    Config::parse(text).unwrap_err().to_string()
}

#[test]
fn the_example_config_is_valid() {
    let c = Config::parse(include_str!("../../config.example.toml")).unwrap();
    assert_eq!(c.issuers.len(), 2);
    assert_eq!(c.issuer("agents").unwrap().algorithm, Algorithm::EdDsa);
}

#[test]
fn defaults_are_safe() {
    let c = Config::parse(BASE).unwrap();
    let demo = c.issuer("demo").unwrap();
    assert_eq!(demo.max_ttl_seconds, 60);
    assert_eq!(demo.algorithm, Algorithm::Es256);
    assert!(!demo.raw_sign);
    assert_eq!(c.listen.http, Some("127.0.0.1:8750".parse().unwrap()));
    assert_eq!(c.listen.socket_mode, 0o660);
    assert_eq!(c.jwks.max_age_seconds, 15);
    assert!(c.pkcs11.session_copies);
}

#[test]
fn session_copies_can_be_turned_off() {
    let text = BASE.replace(
        "token_label = \"t\"\n",
        "token_label = \"t\"\nsession_copies = false\n",
    );
    assert!(!Config::parse(&text).unwrap().pkcs11.session_copies);
}

#[test]
fn unknown_fields_are_refused_with_their_name() {
    let e = err(&BASE.replace("callers", "caller"));
    assert!(e.contains("caller"), "{e}");
    let e = err(&format!("{BASE}\n[listen]\nsockett = \"/x\"\n"));
    assert!(e.contains("sockett"), "{e}");
}

#[test]
fn the_removed_replay_capacity_is_refused_by_name() {
    let e = err(&format!("{BASE}\n[verify]\nreplay_capacity = 1000000\n"));
    assert!(
        e.contains("verify.replay_capacity") && e.contains("state store"),
        "{e}"
    );
}

#[test]
fn bad_values_name_the_field() {
    let e = err(&BASE.replace(
        "callers = [\"uid:1000\"]",
        "callers = [\"uid:1000\"]\nmax_ttl_seconds = 7200",
    ));
    assert!(
        e.contains("issuers.demo.max_ttl_seconds") && e.contains("3600"),
        "{e}"
    );
    let e = err(&BASE.replace("audiences = [\"api\"]", "audiences = []"));
    assert!(e.contains("issuers.demo.audiences"), "{e}");
    let e = err(&BASE.replace(
        "callers = [\"uid:1000\"]",
        "required_claims = [\"exp\"]\ncallers = [\"uid:1\"]",
    ));
    assert!(
        e.contains("issuers.demo.required_claims") && e.contains("exp"),
        "{e}"
    );
    let e = err(&BASE.replace(
        "token_label = \"t\"",
        "token_label = \"t\"\ntoken_serial = \"s\"",
    ));
    assert!(e.contains("token_label, token_serial, token_uri"), "{e}");
    let e = err(&BASE.replace(
        "token_label = \"t\"",
        "token_uri = \"pkcs11:token=t?pin-value=9\"",
    ));
    assert!(e.contains("pkcs11.token_uri") && !e.contains('9'), "{e}");
    let e = err(&BASE.replace("callers = [\"uid:1000\"]", "callers = []"));
    assert!(e.contains("no caller is allowed"), "{e}");
    let e = err(&format!(
        "{BASE}\n[issuers.twin]\niss = \"https://issuer.example\"\naudiences = [\"a\"]\ncallers = [\"uid:1\"]\n"
    ));
    assert!(e.contains("issuers.twin.iss") && e.contains("demo"), "{e}");
    let e = err(&BASE.replace("[issuers.demo]", "[issuers.Demo]"));
    assert!(e.contains("issuers.Demo"), "{e}");
    let e = err(&format!("{BASE}\n[listen]\nhttp = \"nowhere\"\n"));
    assert!(e.contains("nowhere"), "{e}");
    let e = err(&BASE.replace("audiences", "algorithm = \"HS256\"\naudiences"));
    assert!(e.contains("HS256"), "{e}");
}

#[test]
fn pin_file_must_not_be_world_readable_and_is_never_shown() {
    let dir = tempfile::tempdir().unwrap();
    let pin = dir.path().join("user.pin");
    std::fs::write(&pin, "s3cret-pin-value\n").unwrap();
    std::fs::set_permissions(&pin, std::fs::Permissions::from_mode(0o644)).unwrap();
    let text = BASE.replace(
        "pin_env = \"SIGNETD_TEST_UNUSED_PIN\"",
        &format!("pin_file = {:?}", pin.display().to_string()),
    );
    let config = Config::parse(&text).unwrap();
    let e = config.hsm_settings().err().unwrap().to_string();
    assert!(
        e.contains("pkcs11.pin_file") && !e.contains("s3cret"),
        "{e}"
    );
    std::fs::set_permissions(&pin, std::fs::Permissions::from_mode(0o640)).unwrap();
    let e = config.hsm_settings().err().unwrap().to_string();
    assert!(
        e.contains("group or others") && e.contains("640"),
        "group access is refused too: {e}"
    );
    std::fs::set_permissions(&pin, std::fs::Permissions::from_mode(0o600)).unwrap();
    let settings = config.hsm_settings().unwrap();
    assert_eq!(
        secrecy::ExposeSecret::expose_secret(&settings.pin),
        "s3cret-pin-value"
    );
    assert!(!format!("{settings:?}").contains("s3cret"));
}

/// The audit log's bound on refusals and its reserve: defaults, and ranges that name the
/// field.
#[test]
fn refusal_aggregation_and_reserve_have_bounded_settings() {
    let c = Config::parse(BASE).unwrap();
    assert_eq!(c.audit.reserve_bytes, 64 << 20);
    assert_eq!(c.audit.refusal_interval_seconds, 60);
    assert_eq!(c.audit.refusal_callers, 1000);
    let audit = |line: &str| format!("{BASE}\n[audit]\n{line}\n");
    for (line, field) in [
        (
            "refusal_interval_seconds = 0",
            "audit.refusal_interval_seconds",
        ),
        (
            "refusal_interval_seconds = 3601",
            "audit.refusal_interval_seconds",
        ),
        ("refusal_callers = 0", "audit.refusal_callers"),
        ("refusal_callers = 100001", "audit.refusal_callers"),
    ] {
        let e = err(&audit(line));
        assert!(e.contains(field), "{line}: {e}");
    }
    let c = Config::parse(&audit("reserve_bytes = 0")).unwrap();
    assert_eq!(c.audit.reserve_bytes, 0);
}

#[test]
fn tls_is_off_by_default_and_its_table_has_safe_defaults() {
    assert!(Config::parse(BASE).unwrap().tls.is_none());
    let c = Config::parse(&format!(
        "{BASE}\n[tls]\nlisten = \"0.0.0.0:8443\"\ncert = \"/c.pem\"\nkey = \"/k.pem\"\nclient_ca = \"/ca.pem\"\n"
    ))
    .unwrap();
    let tls = c.tls.unwrap();
    assert_eq!(tls.min_version, TlsVersion::Tls13);
    assert_eq!(tls.crl, None);
    assert_eq!(
        (tls.handshake_timeout_seconds, tls.reload_check_seconds),
        (10, 5)
    );
    let tls12 = "[tls]\nlisten = \"127.0.0.1:1\"\ncert = \"c\"\nkey = \"k\"\nclient_ca = \"a\"\nmin_version = \"1.2\"\n";
    let c = Config::parse(&format!("{BASE}\n{tls12}")).unwrap();
    assert_eq!(c.tls.unwrap().min_version, TlsVersion::Tls12);
    for (bad, says) in [
        (tls12.replace("\"1.2\"", "\"1.1\""), "min_version"),
        (tls12.replace("cert = \"c\"\n", ""), "missing field `cert`"),
        (format!("{tls12}crl = \"\"\n"), "tls.crl: must not be empty"),
        (
            format!("{tls12}handshake_timeout_seconds = 0\n"),
            "tls.handshake_timeout_seconds",
        ),
        (format!("{tls12}verify_client = false\n"), "unknown field"),
    ] {
        let e = err(&format!("{BASE}\n{bad}"));
        assert!(e.contains(says), "{says}: {e}");
    }
}

#[test]
fn plain_http_off_loopback_is_refused() {
    let e = err(&format!("{BASE}\n[listen]\nhttp = \"0.0.0.0:8750\"\n"));
    assert!(
        e.contains("listen.http") && e.contains("not a loopback address") && e.contains("[tls]"),
        "{e}"
    );
    for ok in ["127.0.0.1:8750", "[::1]:8750", "off"] {
        Config::parse(&format!("{BASE}\n[listen]\nhttp = \"{ok}\"\n")).unwrap();
    }
}

#[test]
fn a_replica_name_is_checked_before_it_goes_into_audit_records() {
    let with = |name: &str| format!("{BASE}[replica]\nname = {name:?}\n");
    let config = Config::parse(&with("signetd-a.example_1")).unwrap();
    assert_eq!(config.replica.name.as_deref(), Some("signetd-a.example_1"));
    assert!(Config::parse(BASE).unwrap().replica.name.is_none());
    for bad in ["", "a b", "a\"b", "ä", &"x".repeat(65)] {
        assert!(err(&with(bad)).starts_with("replica.name:"), "{bad:?}");
    }
}

#[test]
fn the_metrics_listener_is_on_loopback_unless_anonymous_callers_may_read_metrics() {
    let parse = |metrics: &str| Config::parse(&format!("{BASE}[metrics]\n{metrics}"));
    let config = parse("listen = \"127.0.0.1:9464\"\n").unwrap();
    assert_eq!(
        config.metrics.listen,
        Some("127.0.0.1:9464".parse().unwrap())
    );
    assert!(!config.metrics.allow_anonymous && config.metrics.callers.is_empty());
    let e = parse("listen = \"0.0.0.0:9464\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("metrics.listen") && e.contains("allow_anonymous"),
        "{e}"
    );
    assert!(parse("listen = \"0.0.0.0:9464\"\nallow_anonymous = true\n").is_ok());
    let e = parse("listen_on = \"127.0.0.1:9464\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("listen_on"), "{e}");
    assert!(Config::parse(BASE).unwrap().metrics.listen.is_none());
}
