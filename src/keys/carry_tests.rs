//! The merge of a last good view and a new reading, on fake inventories.

use super::*;
use crate::algorithm::Algorithm;
use crate::keys::KeyRegistry;

fn key(kid: &str, issuer: &str, state: KeyState) -> StoredKey {
    StoredKey::for_tests(kid, issuer, Algorithm::Es256, state, vec![4; 65])
}

fn reading(keys: Vec<StoredKey>, ca: bool) -> Reading {
    Reading {
        inventory: Inventory {
            keys,
            ..Inventory::default()
        },
        ca_chain: if ca { vec![vec![1]] } else { Vec::new() },
    }
}

fn kids(view: &LastGood) -> Vec<&str> {
    view.keys.iter().map(|k| k.kid.as_str()).collect()
}

/// `max_ttl` 300 plus a leeway of 5.
fn grace(_: &str) -> u64 {
    305
}

fn first_view() -> LastGood {
    let first = reading(
        vec![
            key("a-1", "a", KeyState::Active),
            key("b-1", "b", KeyState::Retired),
        ],
        true,
    );
    merge(&LastGood::default(), first, 100, grace).view
}

#[test]
fn the_first_reading_is_taken_as_it_is() {
    let view = first_view();
    assert_eq!(kids(&view), ["a-1", "b-1"]);
    assert_eq!(view.seen_at["a-1"], 100);
    assert_eq!(view.ca_chain, vec![vec![1]]);
}

#[test]
fn a_reading_that_shows_nothing_keeps_the_last_good_view_whole() {
    let last = first_view();
    let merged = merge(&last, reading(Vec::new(), false), 200, grace);
    assert!(merged.looks_empty);
    assert!(merged.missing.is_empty(), "an outage is not a deletion");
    assert_eq!(kids(&merged.view), ["a-1", "b-1"]);
    assert_eq!(merged.view.seen_at["a-1"], 100, "not seen since");
    assert!(!merged.view.ca_chain.is_empty());
}

#[test]
fn a_key_gone_from_a_readable_token_is_carried_until_its_tokens_expire() {
    let last = first_view();
    let only_b = || reading(vec![key("b-1", "b", KeyState::Retired)], true);
    let merged = merge(&last, only_b(), 200, grace);
    assert!(!merged.looks_empty);
    assert_eq!(kids(&merged.view), ["a-1", "b-1"], "still published");
    let missing = &merged.missing;
    assert_eq!(missing.len(), 1);
    assert_eq!(
        (
            missing[0].kid.as_str(),
            missing[0].state,
            missing[0].last_seen,
            missing[0].until
        ),
        ("a-1", KeyState::Active, 100, 405)
    );
    assert!(missing[0].to_string().contains("missing from the token"));

    // Carried again: last seen stays when it was really seen.
    let later = merge(&merged.view, only_b(), 405, grace);
    assert_eq!(later.missing.len(), 1);
    assert_eq!(later.view.seen_at["a-1"], 100);
    assert_eq!(kids(&later.view), ["a-1", "b-1"]);

    // Past max_ttl + leeway after it was last seen: nothing it signed verifies any more.
    let gone = merge(&later.view, only_b(), 406, grace);
    assert!(gone.missing.is_empty());
    assert_eq!(gone.dropped.len(), 1);
    assert_eq!(kids(&gone.view), ["b-1"]);
}

#[test]
fn a_key_that_comes_back_is_no_longer_missing() {
    let last = first_view();
    let without = merge(
        &last,
        reading(vec![key("b-1", "b", KeyState::Retired)], true),
        200,
        grace,
    );
    assert_eq!(without.missing.len(), 1);
    let back = merge(
        &without.view,
        reading(
            vec![
                key("a-1", "a", KeyState::Active),
                key("b-1", "b", KeyState::Retired),
            ],
            true,
        ),
        210,
        grace,
    );
    assert!(back.missing.is_empty() && back.dropped.is_empty());
    assert_eq!(back.view.seen_at["a-1"], 210);
}

#[test]
fn the_ca_chain_is_never_lost_to_a_reading() {
    let last = first_view();
    let merged = merge(
        &last,
        reading(vec![key("a-1", "a", KeyState::Active)], false),
        200,
        grace,
    );
    assert_eq!(merged.view.ca_chain, vec![vec![1]], "the CA chain is kept");
}

#[test]
fn an_empty_token_with_no_last_view_is_just_empty() {
    let merged = merge(&LastGood::default(), reading(Vec::new(), false), 1, grace);
    assert!(!merged.looks_empty);
    assert!(merged.view.keys.is_empty());
}

/// Registries over `keys` for one configured issuer `a`.
fn registry_of(keys: Vec<StoredKey>) -> KeyRegistry {
    let config = crate::config::Config::parse(
        "[pkcs11]\nmodule = \"/m.so\"\ntoken_label = \"t\"\npin_env = \"UNUSED\"\n\
         [issuers.a]\niss = \"https://a.example\"\naudiences = [\"api\"]\ncallers = [\"uid:1\"]\n",
    )
    .unwrap();
    let inventory = Inventory {
        keys,
        ..Inventory::default()
    };
    KeyRegistry::build(inventory, &config.issuers, Vec::new())
}

#[test]
fn a_reading_between_retire_and_activate_keeps_the_old_key_signing_once() {
    let before = registry_of(vec![
        key("a-1", "a", KeyState::Active),
        key("a-2", "a", KeyState::Pending),
    ]);
    // Another replica retired a-1 and has not activated a-2 yet.
    let between = || {
        registry_of(vec![
            key("a-1", "a", KeyState::Retired),
            key("a-2", "a", KeyState::Pending),
        ])
    };
    let bridged = between().bridging(&before);
    assert_eq!(bridged.active("a").map(|k| k.kid.as_str()), Some("a-1"));
    // Only for one reading: a bridge is not bridged again.
    assert!(between().bridging(&bridged).active("a").is_none());
    // Once a-2 is active, it signs.
    let after = registry_of(vec![
        key("a-1", "a", KeyState::Retired),
        key("a-2", "a", KeyState::Active),
    ])
    .bridging(&bridged);
    assert_eq!(after.active("a").map(|k| k.kid.as_str()), Some("a-2"));
    // A key revoked or archived is never bridged.
    for state in [KeyState::Revoked, KeyState::Archived] {
        let gone = registry_of(vec![key("a-1", "a", state)]).bridging(&before);
        assert!(gone.active("a").is_none(), "{state:?}");
    }
}
