//! Tests of the secret engine against real stores (memory and redb).

use std::sync::Arc;
use std::time::Duration;

use spike_core::crypto::RECORD_TAG_LEN;
use spike_core::error::ErrorCode;
use spike_core::path::{PathPrefix, SecretPath};
use spike_core::pattern::PathSpan;
use spike_core::secret::SecretMap;
use spike_store::{Batch, MemoryStore, RedbStore, Store, Table};

use super::{SECRETS, SecretLimits, Secrets, Sight, VERSIONS, VersionOp, version_key};
use crate::error::AppResult;
use crate::fixtures::{Engine, code, keys};
use crate::keys::OpenKeys;

/// Bound on every test that waits on many tasks.
const TEST_TIMEOUT: Duration = Duration::from_secs(60);

type Fixture = Engine<Secrets>;

fn fixture() -> Fixture {
    fixture_with(SecretLimits::default())
}

fn fixture_with(limits: SecretLimits) -> Fixture {
    Engine::new(|store| Secrets::new(store, limits))
}

fn path(s: &str) -> SecretPath {
    SecretPath::parse(s).unwrap()
}

/// The spans of a listing of everything.
fn everything() -> [PathSpan; 1] {
    [PathSpan::Under(PathPrefix::ROOT)]
}

fn data(pairs: &[(&str, &str)]) -> SecretMap {
    pairs.iter().copied().collect()
}

/// Every row of both tables, to prove a refused operation changed nothing.
async fn dump(store: &dyn Store) -> Vec<(Table, Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    for t in [SECRETS, VERSIONS] {
        for (k, v) in store.scan(t, b"", None, 100_000).await.unwrap() {
            out.push((t, k, v));
        }
    }
    out
}

async fn raw(store: &dyn Store, table: Table, key: &[u8]) -> Option<Vec<u8>> {
    store.get(table, key).await.unwrap()
}

async fn overwrite(store: &dyn Store, table: Table, key: &[u8], value: Vec<u8>) {
    let mut b = Batch::new();
    b.put(table, key.to_vec(), value);
    store.commit(b).await.unwrap();
}

/// Reads `path` now, as a caller the secrets' (empty) scopes admit.
async fn read_now(
    secrets: &Secrets,
    keys: &OpenKeys,
    path: &SecretPath,
    version: Option<u64>,
) -> AppResult<spike_core::api::GetSecretResponse> {
    secrets
        .get(
            keys,
            path,
            version,
            &crate::fixtures::reader(),
            crate::clock::unix_now(),
        )
        .await
}

impl Fixture {
    async fn put(
        &self,
        p: &str,
        d: &[(&str, &str)],
    ) -> AppResult<spike_core::api::PutSecretResponse> {
        self.engine
            .put(&self.keys, &path(p), &data(d), None, None, Sight::Read)
            .await
    }

    async fn put_cas(
        &self,
        p: &str,
        d: &[(&str, &str)],
        cas: u64,
    ) -> AppResult<spike_core::api::PutSecretResponse> {
        self.engine
            .put(&self.keys, &path(p), &data(d), Some(cas), None, Sight::Read)
            .await
    }

    /// The value of key `k` in version `v` (current when `None`).
    async fn value(&self, p: &str, v: Option<u64>, k: &str) -> AppResult<String> {
        let got = read_now(&self.engine, &self.keys, &path(p), v).await?;
        Ok(got.data.get(k).unwrap().expose_secret().to_owned())
    }

    async fn versions_kept(&self, p: &str) -> Vec<u64> {
        let m = self.engine.metadata(&self.keys, &path(p)).await.unwrap();
        m.versions.iter().map(|v| v.version).collect()
    }

    async fn change(&self, p: &str, vs: &[u64], op: VersionOp) -> AppResult<(Vec<u64>, u64)> {
        let r = self
            .engine
            .change_versions(&self.keys, &path(p), vs, op)
            .await?;
        Ok((r.changed, r.current_version.unwrap_or_default()))
    }

    async fn dump(&self) -> Vec<(Table, Vec<u8>, Vec<u8>)> {
        dump(&*self.store).await
    }

    /// Follows `next` until it is `None`, returning every listed path and the page sizes.
    async fn list_all(
        &self,
        prefix: Option<&str>,
        limit: usize,
        visible: impl Fn(&SecretPath) -> bool + Copy,
    ) -> (Vec<String>, Vec<usize>) {
        let spans = [PathSpan::Under(
            prefix.map_or(PathPrefix::ROOT, |p| path(p).into()),
        )];
        let mut after: Option<String> = None;
        let mut paths = Vec::new();
        let mut pages = Vec::new();
        // Bounded: a cursor that does not advance would otherwise loop forever.
        for _ in 0..1000 {
            let (page, next) = self
                .engine
                .list(&self.keys, &spans, after.as_deref(), limit, visible)
                .await
                .unwrap();
            assert!(
                page.len() <= limit.max(1),
                "page of {} over limit {limit}",
                page.len()
            );
            pages.push(page.len());
            paths.extend(page.into_iter().map(|e| e.path));
            match next {
                None => return (paths, pages),
                Some(n) => {
                    assert_ne!(after.as_deref(), Some(n.as_str()), "cursor did not advance");
                    after = Some(n);
                }
            }
        }
        panic!("listing never ended");
    }
}

// ---- put, unchanged, versions ----

#[tokio::test]
async fn put_mints_versions_and_identical_content_is_unchanged() {
    let f = fixture();
    let r = f
        .put("app/db", &[("user", "a"), ("pass", "x")])
        .await
        .unwrap();
    assert_eq!((r.version, r.unchanged), (Some(1), false));

    let before = f.dump().await;
    // Same content, keys given in another order: same map, so no new version.
    let r = f
        .put("app/db", &[("pass", "x"), ("user", "a")])
        .await
        .unwrap();
    assert_eq!((r.version, r.unchanged), (Some(1), true));
    assert_eq!(f.versions_kept("app/db").await, vec![1]);
    assert_eq!(
        f.dump().await,
        before,
        "an unchanged put must write nothing"
    );

    let r = f
        .put("app/db", &[("user", "a"), ("pass", "y")])
        .await
        .unwrap();
    assert_eq!((r.version, r.unchanged), (Some(2), false));
    assert_eq!(f.versions_kept("app/db").await, vec![1, 2]);
    assert_eq!(f.value("app/db", None, "pass").await.unwrap(), "y");
    assert_eq!(f.value("app/db", Some(1), "pass").await.unwrap(), "x");
    assert_eq!(f.value("app/db", Some(0), "pass").await.unwrap(), "y");

    let m = f.engine.metadata(&f.keys, &path("app/db")).await.unwrap();
    assert_eq!((m.current_version, m.latest_version), (2, 2));
    assert_eq!(m.path, "app/db");
}

#[tokio::test]
async fn stored_bytes_hold_no_plaintext_value() {
    let f = fixture();
    f.put("app/db", &[("pass", "correct-horse-battery-staple")])
        .await
        .unwrap();
    let needle = b"correct-horse-battery-staple";
    for (_, k, v) in f.dump().await {
        assert!(!k.windows(needle.len()).any(|w| w == needle));
        assert!(!v.windows(needle.len()).any(|w| w == needle));
    }
}

#[tokio::test]
async fn get_and_metadata_of_missing_secret_are_not_found() {
    let f = fixture();
    assert_eq!(code(f.value("nope", None, "k").await), ErrorCode::NotFound);
    assert_eq!(
        code(f.engine.metadata(&f.keys, &path("nope")).await),
        ErrorCode::NotFound
    );
    f.put("yes", &[("k", "v")]).await.unwrap();
    assert_eq!(
        code(f.value("yes", Some(2), "k").await),
        ErrorCode::NotFound
    );
}

// ---- compare-and-set ----

#[tokio::test]
async fn cas_zero_creates_only() {
    let f = fixture();
    let r = f.put_cas("app/db", &[("k", "1")], 0).await.unwrap();
    assert_eq!((r.version, r.unchanged), (Some(1), false));

    let before = f.dump().await;
    let e = f.put_cas("app/db", &[("k", "2")], 0).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::CasMismatch);
    assert_eq!(e.0.status(), 409);
    assert_eq!(f.dump().await, before);
    assert_eq!(f.value("app/db", None, "k").await.unwrap(), "1");
}

