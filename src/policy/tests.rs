//! The policy, decided without a token: every action, every selector form, and the
//! refusal before a body is read.

use super::*;
use crate::identity::{CertificateIdentity, PeerCredentials};

const CONFIG: &str = r#"
[pkcs11]
module = "/usr/lib/softhsm/libsofthsm2.so"
token_label = "t"
pin_env = "SIGNETD_TEST_UNUSED_PIN"

[admin]
callers = ["uid:0", "spiffe://ops.example/admin/*"]

[verify]
single_use_callers = ["gid:70", "dns:gateway.example.com"]

[audit]
auditors = ["uid:77", "dns:monitor.example.com"]

[issuers.auth]
iss = "https://auth.example"
audiences = ["api"]
callers = ["uid:1000", "gid:50", "spiffe://prod.example/ns/auth/sa/api"]

[issuers.raw]
iss = "https://raw.example"
audiences = ["api"]
callers = ["uid:1001", "cert-sha256:0707070707070707070707070707070707070707070707070707070707070707"]
raw_sign = true
"#;

fn policy() -> Policy {
    Policy::new(&Config::parse(CONFIG).unwrap())
}

fn local(uid: u32, gid: u32) -> Principal {
    Principal::Local(PeerCredentials {
        uid,
        gid,
        pid: None,
    })
}

fn remote(spiffe: Option<&str>, dns: &[&str], sha256: [u8; 32]) -> Principal {
    Principal::Remote {
        addr: Some("192.0.2.1:4000".parse().unwrap()),
        certificate: CertificateIdentity {
            spiffe_id: spiffe.map(str::to_string),
            dns_names: dns.iter().map(|d| d.to_string()).collect(),
            sha256,
        },
    }
}

fn code(result: Result<(), Error>) -> &'static str {
    result.map_or_else(|e| e.code(), |()| "ok")
}

#[test]
fn mint_needs_a_named_caller_of_a_jwt_issuer() {
    let p = policy();
    let api = remote(Some("spiffe://prod.example/ns/auth/sa/api"), &[], [1; 32]);
    for principal in [local(1000, 1), local(5, 50), api] {
        assert_eq!(
            code(p.decide(&principal, Action::Mint("auth"))),
            "ok",
            "{principal}"
        );
    }
    let refused = [
        local(1001, 1),
        local(0, 0),
        remote(Some("spiffe://prod.example/ns/auth/sa/other"), &[], [1; 32]),
    ];
    for principal in refused {
        assert_eq!(
            code(p.decide(&principal, Action::Mint("auth"))),
            "caller_not_allowed"
        );
    }
    assert_eq!(
        code(p.decide(&local(1001, 1), Action::Mint("raw"))),
        "mint_disabled"
    );
    assert_eq!(
        code(p.decide(&local(1000, 1), Action::Mint("nope"))),
        "unknown_issuer"
    );
}

#[test]
fn raw_signing_needs_a_named_caller_of_a_raw_issuer() {
    let p = policy();
    let by_hash = remote(None, &[], [7; 32]);
    assert_eq!(
        code(p.decide(&local(1001, 1), Action::RawSign("raw"))),
        "ok"
    );
    assert_eq!(code(p.decide(&by_hash, Action::RawSign("raw"))), "ok");
    assert_eq!(
        code(p.decide(&remote(None, &[], [8; 32]), Action::RawSign("raw"))),
        "caller_not_allowed"
    );
    assert_eq!(
        code(p.decide(&local(1000, 1), Action::RawSign("auth"))),
        "raw_sign_disabled"
    );
    assert_eq!(
        code(p.decide(&local(1000, 1), Action::RawSign("raw"))),
        "caller_not_allowed"
    );
}

#[test]
fn only_auditors_read_the_audit_log_not_admins_nor_anonymous_callers() {
    let p = policy();
    assert_eq!(code(p.decide(&local(77, 1), Action::ReadAudit)), "ok");
    let monitor = remote(None, &["monitor.example.com"], [4; 32]);
    assert_eq!(code(p.decide(&monitor, Action::ReadAudit)), "ok");
    assert_eq!(
        code(p.decide(&local(0, 0), Action::ReadAudit)),
        "not_auditor"
    );
    let anonymous = Principal::Anonymous(Some("192.0.2.9:1".parse().unwrap()));
    assert_eq!(
        code(p.decide(&anonymous, Action::ReadAudit)),
        "unauthenticated"
    );
    // Being an auditor names nobody for anything else.
    assert_eq!(code(p.decide(&local(77, 1), Action::Admin)), "not_admin");
}

#[test]
fn admin_and_single_use_have_their_own_lists() {
    let p = policy();
    assert_eq!(code(p.decide(&local(0, 0), Action::Admin)), "ok");
    let ops = remote(Some("spiffe://ops.example/admin/alice"), &[], [2; 32]);
    assert_eq!(code(p.decide(&ops, Action::Admin)), "ok");
    // Issuer callers are not admins, and admins are not single-use verifiers.
    assert_eq!(code(p.decide(&local(1000, 50), Action::Admin)), "not_admin");
    assert_eq!(
        code(p.decide(&local(0, 0), Action::SingleUseVerify)),
        "caller_not_allowed"
    );
    assert_eq!(code(p.decide(&local(9, 70), Action::SingleUseVerify)), "ok");
    let gateway = remote(None, &["Gateway.example.com"], [3; 32]);
    assert_eq!(code(p.decide(&gateway, Action::SingleUseVerify)), "ok");
}

