//! The fallback's pure parts (the decision, the binding, the format) and its
//! store on a real directory.

use std::os::unix::fs::PermissionsExt as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use secrecy::ExposeSecret as _;

use super::format::{parse, render};
use super::*;
use crate::secrets::SecretSet;

const H: fn(u64) -> Duration = |h| Duration::from_secs(h * 3600);

#[test]
#[allow(clippy::type_complexity, reason = "a table reads best inline")]
fn when_a_cached_set_may_be_used() {
    let now = UNIX_EPOCH + H(1000);
    let max = H(24);
    let ago = |d: Duration| Some(now - d);
    // (cause, fresh SVID, fetched at, decision)
    let table: &[(Cause, bool, Option<SystemTime>, Decision)] = &[
        (
            Cause::Unavailable,
            true,
            ago(H(2)),
            Decision::Use { age: H(2) },
        ),
        // a refusal deletes, whatever else holds
        (Cause::Refused, true, ago(H(2)), Decision::Purge),
        (Cause::Refused, false, None, Decision::Purge),
        // a configuration error, a 404: the failure stands
        (Cause::Other, true, ago(H(2)), Decision::NotAnOutage),
        // the agent did not just vouch for the workload
        (Cause::Unavailable, false, ago(H(2)), Decision::NoFreshSvid),
        // nothing stored for this binding and SPIFFE ID
        (Cause::Unavailable, true, None, Decision::NoEntry),
        // at and past the maximum age
        (
            Cause::Unavailable,
            true,
            ago(H(24)),
            Decision::Expired { age: H(24) },
        ),
        (
            Cause::Unavailable,
            true,
            ago(H(25)),
            Decision::Expired { age: H(25) },
        ),
        (
            Cause::Unavailable,
            true,
            ago(Duration::from_secs(24 * 3600 - 1)),
            Decision::Use {
                age: Duration::from_secs(24 * 3600 - 1),
            },
        ),
        // a clock set back a little: age zero; far: unknown
        (
            Cause::Unavailable,
            true,
            Some(now + Duration::from_secs(30)),
            Decision::Use {
                age: Duration::ZERO,
            },
        ),
        (
            Cause::Unavailable,
            true,
            Some(now + H(1)),
            Decision::FromTheFuture,
        ),
    ];
    for (i, &(cause, fresh, fetched_at, want)) in table.iter().enumerate() {
        assert_eq!(decide(cause, fresh, fetched_at, now, max), want, "row {i}");
        assert_eq!(
            want.why_not(max).is_none(),
            matches!(want, Decision::Use { .. })
        );
    }
}

#[test]
fn causes_follow_the_exit_classes_and_a_token_refusal_is_not_the_identitys() {
    assert_eq!(Cause::of(ExitClass::Unavailable, false), Cause::Unavailable);
    assert_eq!(Cause::of(ExitClass::Refused, false), Cause::Refused);
    assert_eq!(Cause::of(ExitClass::Refused, true), Cause::Other);
    for class in [ExitClass::Config, ExitClass::Internal, ExitClass::Usage] {
        assert_eq!(Cause::of(class, false), Cause::Other, "{class:?}");
    }
}

pub(super) fn binding() -> Binding {
    Binding {
        api_url: "https://infisical.example/".into(),
        identity_id: "1f0e2d3c-4b5a-4968-8776-a5b4c3d2e1f0".into(),
        auth_method: "oidc-auth".into(),
        organization: None,
        project: "id:p".into(),
        environment: "prod".into(),
        paths: vec!["/".into()],
        flags: [false, true, true],
        tags: vec![],
        require: vec![],
        selection: vec![],
    }
}

const ID: &str = "spiffe://example.org/ns/prod/sa/billing";

/// A change to one field of a binding.
type Edit = fn(&mut Binding);

#[test]
fn every_binding_field_and_the_spiffe_id_change_the_digest() {
    let base = binding();
    let changes: &[(&str, Edit)] = &[
        ("api_url", |b| b.api_url.push('x')),
        ("identity", |b| b.identity_id.push('x')),
        ("method", |b| b.auth_method = "jwt-auth".into()),
        ("organization", |b| b.organization = Some("o".into())),
        ("project", |b| b.project = "slug:p".into()),
        ("environment", |b| b.environment = "dev".into()),
        ("paths", |b| b.paths.push("/app".into())),
        ("path order", |b| b.paths = vec!["/b".into(), "/a".into()]),
        ("recursive", |b| b.flags[0] = true),
        ("imports", |b| b.flags[1] = false),
        ("expand", |b| b.flags[2] = false),
        ("tags", |b| b.tags.push("t".into())),
        ("require", |b| b.require.push("K".into())),
        ("selection", |b| b.selection.push("only A".into())),
        // no field's text may slide into the next one's
        ("boundaries", |b| {
            b.environment = "prod/".into();
            b.paths = vec![String::new()];
        }),
    ];
    let mut seen = std::collections::HashSet::from([base.digest(ID)]);
    for (what, change) in changes {
        let mut edited = base.clone();
        change(&mut edited);
        assert!(
            seen.insert(edited.digest(ID)),
            "{what} does not change the digest"
        );
    }
    assert_ne!(base.digest(ID), base.digest("spiffe://example.org/other"));
    assert_eq!(base.digest(ID), binding().digest(ID), "deterministic");
    // The identity key ignores all but the API URL and the identity.
    let mut other = base.clone();
    other.environment = "dev".into();
    assert_eq!(other.identity_key(), base.identity_key());
    other.identity_id.push('x');
    assert_ne!(other.identity_key(), base.identity_key());
}