#[tokio::test]
async fn cas_with_current_version_succeeds_and_a_stale_one_changes_nothing() {
    let f = fixture();
    f.put("s", &[("k", "1")]).await.unwrap();
    let r = f.put_cas("s", &[("k", "2")], 1).await.unwrap();
    assert_eq!(r.version, Some(2));

    let before = f.dump().await;
    // Stale, future and "must not exist" expectations all fail.
    for wrong in [1, 3, 99, 0] {
        assert_eq!(
            code(f.put_cas("s", &[("k", "3")], wrong).await),
            ErrorCode::CasMismatch,
            "cas {wrong}"
        );
    }
    // The CAS check comes before the "unchanged" shortcut.
    assert_eq!(
        code(f.put_cas("s", &[("k", "2")], 1).await),
        ErrorCode::CasMismatch
    );
    assert_eq!(f.dump().await, before);
    let m = f.engine.metadata(&f.keys, &path("s")).await.unwrap();
    assert_eq!((m.current_version, m.latest_version), (2, 2));

    // A matching CAS with identical content is simply unchanged.
    let r = f.put_cas("s", &[("k", "2")], 2).await.unwrap();
    assert_eq!((r.version, r.unchanged), (Some(2), true));
}

// ---- version numbers and pruning ----

#[tokio::test]
async fn version_numbers_are_never_reused_after_destroy() {
    let f = fixture();
    for i in 1..=3 {
        f.put("s", &[("k", &i.to_string())]).await.unwrap();
    }
    // Destroying the newest leaves nothing current (version 2 does not come back).
    let (changed, current) = f.change("s", &[3], VersionOp::Destroy).await.unwrap();
    assert_eq!((changed, current), (vec![3], 0));
    let r = f.put("s", &[("k", "new")]).await.unwrap();
    assert_eq!(r.version, Some(4));

    // Destroy everything: current drops to 0, and the next put still does not reuse numbers,
    // even with the content of a destroyed version.
    f.change("s", &[1, 2, 4], VersionOp::Destroy).await.unwrap();
    let m = f.engine.metadata(&f.keys, &path("s")).await.unwrap();
    assert_eq!((m.current_version, m.latest_version), (0, 4));
    assert_eq!(code(f.value("s", None, "k").await), ErrorCode::Destroyed);
    let r = f.put("s", &[("k", "new")]).await.unwrap();
    assert_eq!((r.version, r.unchanged), (Some(5), false));
}

#[tokio::test]
async fn old_versions_are_pruned_and_their_numbers_not_reused() {
    let f = fixture_with(SecretLimits {
        max_versions: 3,
        ..SecretLimits::default()
    });
    for i in 1..=5 {
        assert_eq!(
            f.put("s", &[("k", &i.to_string())]).await.unwrap().version,
            Some(i)
        );
    }
    assert_eq!(f.versions_kept("s").await, vec![3, 4, 5]);
    let m = f.engine.metadata(&f.keys, &path("s")).await.unwrap();
    assert_eq!(
        (m.current_version, m.latest_version, m.max_versions),
        (5, 5, 3)
    );

    for pruned in [1, 2] {
        assert_eq!(
            code(f.value("s", Some(pruned), "k").await),
            ErrorCode::NotFound
        );
        assert!(
            raw(&*f.store, VERSIONS, &version_key(&path("s"), pruned))
                .await
                .is_none()
        );
        assert_eq!(
            code(f.change("s", &[pruned], VersionOp::Undelete).await),
            ErrorCode::NotFound
        );
    }
    assert_eq!(f.value("s", Some(3), "k").await.unwrap(), "3");

    assert_eq!(f.put("s", &[("k", "6")]).await.unwrap().version, Some(6));
    assert_eq!(f.versions_kept("s").await, vec![4, 5, 6]);
    assert!(
        raw(&*f.store, VERSIONS, &version_key(&path("s"), 3))
            .await
            .is_none()
    );
    // Exactly the kept versions have an encrypted value.
    let sealed = f.store.scan(VERSIONS, b"", None, 100).await.unwrap();
    assert_eq!(sealed.len(), 3);
}

// ---- delete, undelete, destroy ----

#[tokio::test]
async fn delete_undelete_destroy() {
    let f = fixture();
    for i in 1..=3 {
        f.put("s", &[("k", &i.to_string())]).await.unwrap();
    }

    // Empty list: the current version. Nothing older becomes current in its place.
    assert_eq!(
        f.change("s", &[], VersionOp::Delete).await.unwrap(),
        (vec![3], 0)
    );
    assert_eq!(code(f.value("s", Some(3), "k").await), ErrorCode::Deleted);
    assert_eq!(code(f.value("s", None, "k").await), ErrorCode::Deleted);
    // An older version is still there, asked for by number.
    assert_eq!(f.value("s", Some(2), "k").await.unwrap(), "2");
    // Soft delete keeps the sealed value.
    assert!(
        raw(&*f.store, VERSIONS, &version_key(&path("s"), 3))
            .await
            .is_some()
    );

    assert_eq!(
        f.change("s", &[2], VersionOp::Delete).await.unwrap(),
        (vec![2], 0)
    );
    assert_eq!(code(f.value("s", Some(2), "k").await), ErrorCode::Deleted);

    // Deleting an already deleted version changes (and writes) nothing.
    let before = f.dump().await;
    assert_eq!(
        f.change("s", &[2], VersionOp::Delete).await.unwrap(),
        (vec![], 0)
    );
    assert_eq!(f.dump().await, before);

    // Undelete with an empty list restores the newest deleted version.
    assert_eq!(
        f.change("s", &[], VersionOp::Undelete).await.unwrap(),
        (vec![3], 3)
    );
    assert_eq!(f.value("s", None, "k").await.unwrap(), "3");
    assert_eq!(
        f.change("s", &[], VersionOp::Undelete).await.unwrap(),
        (vec![2], 3)
    );
    assert_eq!(f.value("s", Some(2), "k").await.unwrap(), "2");

    // Destroy removes the sealed value for good.
    assert_eq!(
        f.change("s", &[3], VersionOp::Destroy).await.unwrap(),
        (vec![3], 0)
    );
    assert!(
        raw(&*f.store, VERSIONS, &version_key(&path("s"), 3))
            .await
            .is_none()
    );
    assert_eq!(code(f.value("s", Some(3), "k").await), ErrorCode::Destroyed);
    assert_eq!(code(f.value("s", None, "k").await), ErrorCode::Destroyed);
    // Undeleting a destroyed version says it cannot be undone.
    assert_eq!(
        code(f.change("s", &[3], VersionOp::Undelete).await),
        ErrorCode::Destroyed
    );
    assert_eq!(
        f.change("s", &[3], VersionOp::Destroy).await.unwrap(),
        (vec![], 0)
    );
    let m = f.engine.metadata(&f.keys, &path("s")).await.unwrap();
    let v3 = m.versions.iter().find(|v| v.version == 3).unwrap();
    assert!(v3.destroyed);

    // A soft-deleted version can be destroyed, and then never undeleted.
    f.change("s", &[1], VersionOp::Delete).await.unwrap();
    assert_eq!(
        f.change("s", &[1], VersionOp::Destroy).await.unwrap(),
        (vec![1], 0)
    );
    assert!(
        raw(&*f.store, VERSIONS, &version_key(&path("s"), 1))
            .await
            .is_none()
    );
    assert_eq!(
        f.change("s", &[], VersionOp::Undelete).await.unwrap(),
        (vec![], 0)
    );
    assert_eq!(code(f.value("s", Some(1), "k").await), ErrorCode::Destroyed);
}