#[test]
fn the_check_before_the_body_needs_some_issuer_to_name_the_caller() {
    let p = policy();
    assert_eq!(
        code(p.decide(&local(1001, 1), Action::UseSigningRoutes)),
        "ok"
    );
    assert_eq!(
        code(p.decide(&local(2, 50), Action::UseSigningRoutes)),
        "ok"
    );
    // An admin that no issuer names may not send signing requests.
    assert_eq!(
        code(p.decide(&local(0, 0), Action::UseSigningRoutes)),
        "caller_not_allowed"
    );
    let stranger = remote(Some("spiffe://prod.example/ns/other/sa/x"), &[], [4; 32]);
    assert_eq!(
        code(p.decide(&stranger, Action::UseSigningRoutes)),
        "caller_not_allowed"
    );
}

#[test]
fn anonymous_principals_are_unauthenticated_everywhere_but_single_use() {
    let p = policy();
    let anonymous = Principal::Anonymous(Some("127.0.0.1:9".parse().unwrap()));
    for action in [
        Action::UseSigningRoutes,
        Action::Mint("auth"),
        Action::RawSign("raw"),
        Action::Admin,
    ] {
        assert_eq!(
            code(p.decide(&anonymous, action)),
            "unauthenticated",
            "{action:?}"
        );
    }
    assert_eq!(
        code(p.decide(&anonymous, Action::SingleUseVerify)),
        "caller_not_allowed"
    );
}

#[test]
fn an_empty_policy_allows_nothing() {
    let p = Policy::default();
    for action in [
        Action::UseSigningRoutes,
        Action::Mint("auth"),
        Action::Admin,
        Action::SingleUseVerify,
    ] {
        assert!(p.decide(&local(0, 0), action).is_err(), "{action:?}");
    }
}

#[test]
fn legacy_uid_and_gid_lists_become_selectors_with_a_deprecation_note() {
    let legacy = CONFIG
        .replace(
            "callers = [\"uid:0\", \"spiffe://ops.example/admin/*\"]",
            "allowed_uids = [0]",
        )
        .replace(
            "single_use_callers = [\"gid:70\", \"dns:gateway.example.com\"]",
            "single_use_gids = [70]",
        )
        .replace(
            "callers = [\"uid:1000\", \"gid:50\", \"spiffe://prod.example/ns/auth/sa/api\"]",
            "allowed_uids = [1000]\nallowed_gids = [50]",
        );
    let config = Config::parse(&legacy).unwrap();
    assert_eq!(config.deprecations.len(), 3, "{:?}", config.deprecations);
    assert!(
        config
            .deprecations
            .iter()
            .any(|d| d.contains("[issuers.auth]")
                && d.contains(r#"callers = ["uid:1000", "gid:50"]"#)),
        "{:?}",
        config.deprecations
    );
    let p = Policy::new(&config);
    assert_eq!(code(p.decide(&local(1000, 1), Action::Mint("auth"))), "ok");
    assert_eq!(code(p.decide(&local(3, 50), Action::Mint("auth"))), "ok");
    assert_eq!(code(p.decide(&local(0, 0), Action::Admin)), "ok");
    assert_eq!(code(p.decide(&local(3, 70), Action::SingleUseVerify)), "ok");
    assert_eq!(
        code(p.decide(&local(3, 71), Action::SingleUseVerify)),
        "caller_not_allowed"
    );
}

/// The audit log folds refusals of principals no list names; every list counts.
#[test]
fn names_says_whether_any_list_names_a_principal() {
    let p = policy();
    let named = [
        local(1000, 1),
        local(1001, 1),
        local(0, 0),
        local(5, 70),
        remote(Some("spiffe://ops.example/admin/alice"), &[], [1; 32]),
        remote(None, &["gateway.example.com"], [1; 32]),
        remote(None, &[], [7; 32]),
    ];
    for principal in named {
        assert!(p.names(&principal), "{principal}");
    }
    let unnamed = [
        local(1002, 1),
        remote(Some("spiffe://prod.example/ns/auth/sa/other"), &[], [1; 32]),
        Principal::Anonymous(Some("192.0.2.9:1".parse().unwrap())),
        Principal::Anonymous(None),
    ];
    for principal in unnamed {
        assert!(!p.names(&principal), "{principal}");
    }
}

#[test]
fn metrics_go_to_local_callers_named_certificate_holders_and_anonymous_ones_only_if_allowed() {
    let with = |metrics: &str| {
        Policy::new(&Config::parse(&format!("{CONFIG}\n[metrics]\n{metrics}")).unwrap())
    };
    let named = remote(Some("spiffe://ops.example/prometheus"), &[], [1; 32]);
    let other = remote(Some("spiffe://ops.example/someone"), &[], [2; 32]);
    let anonymous = Principal::Anonymous(Some("192.0.2.9:5000".parse().unwrap()));
    let read = |p: &Policy, who: &Principal| code(p.decide(who, Action::ReadMetrics));

    let p = with("callers = [\"spiffe://ops.example/prometheus\"]\n");
    // Anyone who reaches the socket: no list needs to name a local caller.
    assert_eq!(read(&p, &local(4242, 4242)), "ok");
    assert_eq!(read(&p, &named), "ok");
    assert_eq!(read(&p, &other), "caller_not_allowed");
    assert_eq!(read(&p, &anonymous), "unauthenticated");
    // Naming a caller for metrics lets it do nothing else.
    assert_eq!(read(&policy(), &named), "caller_not_allowed");
    assert_eq!(
        code(p.decide(&named, Action::UseSigningRoutes)),
        "caller_not_allowed"
    );
    assert!(!p.names(&named));

    let open = with("allow_anonymous = true\n");
    assert_eq!(read(&open, &anonymous), "ok");
    assert_eq!(read(&open, &other), "caller_not_allowed");
    assert_eq!(
        code(open.decide(&anonymous, Action::Admin)),
        "unauthenticated"
    );
}