fn awkward_set() -> SecretSet {
    SecretSet::from_pairs(&[
        ("PEM", "-----BEGIN-----\nAB=\n-----END-----\n"),
        ("EMPTY", ""),
        ("SPACES", " 12 34 \n\n"),
        ("UNICODE", "grüß 世界 \u{1F512}"),
        ("weird name with spaces", "v"),
    ])
}

#[test]
fn the_format_round_trips_byte_for_byte_and_refuses_anything_else() {
    let set = awkward_set();
    let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let digest = binding().digest(ID);
    let bytes = render(&digest, at, &set);
    let back = parse(&bytes, &digest).unwrap();
    assert_eq!(back.fetched_at, at);
    assert_eq!(back.secrets.fingerprint(), set.fingerprint());
    assert_eq!(
        back.secrets.get("SPACES").unwrap().expose_secret(),
        " 12 34 \n\n"
    );
    assert!(parse(&bytes, &binding().digest("spiffe://x/y")).is_err());
    for cut in [0, 10, bytes.len() / 2, bytes.len() - 1] {
        assert!(parse(&bytes[..cut], &digest).is_err(), "cut at {cut}");
    }
    let mut longer = bytes.to_vec();
    longer.push(b'x');
    assert!(parse(&longer, &digest).is_err());
    let mut v2 = bytes.to_vec();
    v2[MAGIC_VERSION_AT] = b'2';
    assert!(parse(&v2, &digest).is_err());
}

/// Where the version digit sits in the first line.
const MAGIC_VERSION_AT: usize = "svid-exec fallback v".len();

fn store_in(dir: &std::path::Path) -> Store {
    Store::new(FallbackOptions {
        dir: dir.join("fallback"),
        max_age: DEFAULT_MAX_AGE,
        allow_non_tmpfs: true,
        binding: binding(),
    })
}

#[test]
fn a_stored_set_comes_back_and_a_purge_removes_every_binding_of_the_identity() {
    let scratch = tempfile::tempdir().unwrap();
    let store = store_in(scratch.path());
    let set = awkward_set();
    let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    store.save(ID, &set, at).unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(store.dir()), 0o700);
    let files: Vec<_> = std::fs::read_dir(store.dir()).unwrap().flatten().collect();
    assert_eq!(files.len(), 1, "one file, no temporary left");
    assert_eq!(mode(&files[0].path()), 0o600);

    let back = store.load(ID).unwrap().expect("stored");
    assert_eq!(back.fetched_at, at);
    assert_eq!(back.secrets.fingerprint(), set.fingerprint());
    assert!(store.load("spiffe://example.org/other").unwrap().is_none());

    // Another binding of the same identity, and another identity's set.
    let mut other = binding();
    other.environment = "dev".into();
    let dev = Store::new(FallbackOptions {
        binding: other,
        ..store.options.clone()
    });
    dev.save("spiffe://example.org/other", &set, at).unwrap();
    let mut stranger = binding();
    stranger.identity_id = "someone-else".into();
    let stranger = Store::new(FallbackOptions {
        binding: stranger,
        ..store.options.clone()
    });
    stranger.save(ID, &set, at).unwrap();
    assert_eq!(store.count_for_identity(), 2);

    assert_eq!(store.purge().unwrap(), 2);
    assert!(store.load(ID).unwrap().is_none());
    assert!(dev.load("spiffe://example.org/other").unwrap().is_none());
    assert!(
        stranger.load(ID).unwrap().is_some(),
        "another identity's set stays"
    );
}

#[test]
fn an_existing_directory_is_set_to_0700_and_a_replaced_set_is_the_new_one() {
    let scratch = tempfile::tempdir().unwrap();
    let store = store_in(scratch.path());
    std::fs::create_dir(store.dir()).unwrap();
    std::fs::set_permissions(store.dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let old = SecretSet::from_pairs(&[("A", "old")]);
    let new = SecretSet::from_pairs(&[("A", "new")]);
    store.save(ID, &old, SystemTime::now()).unwrap();
    store.save(ID, &new, SystemTime::now()).unwrap();
    let mode = std::fs::metadata(store.dir()).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o700);
    let back = store.load(ID).unwrap().unwrap();
    assert_eq!(back.secrets.get("A").unwrap().expose_secret(), "new");
}

#[test]
fn a_damaged_file_is_reported_not_used() {
    let scratch = tempfile::tempdir().unwrap();
    let store = store_in(scratch.path());
    store
        .save(ID, &SecretSet::from_pairs(&[("A", "1")]), SystemTime::now())
        .unwrap();
    let file = std::fs::read_dir(store.dir())
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    std::fs::write(&file, b"svid-exec fallback v1\nbinding nope\n").unwrap();
    let err = store.load(ID).err().expect("refused");
    assert!(matches!(err, FallbackError::Unreadable { .. }), "{err}");
}