/// Deleting the newest version (a rotated-in credential) never brings the one before it back:
/// reading without a version says it is deleted, and a later write is a new version.
#[tokio::test]
async fn deleting_the_newest_version_never_makes_an_older_one_current() {
    let f = fixture();
    f.put("db", &[("pass", "leaked-old")]).await.unwrap();
    f.put("db", &[("pass", "rotated-new")]).await.unwrap();
    f.change("db", &[], VersionOp::Delete).await.unwrap();
    assert_eq!(code(f.value("db", None, "pass").await), ErrorCode::Deleted);
    let m = f.engine.metadata(&f.keys, &path("db")).await.unwrap();
    assert_eq!((m.current_version, m.latest_version), (0, 2));
    // Writing the old value again is a new version, not "unchanged" against version 1.
    let r = f.put("db", &[("pass", "leaked-old")]).await.unwrap();
    assert_eq!((r.version, r.unchanged), (Some(3), false));
}

#[tokio::test]
async fn deleting_every_version_leaves_current_zero() {
    let f = fixture();
    f.put("s", &[("k", "1")]).await.unwrap();
    f.put("s", &[("k", "2")]).await.unwrap();
    assert_eq!(
        f.change("s", &[1, 2], VersionOp::Delete).await.unwrap().1,
        0
    );
    assert_eq!(code(f.value("s", None, "k").await), ErrorCode::Deleted);
    // Nothing current: a delete with an empty list has nothing to do.
    assert_eq!(
        f.change("s", &[], VersionOp::Delete).await.unwrap(),
        (vec![], 0)
    );
    let (entries, _) = f
        .engine
        .list(&f.keys, &everything(), None, 10, |_| true)
        .await
        .unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].current_version, 0);
}

#[tokio::test]
async fn change_versions_with_an_unknown_version_changes_nothing() {
    let f = fixture();
    f.put("s", &[("k", "1")]).await.unwrap();
    f.put("s", &[("k", "2")]).await.unwrap();
    let before = f.dump().await;
    for op in [VersionOp::Delete, VersionOp::Undelete, VersionOp::Destroy] {
        assert_eq!(code(f.change("s", &[99], op).await), ErrorCode::NotFound);
        // One good and one bad version: all or nothing.
        assert_eq!(code(f.change("s", &[1, 99], op).await), ErrorCode::NotFound);
        assert_eq!(
            code(f.change("missing", &[1], op).await),
            ErrorCode::NotFound
        );
        assert_eq!(
            code(f.change("missing", &[], op).await),
            ErrorCode::NotFound
        );
    }
    assert_eq!(f.dump().await, before);
    assert_eq!(f.value("s", Some(1), "k").await.unwrap(), "1");
}

// ---- limits ----

#[tokio::test]
async fn content_limits_are_enforced_and_nothing_is_written() {
    let f = fixture();
    let limits = SecretLimits::default();
    let p = path("s");

    assert_eq!(
        code(
            f.engine
                .put(&f.keys, &p, &SecretMap::new(), None, None, Sight::Read)
                .await
        ),
        ErrorCode::BadRequest
    );

    let too_many: SecretMap = (0..=limits.max_keys)
        .map(|i| (format!("k{i}"), "v"))
        .collect();
    assert_eq!(
        code(
            f.engine
                .put(&f.keys, &p, &too_many, None, None, Sight::Read)
                .await
        ),
        ErrorCode::TooLarge
    );

    let big = "x".repeat(limits.max_value_len + 1);
    assert_eq!(code(f.put("s", &[("k", &big)]).await), ErrorCode::TooLarge);

    let long_key = "k".repeat(limits.max_key_len + 1);
    assert_eq!(
        code(f.put("s", &[(&long_key, "v")]).await),
        ErrorCode::BadRequest
    );
    assert_eq!(code(f.put("s", &[("", "v")]).await), ErrorCode::BadRequest);

    assert!(f.dump().await.is_empty(), "a refused put wrote something");

    // The limits are inclusive.
    let at_limit: SecretMap = (0..limits.max_keys)
        .map(|i| (format!("k{i}"), "v"))
        .collect();
    f.engine
        .put(&f.keys, &p, &at_limit, None, None, Sight::Read)
        .await
        .unwrap();
    let max_value = "x".repeat(limits.max_value_len);
    let max_key = "k".repeat(limits.max_key_len);
    let r = f.put("s", &[(&max_key, &max_value)]).await.unwrap();
    assert_eq!(r.version, Some(2));

    // A refused put on an existing secret leaves it as it was.
    let before = f.dump().await;
    assert_eq!(code(f.put("s", &[("k", &big)]).await), ErrorCode::TooLarge);
    assert_eq!(f.dump().await, before);
}

// ---- listing ----

#[tokio::test]
async fn list_respects_segment_boundaries_of_the_prefix() {
    let f = fixture();
    for p in ["db", "db/x", "db/x/y", "dbx", "db-a", "dc", "d"] {
        f.put(p, &[("k", "v")]).await.unwrap();
    }
    let (got, _) = f.list_all(Some("db"), 100, |_| true).await;
    assert_eq!(got, vec!["db", "db/x", "db/x/y"]);
    let (got, _) = f.list_all(Some("db/x"), 100, |_| true).await;
    assert_eq!(got, vec!["db/x", "db/x/y"]);
    let (got, _) = f.list_all(Some("d"), 100, |_| true).await;
    assert_eq!(got, vec!["d"]);
    let (got, _) = f.list_all(None, 100, |_| true).await;
    assert_eq!(got, vec!["d", "db", "db-a", "db/x", "db/x/y", "dbx", "dc"]);
    let (got, _) = f.list_all(Some("nothing"), 100, |_| true).await;
    assert!(got.is_empty());
}

#[tokio::test]
async fn list_honors_the_visibility_filter() {
    let f = fixture();
    for p in ["a/open", "a/secret", "a/open2"] {
        f.put(p, &[("k", "v")]).await.unwrap();
    }
    let (got, _) = f
        .list_all(Some("a"), 100, |p| !p.as_str().contains("secret"))
        .await;
    assert_eq!(got, vec!["a/open", "a/open2"]);
    let (got, _) = f.list_all(Some("a"), 100, |_| false).await;
    assert!(got.is_empty());
}

#[tokio::test]
async fn pagination_yields_every_visible_path_once_in_order() {
    let f = fixture();
    let mut expected = Vec::new();
    for i in 0..25 {
        let p = format!("app/s{i:02}");
        f.put(&p, &[("k", "v")]).await.unwrap();
        expected.push(p);
    }
    // More hidden entries than one internal scan chunk, sorted before the visible ones, so
    // the engine has to scan on past them.
    for i in 0..70 {
        f.put(&format!("app/h{i:02}"), &[("k", "v")]).await.unwrap();
    }
    f.put("appx/s", &[("k", "v")]).await.unwrap();
    f.put("other/s", &[("k", "v")]).await.unwrap();
    let visible = |p: &SecretPath| !p.as_str().starts_with("app/h");

    let (got, pages) = f.list_all(Some("app"), 10, visible).await;
    assert_eq!(got, expected);
    assert_eq!(pages, vec![10, 10, 5]);

    // One-entry pages.
    let (got, _) = f.list_all(Some("app"), 1, visible).await;
    assert_eq!(got, expected);
    // A limit of 0 is clamped to 1, not an endless run of empty pages.
    let (got, _) = f.list_all(Some("app"), 0, visible).await;
    assert_eq!(got, expected);

    // An exact multiple of the limit may end with an empty page; the contract holds.
    for i in 25..30 {
        let p = format!("app/s{i:02}");
        f.put(&p, &[("k", "v")]).await.unwrap();
        expected.push(p);
    }
    let (got, pages) = f.list_all(Some("app"), 10, visible).await;
    assert_eq!(got, expected);
    assert_eq!(pages.iter().sum::<usize>(), 30);
    assert!(
        pages == vec![10, 10, 10] || pages == vec![10, 10, 10, 0],
        "{pages:?}"
    );
}

#[tokio::test]
async fn list_page_size_is_capped() {
    let f = fixture_with(SecretLimits {
        max_page: 3,
        ..SecretLimits::default()
    });
    for i in 0..7 {
        f.put(&format!("s{i}"), &[("k", "v")]).await.unwrap();
    }
    let (page, next) = f
        .engine
        .list(&f.keys, &everything(), None, 1000, |_| true)
        .await
        .unwrap();
    assert_eq!(page.len(), 3);
    assert_eq!(next.as_deref(), Some("s2"));
    let (got, _) = f.list_all(None, 1000, |_| true).await;
    assert_eq!(got.len(), 7);
}

