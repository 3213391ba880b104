//! The signer port over the real token: keys are found by id, a key re-created under
//! the same id behind the daemon's back never signs in its place, and one deleted never
//! signs once the daemon has looked at the token object (a session copy lives until
//! then).

use std::sync::{Arc, OnceLock};

use signetd::Algorithm;
use signetd::hsm::{Hsm, KeyPairInfo};
use signetd::signer::{KeyRef, SignError, SignInput};

use crate::common::{hsm, token};

/// A second PKCS#11 context on the test token, standing in for another process that
/// changes the token. Never dropped: finalizing the module would end this process's
/// other context too.
fn outsider() -> Arc<Hsm> {
    static OUTSIDER: OnceLock<Arc<Hsm>> = OnceLock::new();
    OUTSIDER
        .get_or_init(|| {
            hsm(); // the first context, and SOFTHSM2_CONF, come first
            let config = signetd::Config::parse(&token().pkcs11_toml_with(1)).unwrap();
            Arc::new(Hsm::open(config.hsm_settings().unwrap()).unwrap())
        })
        .clone()
}

fn key_ref<'a>(kid: &'a str, pair: &'a KeyPairInfo) -> KeyRef<'a> {
    KeyRef {
        kid,
        algorithm: pair.algorithm,
        public_key: &pair.public_key,
    }
}

fn message() -> SignInput {
    SignInput::Message(b"signer port".to_vec())
}

async fn probe_key(kid: &str, algorithm: Algorithm) -> KeyPairInfo {
    // Not under signetd's labels: inventory never sees these probes.
    hsm()
        .generate_key_pair(algorithm, kid.as_bytes().to_vec(), format!("probe/{kid}"))
        .await
        .unwrap()
}

/// The outsider generates an ES256 key under `kid`. Its object-store operations are not
/// serialized with this process's other context, and SoftHSM2 fails a creation that
/// races a search in another context, so it tries a few times.
async fn outsider_generates(kid: &str) -> KeyPairInfo {
    let mut last = None;
    for _ in 0..5 {
        let label = format!("probe/{kid}");
        match outsider()
            .generate_key_pair(Algorithm::Es256, kid.as_bytes().to_vec(), label)
            .await
        {
            Ok(pair) => return pair,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the outsider could not generate a key: {last:?}");
}

#[tokio::test]
async fn a_key_deleted_or_re_created_behind_the_signers_back_never_signs() {
    let kid = "signer-probe-recreated";
    let pair = probe_key(kid, Algorithm::Es256).await;
    let signature = hsm().sign(key_ref(kid, &pair), message()).await.unwrap();
    assert_eq!(signature.len(), 64);

    outsider()
        .destroy_key_pair(kid.as_bytes().to_vec())
        .await
        .unwrap();
    // The worker that signed keeps a session copy, which outlives the token object until
    // the daemon looks at the token object again (docs/hsm-compatibility.md): whether
    // the next signature still works depends on which worker takes it. `/readyz`'s
    // check reads the token object, so it notices at once, and from then on no worker
    // signs with the key, copy or not.
    let noticed = hsm().check_key(key_ref(kid, &pair)).await.unwrap_err();
    assert!(matches!(noticed, SignError::UnknownKey(_)), "{noticed:?}");
    for _ in 0..4 {
        let gone = hsm()
            .sign(key_ref(kid, &pair), message())
            .await
            .unwrap_err();
        assert!(matches!(gone, SignError::UnknownKey(_)), "{gone:?}");
    }

    let replacement = outsider_generates(kid).await;
    assert_ne!(replacement.public_key, pair.public_key);
    let replaced = hsm()
        .sign(key_ref(kid, &pair), message())
        .await
        .unwrap_err();
    assert!(
        matches!(replaced, SignError::KeyMismatch(_)),
        "{replaced:?}"
    );
    // The key the token now holds under that id signs for whoever names it exactly.
    let signature = hsm()
        .sign(key_ref(kid, &replacement), message())
        .await
        .unwrap();
    assert_eq!(signature.len(), 64);
    hsm()
        .destroy_key_pair(kid.as_bytes().to_vec())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_key_is_signed_with_only_as_the_algorithm_it_is() {
    let kid = "signer-probe-eddsa";
    let pair = probe_key(kid, Algorithm::EdDsa).await;
    let as_es256 = KeyRef {
        algorithm: Algorithm::Es256,
        ..key_ref(kid, &pair)
    };
    let refused = hsm().sign(as_es256, message()).await.unwrap_err();
    assert!(matches!(refused, SignError::KeyMismatch(_)), "{refused:?}");
    let unknown = KeyRef {
        kid: "signer-probe-never-made",
        ..key_ref(kid, &pair)
    };
    let refused = hsm().sign(unknown, message()).await.unwrap_err();
    assert!(matches!(refused, SignError::UnknownKey(_)), "{refused:?}");
    assert_eq!(
        hsm()
            .sign(key_ref(kid, &pair), message())
            .await
            .unwrap()
            .len(),
        64
    );
    hsm()
        .destroy_key_pair(kid.as_bytes().to_vec())
        .await
        .unwrap();
}