/// The cursor comes from the client: any string is a bad request at worst, never a 500.
#[tokio::test]
async fn any_client_cursor_is_handled() {
    let f = fixture();
    for p in ["a", "b", "c"] {
        f.put(p, &[("k", "v")]).await.unwrap();
    }
    let list = |after: String| {
        let f = &f;
        async move {
            f.engine
                .list(&f.keys, &everything(), Some(&after), 10, |_| true)
                .await
                .map(|(page, _)| page.into_iter().map(|e| e.path).collect::<Vec<_>>())
        }
    };
    assert_eq!(list("a".into()).await.unwrap(), vec!["b", "c"]);
    // Not a path, and past the end.
    assert_eq!(list("a//..x".into()).await.unwrap(), vec!["b", "c"]);
    assert!(list("z".into()).await.unwrap().is_empty());
    assert_eq!(list(String::new()).await.unwrap(), vec!["a", "b", "c"]);
    // Longer than any key the store accepts.
    let huge = "a".repeat(spike_store::MAX_KEY_LEN + 1);
    assert_eq!(code(list(huge).await), ErrorCode::BadRequest);
}

// ---- tampering ----

#[tokio::test]
async fn tampered_metadata_fails_closed() {
    let f = fixture();
    f.put("s", &[("k", "v")]).await.unwrap();
    let good = raw(&*f.store, SECRETS, b"s").await.unwrap();

    // A flipped bit in the body (say, to undelete or to change `current`), then in the tag.
    for at in [good.len() - 2, RECORD_TAG_LEN + 3, 0] {
        let mut bad = good.clone();
        bad[at] ^= 0x01;
        overwrite(&*f.store, SECRETS, b"s", bad).await;
        assert_eq!(code(f.value("s", None, "k").await), ErrorCode::Internal);
        assert_eq!(
            code(f.engine.metadata(&f.keys, &path("s")).await),
            ErrorCode::Internal
        );
        assert_eq!(code(f.put("s", &[("k", "w")]).await), ErrorCode::Internal);
        assert_eq!(
            code(f.change("s", &[1], VersionOp::Undelete).await),
            ErrorCode::Internal
        );
        assert_eq!(
            code(
                f.engine
                    .list(&f.keys, &everything(), None, 10, |_| true)
                    .await
            ),
            ErrorCode::Internal
        );
    }
    // Truncated below the tag length.
    overwrite(
        &*f.store,
        SECRETS,
        b"s",
        good[..RECORD_TAG_LEN - 1].to_vec(),
    )
    .await;
    assert_eq!(code(f.value("s", None, "k").await), ErrorCode::Internal);

    // Restoring the genuine record restores service.
    overwrite(&*f.store, SECRETS, b"s", good).await;
    assert_eq!(f.value("s", None, "k").await.unwrap(), "v");
}

#[tokio::test]
async fn metadata_moved_to_another_path_does_not_open() {
    let f = fixture();
    f.put("a", &[("k", "va")]).await.unwrap();
    f.put("b", &[("k", "vb")]).await.unwrap();
    let a_meta = raw(&*f.store, SECRETS, b"a").await.unwrap();
    // Onto an existing path, and onto a path that never existed.
    overwrite(&*f.store, SECRETS, b"b", a_meta.clone()).await;
    overwrite(&*f.store, SECRETS, b"c", a_meta).await;
    for p in ["b", "c"] {
        assert_eq!(code(f.value(p, None, "k").await), ErrorCode::Internal);
        assert_eq!(
            code(f.engine.metadata(&f.keys, &path(p)).await),
            ErrorCode::Internal
        );
    }
    assert_eq!(f.value("a", None, "k").await.unwrap(), "va");
}

#[tokio::test]
async fn sealed_value_moved_to_another_path_or_version_does_not_open() {
    let f = fixture();
    f.put("a", &[("k", "value-of-a")]).await.unwrap();
    f.put("b", &[("k", "b1")]).await.unwrap();
    f.put("b", &[("k", "b2")]).await.unwrap();
    let a1 = raw(&*f.store, VERSIONS, &version_key(&path("a"), 1))
        .await
        .unwrap();
    let b1 = raw(&*f.store, VERSIONS, &version_key(&path("b"), 1))
        .await
        .unwrap();

    // a's v1 onto b's v1: another path (and incarnation).
    overwrite(&*f.store, VERSIONS, &version_key(&path("b"), 1), a1).await;
    let e = f.value("b", Some(1), "k").await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::Internal);
    assert!(!e.0.message.contains("value-of-a"));

    // b's v1 onto b's v2: same path, another version.
    overwrite(&*f.store, VERSIONS, &version_key(&path("b"), 2), b1).await;
    let e = f.value("b", None, "k").await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::Internal);
    assert!(!e.0.message.contains("b1"));
    // The unchanged-check of a put reads the current value too: it fails rather than minting.
    assert_eq!(code(f.put("b", &[("k", "b1")]).await), ErrorCode::Internal);

    // A flipped ciphertext byte.
    let mut a1 = raw(&*f.store, VERSIONS, &version_key(&path("a"), 1))
        .await
        .unwrap();
    let last = a1.len() - 1;
    a1[last] ^= 0x80;
    overwrite(&*f.store, VERSIONS, &version_key(&path("a"), 1), a1).await;
    assert_eq!(code(f.value("a", None, "k").await), ErrorCode::Internal);
}

#[tokio::test]
async fn values_and_metadata_from_another_nexus_key_do_not_open() {
    let f = fixture();
    f.put("s", &[("k", "v")]).await.unwrap();
    let other = keys();
    assert_eq!(
        code(read_now(&f.engine, &other, &path("s"), None).await),
        ErrorCode::Internal
    );
}

// ---- concurrency ----

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_puts_to_one_path_lose_no_update() {
    let f = Arc::new(fixture_with(SecretLimits {
        max_versions: 32,
        ..SecretLimits::default()
    }));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20 {
        let f = f.clone();
        tasks.spawn(async move {
            let r = f.put("hot", &[("writer", &i.to_string())]).await.unwrap();
            assert!(!r.unchanged);
            (r.version.unwrap(), i)
        });
    }
    let results = tokio::time::timeout(TEST_TIMEOUT, tasks.join_all())
        .await
        .expect("puts did not finish");
    let mut versions: Vec<u64> = results.iter().map(|(v, _)| *v).collect();
    versions.sort_unstable();
    assert_eq!(versions, (1..=20).collect::<Vec<_>>());
    let m = f.engine.metadata(&f.keys, &path("hot")).await.unwrap();
    assert_eq!((m.current_version, m.latest_version), (20, 20));
    assert_eq!(m.versions.len(), 20);
    // Each version holds what the writer that was told that number wrote.
    for (v, i) in results {
        assert_eq!(
            f.value("hot", Some(v), "writer").await.unwrap(),
            i.to_string()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_with_cas_zero_admit_exactly_one() {
    let f = Arc::new(fixture());
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20 {
        let f = f.clone();
        tasks.spawn(async move {
            f.put_cas("new", &[("writer", &i.to_string())], 0)
                .await
                .map(|r| (r.version.unwrap(), i))
                .map_err(|e| e.code())
        });
    }
    let results = tokio::time::timeout(TEST_TIMEOUT, tasks.join_all())
        .await
        .expect("puts did not finish");
    let winners: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    assert!(
        results
            .iter()
            .filter_map(|r| r.as_ref().err())
            .all(|c| *c == ErrorCode::CasMismatch)
    );
    let (v, i) = *winners[0];
    assert_eq!(v, 1);
    assert_eq!(f.value("new", None, "writer").await.unwrap(), i.to_string());
    assert_eq!(f.versions_kept("new").await, vec![1]);
}

/// Two engines over one store do not share locks (as two Nexus replicas would not): the
/// store's compare-and-set alone must prevent a lost update. A loser gets a retryable
/// conflict and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_engines_on_one_store_lose_no_update() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let keys = Arc::new(keys());
    let engines = [
        Arc::new(Secrets::new(store.clone(), SecretLimits::default())),
        Arc::new(Secrets::new(store.clone(), SecretLimits::default())),
    ];
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20u64 {
        let engine = engines[usize::try_from(i % 2).unwrap()].clone();
        let keys = keys.clone();
        tasks.spawn(async move {
            let d = data(&[("writer", &i.to_string())]);
            engine
                .put(&keys, &path("hot"), &d, None, None, Sight::Read)
                .await
                .map(|r| (r.version.unwrap(), i))
                .map_err(|e| e.code())
        });
    }
    let results = tokio::time::timeout(TEST_TIMEOUT, tasks.join_all())
        .await
        .expect("puts did not finish");
    let mut won: Vec<(u64, u64)> = results.iter().filter_map(|r| r.ok()).collect();
    let errors: Vec<ErrorCode> = results.iter().filter_map(|r| r.err()).collect();
    assert!(
        errors.iter().all(|c| *c == ErrorCode::CasMismatch),
        "{errors:?}"
    );
    won.sort_unstable();
    let n = u64::try_from(won.len()).unwrap();
    assert!(n >= 1);
    // Every acknowledged put got its own number, with no gaps: none was overwritten.
    assert_eq!(
        won.iter().map(|w| w.0).collect::<Vec<_>>(),
        (1..=n).collect::<Vec<_>>()
    );
    let m = engines[0].metadata(&keys, &path("hot")).await.unwrap();
    assert_eq!((m.current_version, m.latest_version), (n, n));
    for (v, i) in won
        .iter()
        .filter(|(v, _)| m.versions.iter().any(|k| k.version == *v))
    {
        let got = read_now(&engines[1], &keys, &path("hot"), Some(*v))
            .await
            .unwrap();
        assert_eq!(
            got.data.get("writer").unwrap().expose_secret(),
            i.to_string()
        );
    }
}

// ---- the durable store ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redb_versions_survive_reopen_and_destroy_removes_the_value() {
    let dir = tempfile::tempdir().unwrap();
    let keys = keys();
    let p = path("app/db");
    {
        let store: Arc<dyn Store> = Arc::new(RedbStore::open(dir.path()).unwrap());
        let secrets = Secrets::new(store.clone(), SecretLimits::default());
        for v in ["1", "2", "3"] {
            secrets
                .put(&keys, &p, &data(&[("k", v)]), None, None, Sight::Read)
                .await
                .unwrap();
        }
        let r = secrets
            .change_versions(&keys, &p, &[2], VersionOp::Destroy)
            .await
            .unwrap();
        assert_eq!(r.changed, vec![2]);
        secrets
            .change_versions(&keys, &p, &[3], VersionOp::Delete)
            .await
            .unwrap();
        assert!(
            store
                .get(VERSIONS, &version_key(&p, 2))
                .await
                .unwrap()
                .is_none()
        );
        store.close().await.unwrap();
    }
    let store: Arc<dyn Store> = Arc::new(RedbStore::open(dir.path()).unwrap());
    let secrets = Secrets::new(store.clone(), SecretLimits::default());
    let m = secrets.metadata(&keys, &p).await.unwrap();
    // The newest (3) is deleted: nothing is current, and version 1 does not come back.
    assert_eq!((m.current_version, m.latest_version), (0, 3));
    assert!(m.versions.iter().any(|v| v.version == 2 && v.destroyed));
    assert!(
        store
            .get(VERSIONS, &version_key(&p, 2))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        code(read_now(&secrets, &keys, &p, None).await),
        ErrorCode::Deleted
    );
    let got = read_now(&secrets, &keys, &p, Some(1)).await.unwrap();
    assert_eq!(got.data.get("k").unwrap().expose_secret(), "1");
    // Undelete survives too; the next number is 4.
    secrets
        .change_versions(&keys, &p, &[], VersionOp::Undelete)
        .await
        .unwrap();
    assert_eq!(
        read_now(&secrets, &keys, &p, None).await.unwrap().version,
        3
    );
    let r = secrets
        .put(&keys, &p, &data(&[("k", "4")]), None, None, Sight::Read)
        .await
        .unwrap();
    assert_eq!(r.version, Some(4));
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redb_concurrent_puts_lose_no_update() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(RedbStore::open(dir.path()).unwrap());
    let secrets = Arc::new(Secrets::new(store.clone(), SecretLimits::default()));
    let keys = Arc::new(keys());
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20 {
        let (secrets, keys) = (secrets.clone(), keys.clone());
        tasks.spawn(async move {
            let d = data(&[("writer", &i.to_string())]);
            secrets
                .put(&keys, &path("hot"), &d, None, None, Sight::Read)
                .await
                .unwrap()
                .version
                .unwrap()
        });
    }
    let mut versions = tokio::time::timeout(TEST_TIMEOUT, tasks.join_all())
        .await
        .expect("puts did not finish");
    versions.sort_unstable();
    assert_eq!(versions, (1..=20).collect::<Vec<_>>());
    let m = secrets.metadata(&keys, &path("hot")).await.unwrap();
    assert_eq!((m.current_version, m.latest_version), (20, 20));
    // The default keeps 10 versions; the pruned values are gone from disk.
    assert_eq!(
        m.versions.iter().map(|v| v.version).collect::<Vec<_>>(),
        (11..=20).collect::<Vec<_>>()
    );
    let sealed = store.scan(VERSIONS, b"", None, 100).await.unwrap();
    assert_eq!(sealed.len(), 10);
    store.close().await.unwrap();
}

// ---- batches ----

use super::{BatchEntry, PutOutcome};
use spike_core::api::BatchItemStatus;

/// Runs a batch of `(path, data, cas)` and returns each item's outcome or error code.
async fn batch(
    secrets: &Secrets,
    keys: &OpenKeys,
    items: &[(&str, SecretMap, Option<u64>)],
    dry_run: bool,
) -> Vec<Result<PutOutcome, ErrorCode>> {
    let paths: Vec<SecretPath> = items.iter().map(|(p, _, _)| path(p)).collect();
    let entries: Vec<BatchEntry<'_>> = items
        .iter()
        .zip(&paths)
        .map(|((_, d, cas), p)| BatchEntry {
            path: p,
            data: d,
            cas: *cas,
            scope: None,
            sight: Sight::Read,
        })
        .collect();
    secrets
        .put_batch(keys, &entries, dry_run)
        .await
        .into_iter()
        .map(|r| r.map_err(|e| e.code()))
        .collect()
}

fn created(version: u64) -> Result<PutOutcome, ErrorCode> {
    Ok(PutOutcome {
        version: Some(version),
        status: BatchItemStatus::Created,
    })
}

fn updated(version: u64) -> Result<PutOutcome, ErrorCode> {
    Ok(PutOutcome {
        version: Some(version),
        status: BatchItemStatus::Updated,
    })
}

fn unchanged(version: u64) -> Result<PutOutcome, ErrorCode> {
    Ok(PutOutcome {
        version: Some(version),
        status: BatchItemStatus::Unchanged,
    })
}

#[tokio::test]
async fn batch_writes_each_item_and_a_repeat_changes_nothing() {
    let f = fixture();
    f.put("b/existing", &[("k", "old")]).await.unwrap();
    let items: Vec<(&str, SecretMap, Option<u64>)> = vec![
        ("b/one", data(&[("k", "1")]), None),
        ("b/two", data(&[("k", "2"), ("x", "y")]), None),
        ("b/existing", data(&[("k", "new")]), None),
    ];
    let first = batch(&f.engine, &f.keys, &items, false).await;
    assert_eq!(first, vec![created(1), created(1), updated(2)]);
    assert_eq!(f.value("b/two", None, "x").await.unwrap(), "y");
    assert_eq!(f.value("b/existing", None, "k").await.unwrap(), "new");
    assert_eq!(f.value("b/existing", Some(1), "k").await.unwrap(), "old");

    let before = f.dump().await;
    let second = batch(&f.engine, &f.keys, &items, false).await;
    assert_eq!(second, vec![unchanged(1), unchanged(1), unchanged(2)]);
    assert_eq!(f.dump().await, before, "a repeated batch must not write");
    assert_eq!(f.versions_kept("b/existing").await, vec![1, 2]);
}

#[tokio::test]
async fn batch_dry_run_reports_and_writes_nothing() {
    let f = fixture();
    f.put("d/same", &[("k", "v")]).await.unwrap();
    f.put("d/diff", &[("k", "v")]).await.unwrap();
    f.put("d/diff", &[("k", "v2")]).await.unwrap();
    let before = f.dump().await;
    let items = vec![
        ("d/new", data(&[("k", "v")]), None),
        ("d/same", data(&[("k", "v")]), None),
        ("d/diff", data(&[("k", "v3")]), None),
        ("d/cas", data(&[("k", "v")]), Some(4)),
    ];
    let got = batch(&f.engine, &f.keys, &items, true).await;
    assert_eq!(
        got,
        vec![
            created(1),
            unchanged(1),
            updated(3),
            Err(ErrorCode::CasMismatch)
        ]
    );
    assert_eq!(f.dump().await, before, "a dry run must not write");
}

#[tokio::test]
async fn batch_items_fail_alone() {
    let f = fixture_with(SecretLimits {
        max_keys: 2,
        ..SecretLimits::default()
    });
    f.put("f/cas", &[("k", "v")]).await.unwrap();
    let items = vec![
        ("f/ok", data(&[("k", "v")]), None),
        ("f/empty", SecretMap::new(), None),
        ("f/big", data(&[("a", "1"), ("b", "2"), ("c", "3")]), None),
        ("f/cas", data(&[("k", "w")]), Some(7)),
        ("f/cas0", data(&[("k", "w")]), Some(0)),
    ];
    let got = batch(&f.engine, &f.keys, &items, false).await;
    assert_eq!(
        got,
        vec![
            created(1),
            Err(ErrorCode::BadRequest),
            Err(ErrorCode::TooLarge),
            Err(ErrorCode::CasMismatch),
            created(1),
        ]
    );
    assert_eq!(
        code(f.value("f/empty", None, "k").await),
        ErrorCode::NotFound
    );
    assert_eq!(code(f.value("f/big", None, "a").await), ErrorCode::NotFound);
    assert_eq!(f.value("f/cas", None, "k").await.unwrap(), "v");
}

#[tokio::test]
async fn batch_prunes_old_versions_like_single_puts() {
    let f = fixture_with(SecretLimits {
        max_versions: 2,
        ..SecretLimits::default()
    });
    for i in 1..=4 {
        let items = vec![("p/s", data(&[("k", &i.to_string())]), None)];
        let got = batch(&f.engine, &f.keys, &items, false).await;
        assert_eq!(got[0].unwrap().version, Some(i));
    }
    assert_eq!(f.versions_kept("p/s").await, vec![3, 4]);
    let sealed = f.store.scan(VERSIONS, b"", None, 100).await.unwrap();
    assert_eq!(sealed.len(), 2, "pruned values are gone");
}

/// A store whose first commit reports a conflict without applying anything, as if another
/// writer had changed a path between planning and commit.
struct ConflictOnce {
    inner: MemoryStore,
    fired: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl Store for ConflictOnce {
    async fn get(&self, t: Table, k: &[u8]) -> Result<Option<Vec<u8>>, spike_store::StoreError> {
        self.inner.get(t, k).await
    }
    async fn scan(
        &self,
        t: Table,
        p: &[u8],
        a: Option<&[u8]>,
        l: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, spike_store::StoreError> {
        self.inner.scan(t, p, a, l).await
    }
    async fn commit(&self, b: Batch) -> Result<(), spike_store::StoreError> {
        if !self.fired.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return Err(spike_store::StoreError::Conflict { condition: 0 });
        }
        self.inner.commit(b).await
    }
    async fn snapshot(&self) -> Result<Vec<spike_store::SnapshotEntry>, spike_store::StoreError> {
        self.inner.snapshot().await
    }
    fn stats(&self) -> spike_store::StoreStats {
        self.inner.stats()
    }
    async fn close(&self) -> Result<(), spike_store::StoreError> {
        self.inner.close().await
    }
}

#[tokio::test]
async fn a_conflicting_batch_chunk_is_redone_item_by_item() {
    let store: Arc<dyn Store> = Arc::new(ConflictOnce {
        inner: MemoryStore::new(),
        fired: std::sync::atomic::AtomicBool::new(false),
    });
    let secrets = Secrets::new(store.clone(), SecretLimits::default());
    let keys = keys();
    let items = vec![
        ("c/a", data(&[("k", "1")]), None),
        ("c/b", data(&[("k", "2")]), Some(0)),
    ];
    let got = batch(&secrets, &keys, &items, false).await;
    assert_eq!(got, vec![created(1), created(1)]);
    let m = secrets.metadata(&keys, &path("c/b")).await.unwrap();
    assert_eq!(m.current_version, 1);
}

#[tokio::test]
async fn batch_on_redb_commits_many_items_in_few_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(RedbStore::open(dir.path()).unwrap());
    let secrets = Secrets::new(store.clone(), SecretLimits::default());
    let keys = keys();
    let names: Vec<String> = (0..300).map(|i| format!("many/s{i:04}")).collect();
    let items: Vec<(&str, SecretMap, Option<u64>)> = names
        .iter()
        .map(|n| (n.as_str(), data(&[("k", n)]), None))
        .collect();
    let before = store.stats().transactions;
    let got = batch(&secrets, &keys, &items, false).await;
    assert!(got.iter().all(|r| *r == created(1)), "{got:?}");
    let used = store.stats().transactions - before;
    assert!(used <= 2, "300 items took {used} store transactions");
    let again = batch(&secrets, &keys, &items, false).await;
    assert!(again.iter().all(|r| *r == unchanged(1)));
    assert_eq!(
        store.stats().transactions - before,
        used,
        "no write the second time"
    );
    store.close().await.unwrap();
}

// ---- writers that may not read ----

/// The guess oracle: a writer without `read` puts a guessed value and looks at the answer.
/// Before, a right guess answered `unchanged` at the current version; now every blind put
/// writes, and right and wrong guesses get the same answer.
#[tokio::test]
async fn writer_without_read_cannot_confirm_a_guess() {
    let f = fixture();
    f.put("pay/key", &[("pass", "hunter2")]).await.unwrap();
    let guess = |value: &'static str, sight| {
        let f = &f;
        async move {
            f.engine
                .put(
                    &f.keys,
                    &path("pay/key"),
                    &data(&[("pass", value)]),
                    None,
                    None,
                    sight,
                )
                .await
                .unwrap()
        }
    };
    let right = guess("hunter2", Sight::Blind).await;
    let wrong = guess("letmein", Sight::Blind).await;
    assert_eq!(right, wrong, "a right guess must look like a wrong one");
    assert_eq!(
        (right.version, right.unchanged),
        (None, false),
        "no version number, never unchanged"
    );
    // Both guesses were written as new versions, so the owner's value is no longer current.
    assert_eq!(f.versions_kept("pay/key").await, vec![1, 2, 3]);
    // A writer that may list sees versions (listings show them anyway), but still no compare.
    let listed = guess("letmein", Sight::List).await;
    assert_eq!((listed.version, listed.unchanged), (Some(4), false));
    // Only a reader gets `unchanged`.
    let read = guess("letmein", Sight::Read).await;
    assert_eq!((read.version, read.unchanged), (Some(4), true));
}

/// The cas oracle: a blind writer probes the current version through compare-and-set
/// mismatch messages. They no longer name it.
#[tokio::test]
async fn cas_mismatch_does_not_tell_a_blind_writer_the_current_version() {
    let f = fixture();
    for v in ["1", "2", "3"] {
        f.put("pay/key", &[("pass", v)]).await.unwrap();
    }
    let before = f.dump().await;
    let mismatch = |sight| {
        let f = &f;
        async move {
            let d = data(&[("pass", "x")]);
            let e = f
                .engine
                .put(&f.keys, &path("pay/key"), &d, Some(7), None, sight)
                .await
                .unwrap_err();
            assert_eq!(e.code(), ErrorCode::CasMismatch);
            e.0.message
        }
    };
    let blind = mismatch(Sight::Blind).await;
    assert!(!blind.contains('3'), "{blind}");
    assert_eq!(f.dump().await, before, "a mismatch writes nothing");
    // The same mismatch for a writer that may list still says where the secret is.
    let listed = mismatch(Sight::List).await;
    assert!(listed.contains("current version is 3"), "{listed}");
}

/// The same oracles through a batch (seeding and imports): blind items always write, say
/// `written` for new and existing secrets alike, and carry no version.
#[tokio::test]
async fn blind_batch_items_reveal_neither_equality_nor_versions() {
    let f = fixture();
    f.put("pay/key", &[("pass", "hunter2")]).await.unwrap();
    let (existing, fresh, cas) = (path("pay/key"), path("pay/new"), path("pay/cas"));
    let same = data(&[("pass", "hunter2")]);
    let entries = [
        BatchEntry {
            path: &existing,
            data: &same,
            cas: None,
            scope: None,
            sight: Sight::Blind,
        },
        BatchEntry {
            path: &fresh,
            data: &same,
            cas: None,
            scope: None,
            sight: Sight::Blind,
        },
        BatchEntry {
            path: &cas,
            data: &same,
            cas: Some(5),
            scope: None,
            sight: Sight::Blind,
        },
    ];
    let got = f.engine.put_batch(&f.keys, &entries, false).await;
    let written = PutOutcome {
        version: None,
        status: BatchItemStatus::Written,
    };
    assert_eq!(got[0].as_ref().unwrap(), &written);
    assert_eq!(got[1].as_ref().unwrap(), &written);
    let e = got[2].as_ref().unwrap_err();
    assert_eq!(e.code(), ErrorCode::CasMismatch);
    assert!(!e.0.message.contains("is 0"), "{}", e.0.message);
    assert_eq!(f.versions_kept("pay/key").await, vec![1, 2]);
}

/// A put without `cas` whose commit loses to a batch (batches take no stripe lock) is planned
/// again instead of failing with "changed concurrently".
#[tokio::test]
async fn a_put_without_cas_retries_a_commit_a_batch_got_to_first() {
    let store: Arc<dyn Store> = Arc::new(ConflictOnce {
        inner: MemoryStore::new(),
        fired: std::sync::atomic::AtomicBool::new(false),
    });
    let secrets = Secrets::new(store, SecretLimits::default());
    let keys = keys();
    let r = secrets
        .put(
            &keys,
            &path("hot"),
            &data(&[("k", "v")]),
            None,
            None,
            Sight::Read,
        )
        .await
        .unwrap();
    assert_eq!((r.version, r.unchanged), (Some(1), false));
}

/// Many single puts and batches write one path at once: no put without `cas` fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_puts_and_batches_to_one_path_never_fail_a_put_without_cas() {
    let f = Arc::new(fixture_with(SecretLimits {
        max_versions: 1000,
        ..SecretLimits::default()
    }));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..40 {
        let f = f.clone();
        tasks.spawn(async move {
            let d = data(&[("writer", &i.to_string())]);
            if i % 2 == 0 {
                f.engine
                    .put(&f.keys, &path("hot"), &d, None, None, Sight::Read)
                    .await
                    .map(|_| ())
            } else {
                let p = path("hot");
                let entry = BatchEntry {
                    path: &p,
                    data: &d,
                    cas: None,
                    scope: None,
                    sight: Sight::Read,
                };
                let mut got = f.engine.put_batch(&f.keys, &[entry], false).await;
                got.pop().unwrap().map(|_| ())
            }
            .map_err(|e| e.0.message)
        });
    }
    let results = tokio::time::timeout(TEST_TIMEOUT, tasks.join_all())
        .await
        .expect("puts did not finish");
    let failed: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(failed.is_empty(), "{failed:?}");
    let m = f.engine.metadata(&f.keys, &path("hot")).await.unwrap();
    assert_eq!(m.latest_version, 40);
}

// ---- listing reads only where the caller may list ----

/// A store that counts the `secrets` rows a listing reads (scanned or fetched).
struct CountingStore {
    inner: MemoryStore,
    rows_read: std::sync::atomic::AtomicUsize,
}

impl CountingStore {
    fn count(&self, n: usize) {
        self.rows_read
            .fetch_add(n, std::sync::atomic::Ordering::SeqCst);
    }
}

#[async_trait::async_trait]
impl Store for CountingStore {
    async fn get(&self, t: Table, k: &[u8]) -> Result<Option<Vec<u8>>, spike_store::StoreError> {
        let row = self.inner.get(t, k).await?;
        if t == SECRETS {
            self.count(usize::from(row.is_some()));
        }
        Ok(row)
    }
    async fn scan(
        &self,
        t: Table,
        p: &[u8],
        a: Option<&[u8]>,
        l: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, spike_store::StoreError> {
        let rows = self.inner.scan(t, p, a, l).await?;
        if t == SECRETS {
            self.count(rows.len());
        }
        Ok(rows)
    }
    async fn commit(&self, b: Batch) -> Result<(), spike_store::StoreError> {
        self.inner.commit(b).await
    }
    async fn snapshot(&self) -> Result<Vec<spike_store::SnapshotEntry>, spike_store::StoreError> {
        self.inner.snapshot().await
    }
    fn stats(&self) -> spike_store::StoreStats {
        self.inner.stats()
    }
    async fn close(&self) -> Result<(), spike_store::StoreError> {
        self.inner.close().await
    }
}

/// Lists everything `caller` may list, page by page, as the route does; returns the paths and
/// how many rows the store read for them.
async fn list_as(
    engine: &spike_core::policy::PolicyEngine,
    caller: &str,
    hidden: usize,
    limit: usize,
) -> (Vec<String>, usize) {
    let store = Arc::new(CountingStore {
        inner: MemoryStore::new(),
        rows_read: std::sync::atomic::AtomicUsize::new(0),
    });
    let secrets = Secrets::new(store.clone(), SecretLimits::default());
    let keys = keys();
    let mut names: Vec<String> = ["apps/a/one", "apps/c/one", "apps/c/two", "db-x/k", "db/k"]
        .map(str::to_owned)
        .into();
    names.extend((0..hidden).map(|i| format!("apps/b/h{i:04}")));
    names.extend((0..hidden).map(|i| format!("apps/ax/h{i:04}")));
    for n in &names {
        secrets
            .put(
                &keys,
                &path(n),
                &data(&[("k", "v")]),
                None,
                None,
                Sight::Read,
            )
            .await
            .unwrap();
    }
    store
        .rows_read
        .store(0, std::sync::atomic::Ordering::SeqCst);
    let id = spike_core::id::SpiffeId::new(caller).unwrap();
    let mine = engine.for_caller(&id);
    let spans = mine.list_spans(&PathPrefix::ROOT);
    let (mut listed, mut after) = (Vec::new(), None::<String>);
    loop {
        let (page, next) = secrets
            .list(&keys, &spans, after.as_deref(), limit, |p| mine.may_list(p))
            .await
            .unwrap();
        listed.extend(page.into_iter().map(|e| e.path));
        match next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    (
        listed,
        store.rows_read.load(std::sync::atomic::Ordering::SeqCst),
    )
}

/// The listing-cost oracle: a caller that may list `apps/a/**` and `apps/c/**` lists
/// everything and watches how much work Nexus does. Before, the scan read every secret in
/// between (`apps/ax/…`, `apps/b/…`), so the cost grew with how many it could not see; now
/// the rows read are the same whether there are none or hundreds.
#[tokio::test]
async fn listing_cost_does_not_reveal_how_many_hidden_secrets_lie_between_two_names() {
    let caller = "spiffe://spike.test/app";
    let policy = |name, pattern| {
        spike_core::policy::Policy::parse(
            name,
            caller,
            pattern,
            [spike_core::policy::Permission::List],
        )
        .unwrap()
    };
    let engine = spike_core::policy::PolicyEngine::new([
        policy("a", "apps/a/**"),
        policy("c", "apps/c/*"),
        policy("db", "db/**"),
        policy("dbx", "db-x/**"),
    ]);
    let expected = ["apps/a/one", "apps/c/one", "apps/c/two", "db-x/k", "db/k"];
    for limit in [1, 2, 100] {
        let (none_hidden, reads_none) = list_as(&engine, caller, 0, limit).await;
        let (many_hidden, reads_many) = list_as(&engine, caller, 300, limit).await;
        assert_eq!(none_hidden, expected, "limit {limit}");
        assert_eq!(many_hidden, expected, "limit {limit}");
        assert_eq!(
            reads_many, reads_none,
            "limit {limit}: hidden secrets were read"
        );
    }
}

/// A scope change as a put carries it, with IDs of the trust domain of [`crate::fixtures::reader`]
/// (so the test reader may still read what it sets).
fn scope_change(update: &spike_core::api::ScopeUpdate) -> crate::scope::ScopeChange {
    let td = spike_core::id::TrustDomain::new("spike.dev").unwrap();
    crate::scope::ScopeChange::parse(update, &td).unwrap()
}

/// A scope that admits the test reader and one destination, with a TTL.
fn narrower_scope() -> crate::scope::ScopeChange {
    scope_change(&spike_core::api::ScopeUpdate {
        ttl_seconds: Some(3600),
        allowed_spiffe_ids: Some(vec!["spiffe://spike.dev/test/**".into()]),
        allowed_destinations: Some(vec!["api.example.com".into()]),
    })
}

impl Fixture {
    async fn update_scope(
        &self,
        p: &str,
        cas: Option<u64>,
        scope: &crate::scope::ScopeChange,
        sight: Sight,
    ) -> AppResult<spike_core::api::PutSecretResponse> {
        self.engine
            .update_scope(&self.keys, &path(p), cas, scope, sight)
            .await
    }
}

#[tokio::test]
async fn a_scope_update_carries_the_values_into_a_new_version() {
    let f = fixture();
    f.put("k8s/web/db", &[("user", "alice"), ("pass", "s3cret")])
        .await
        .unwrap();
    let r = f
        .update_scope("k8s/web/db", Some(1), &narrower_scope(), Sight::List)
        .await
        .unwrap();
    assert_eq!((r.version, r.unchanged), (Some(2), false));
    assert_eq!(
        f.value("k8s/web/db", Some(2), "user").await.unwrap(),
        "alice"
    );
    assert_eq!(
        f.value("k8s/web/db", Some(2), "pass").await.unwrap(),
        "s3cret"
    );
    let m = f
        .engine
        .metadata(&f.keys, &path("k8s/web/db"))
        .await
        .unwrap();
    assert_eq!(m.current_version, 2);
    assert_eq!(m.ttl_seconds, Some(3600));
    assert_eq!(m.allowed_spiffe_ids, vec!["spiffe://spike.dev/test/**"]);
    assert_eq!(m.allowed_destinations, vec!["api.example.com:443"]);
    // As for any new version, the TTL starts again with it; the old version keeps its own.
    let v2 = m.versions.iter().find(|v| v.version == 2).unwrap();
    assert!(v2.expires_at.is_some());
    assert!(
        m.versions
            .iter()
            .find(|v| v.version == 1)
            .unwrap()
            .expires_at
            .is_none()
    );
    // What is left out of the update stays as it was.
    let only_ttl = scope_change(&spike_core::api::ScopeUpdate {
        ttl_seconds: Some(0),
        ..Default::default()
    });
    let r = f
        .update_scope("k8s/web/db", None, &only_ttl, Sight::Read)
        .await
        .unwrap();
    assert_eq!(r.version, Some(3));
    let m = f
        .engine
        .metadata(&f.keys, &path("k8s/web/db"))
        .await
        .unwrap();
    assert_eq!((m.ttl_seconds, m.allowed_destinations.len()), (None, 1));
    assert_eq!(f.value("k8s/web/db", None, "pass").await.unwrap(), "s3cret");
}

#[tokio::test]
async fn a_scope_update_with_a_stale_cas_writes_nothing() {
    let f = fixture();
    f.put("k8s/web/db", &[("pass", "one")]).await.unwrap();
    f.put("k8s/web/db", &[("pass", "two")]).await.unwrap();
    let before = f.dump().await;
    for cas in [0, 1, 3] {
        let r = f
            .update_scope("k8s/web/db", Some(cas), &narrower_scope(), Sight::List)
            .await;
        assert_eq!(code(r), ErrorCode::CasMismatch, "cas {cas}");
    }
    assert_eq!(f.dump().await, before);
    // A blind writer's mismatch does not name the current version either.
    let e = f
        .update_scope("k8s/web/db", Some(7), &narrower_scope(), Sight::Blind)
        .await
        .unwrap_err();
    assert!(!e.0.message.contains('2'), "{}", e.0.message);
    assert_eq!(f.dump().await, before);
}

#[tokio::test]
async fn a_scope_update_without_a_readable_version_is_refused_as_a_read_would_be() {
    let f = fixture();
    assert_eq!(
        code(
            f.update_scope("k8s/web/none", None, &narrower_scope(), Sight::Read)
                .await
        ),
        ErrorCode::NotFound
    );
    for (p, op, want) in [
        ("k8s/web/deleted", VersionOp::Delete, ErrorCode::Deleted),
        (
            "k8s/web/destroyed",
            VersionOp::Destroy,
            ErrorCode::Destroyed,
        ),
    ] {
        f.put(p, &[("pass", "x")]).await.unwrap();
        f.change(p, &[1], op).await.unwrap();
        let before = f.dump().await;
        let read = read_now(&f.engine, &f.keys, &path(p), None).await;
        assert_eq!(code(read), want);
        for sight in [Sight::Read, Sight::List, Sight::Blind] {
            let r = f.update_scope(p, None, &narrower_scope(), sight).await;
            assert_eq!(code(r), want, "{p}");
        }
        assert_eq!(f.dump().await, before, "{p}: nothing written");
    }
    // Past its TTL: a read is refused, and so is carrying its values on.
    let short = scope_change(&spike_core::api::ScopeUpdate {
        ttl_seconds: Some(1),
        ..Default::default()
    });
    f.engine
        .put(
            &f.keys,
            &path("k8s/web/expired"),
            &data(&[("pass", "x")]),
            None,
            Some(&short),
            Sight::Read,
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let before = f.dump().await;
    let r = f
        .update_scope("k8s/web/expired", Some(1), &narrower_scope(), Sight::List)
        .await;
    assert_eq!(code(r), ErrorCode::Expired);
    assert_eq!(f.dump().await, before);
}

#[tokio::test]
async fn a_scope_update_that_changes_nothing_writes_nothing() {
    let f = fixture();
    f.put("k8s/web/db", &[("pass", "x")]).await.unwrap();
    f.update_scope("k8s/web/db", None, &narrower_scope(), Sight::Read)
        .await
        .unwrap();
    let before = f.dump().await;
    for sight in [Sight::Read, Sight::List] {
        let r = f
            .update_scope("k8s/web/db", Some(2), &narrower_scope(), sight)
            .await
            .unwrap();
        assert_eq!((r.version, r.unchanged), (Some(2), true));
        // An empty update changes nothing too.
        let empty = scope_change(&spike_core::api::ScopeUpdate::default());
        let r = f
            .update_scope("k8s/web/db", None, &empty, sight)
            .await
            .unwrap();
        assert!(r.unchanged);
    }
    assert_eq!(f.dump().await, before);
}

/// A writer that may neither read nor list learns nothing from a scope update: not the
/// version, not whether the scope was already so (the scope is metadata it may not see), and
/// never a value (the answer has no place for one).
#[tokio::test]
async fn a_blind_scope_update_tells_nothing() {
    let f = fixture();
    f.put("k8s/web/db", &[("pass", "hunter2")]).await.unwrap();
    let first = f
        .update_scope("k8s/web/db", None, &narrower_scope(), Sight::Blind)
        .await
        .unwrap();
    let same = f
        .update_scope("k8s/web/db", None, &narrower_scope(), Sight::Blind)
        .await
        .unwrap();
    assert_eq!(first, same, "a scope already so must look like a change");
    assert_eq!((first.version, first.unchanged), (None, false));
    let json = serde_json::to_string(&first).unwrap();
    assert!(!json.contains("hunter2"), "{json}");
    assert_eq!(f.versions_kept("k8s/web/db").await, vec![1, 2, 3]);
    assert_eq!(
        f.value("k8s/web/db", None, "pass").await.unwrap(),
        "hunter2"
    );
}
