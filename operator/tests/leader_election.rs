//! Leader election against kube's tower-test mock API server, which here plays a small but
//! faithful Lease store: `get` (404 when absent), `create` (409 when present) and `update`
//! (409 when the `resourceVersion` is stale), on the one Lease path the chart's Role allows.
//! Time is tokio's paused clock, which the elector's injected clock follows.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::client::Body;
use spike_operator::runtime::leader::{Clock, LeaderElector, LeaderError, LeaseTimings, LossCause};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const NS: &str = "spike-system";
const NAME: &str = "spike-operator";
const ME: &str = "spike-operator-7d9f-a";
const OTHER: &str = "spike-operator-7d9f-b";
const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/spike-system/leases";

/// A wall clock that moves with tokio's (paused) time.
struct TokioClock {
    base: Timestamp,
    start: tokio::time::Instant,
}

impl Clock for TokioClock {
    fn now(&self) -> Timestamp {
        let elapsed = SignedDuration::try_from(self.start.elapsed()).expect("a small duration");
        self.base.checked_add(elapsed).expect("a valid time")
    }
}

fn base() -> Timestamp {
    Timestamp::from_second(1_800_000_000).expect("a valid time")
}

/// The fake API server's state, shared with the test.
#[derive(Default)]
struct Store {
    lease: Option<Lease>,
    version: u64,
    /// Every request, as `METHOD path`.
    log: Vec<String>,
    /// Answer the next update with 409 after applying `winner` as another writer's update.
    conflict_next_update: Option<LeaseSpec>,
    /// Answer everything with 500.
    broken: bool,
}

impl Store {
    fn spec(&self) -> LeaseSpec {
        self.lease
            .as_ref()
            .and_then(|l| l.spec.clone())
            .expect("a lease")
    }

    /// Another replica's write.
    fn write_foreign(&mut self, spec: LeaseSpec) {
        self.version += 1;
        let version = self.version.to_string();
        let lease = self.lease.get_or_insert_with(|| lease(spec.clone(), ""));
        lease.spec = Some(spec);
        lease.metadata.resource_version = Some(version);
    }

    fn count(&self, request: &str) -> usize {
        self.log.iter().filter(|l| l.as_str() == request).count()
    }
}

fn lease(spec: LeaseSpec, version: &str) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(NAME.to_owned()),
            namespace: Some(NS.to_owned()),
            resource_version: Some(version.to_owned()).filter(|v| !v.is_empty()),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
    }
}

fn held_by(holder: &str, renewed: Timestamp) -> LeaseSpec {
    LeaseSpec {
        holder_identity: Some(holder.to_owned()),
        lease_duration_seconds: Some(15),
        acquire_time: Some(MicroTime(renewed)),
        renew_time: Some(MicroTime(renewed)),
        lease_transitions: Some(2),
        ..LeaseSpec::default()
    }
}

fn status(code: StatusCode, reason: &str) -> Response<Body> {
    let body = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "status": "Failure",
        "message": reason, "reason": reason, "code": code.as_u16(),
    });
    Response::builder()
        .status(code)
        .body(Body::from(serde_json::to_vec(&body).expect("json")))
        .expect("a response")
}

fn ok(code: StatusCode, lease: &Lease) -> Response<Body> {
    Response::builder()
        .status(code)
        .body(Body::from(serde_json::to_vec(lease).expect("json")))
        .expect("a response")
}

async fn answer(store: &Mutex<Store>, request: Request<Body>) -> Response<Body> {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let body = request.into_body().collect_bytes().await.expect("a body");
    let mut s = store.lock().expect("the store");
    s.log.push(format!("{method} {path}"));
    if s.broken {
        return status(StatusCode::INTERNAL_SERVER_ERROR, "InternalError");
    }
    let named = format!("{LEASES}/{NAME}");
    match (method, path.as_str()) {
        (Method::GET, p) if p == named => match &s.lease {
            Some(l) => ok(StatusCode::OK, l),
            None => status(StatusCode::NOT_FOUND, "NotFound"),
        },
        (Method::POST, LEASES) => {
            if s.lease.is_some() {
                return status(StatusCode::CONFLICT, "AlreadyExists");
            }
            let mut sent: Lease = serde_json::from_slice(&body).expect("a lease");
            assert_eq!(sent.metadata.name.as_deref(), Some(NAME));
            s.version += 1;
            sent.metadata.resource_version = Some(s.version.to_string());
            s.lease = Some(sent.clone());
            ok(StatusCode::CREATED, &sent)
        }
        (Method::PUT, p) if p == named => {
            let mut sent: Lease = serde_json::from_slice(&body).expect("a lease");
            if let Some(winner) = s.conflict_next_update.take() {
                s.write_foreign(winner);
                return status(StatusCode::CONFLICT, "Conflict");
            }
            let current = s
                .lease
                .as_ref()
                .and_then(|l| l.metadata.resource_version.clone());
            if sent.metadata.resource_version != current {
                return status(StatusCode::CONFLICT, "Conflict");
            }
            s.version += 1;
            sent.metadata.resource_version = Some(s.version.to_string());
            s.lease = Some(sent.clone());
            ok(StatusCode::OK, &sent)
        }
        (method, path) => panic!("the elector may not {method} {path}"),
    }
}

/// One elector running against the fake store.
struct Harness {
    store: Arc<Mutex<Store>>,
    leadership: tokio::sync::watch::Receiver<bool>,
    stop: Option<oneshot::Sender<()>>,
    run: JoinHandle<Result<(), LeaderError>>,
}

impl Harness {
    fn start(initial: Option<LeaseSpec>) -> Self {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let store = Arc::new(Mutex::new(Store::default()));
        if let Some(spec) = initial {
            store.lock().expect("the store").write_foreign(spec);
        }
        let server = Arc::clone(&store);
        tokio::spawn(async move {
            while let Some((request, send)) = handle.next_request().await {
                send.send_response(answer(&server, request).await);
            }
        });
        let clock = Arc::new(TokioClock {
            base: base(),
            start: tokio::time::Instant::now(),
        });
        let client = kube::Client::new(service, NS);
        let elector =
            LeaderElector::with_clock(client, NS, NAME, ME, LeaseTimings::default(), clock)
                .expect("an elector");
        let leadership = elector.leadership();
        let (stop, stopped) = oneshot::channel::<()>();
        let run = tokio::spawn(elector.run(async move {
            let _ = stopped.await;
        }));
        Self {
            store,
            leadership,
            stop: Some(stop),
            run,
        }
    }

    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().expect("the store")
    }

    async fn until_leader(&mut self) {
        self.leadership
            .wait_for(|leading| *leading)
            .await
            .expect("the elector runs");
    }

    async fn shutdown(mut self) -> (Result<(), LeaderError>, Arc<Mutex<Store>>) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let result = self.run.await.expect("the elector did not panic");
        (result, self.store)
    }
}

#[tokio::test(start_paused = true)]
async fn creates_an_absent_lease_renews_it_and_releases_it_on_shutdown() {
    let mut h = Harness::start(None);
    h.until_leader().await;
    let created = h.store().spec();
    assert_eq!(created.holder_identity.as_deref(), Some(ME));
    assert_eq!(created.lease_duration_seconds, Some(15));
    assert_eq!(created.lease_transitions, Some(0));
    assert_eq!(created.acquire_time, Some(MicroTime(base())));
    assert_eq!(created.renew_time, Some(MicroTime(base())));
    assert_eq!(
        h.store().log[..2],
        [format!("GET {LEASES}/{NAME}"), format!("POST {LEASES}")]
    );

    // Renewals every retry period keep the acquisition time and move the renew time.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let renewed = h.store().spec();
    assert!(h.store().count(&format!("PUT {LEASES}/{NAME}")) >= 3);
    assert_eq!(renewed.acquire_time, created.acquire_time);
    assert!(renewed.renew_time > created.renew_time);
    assert_eq!(renewed.lease_transitions, Some(0));
    assert!(*h.leadership.borrow());

    let leadership = h.leadership.clone();
    let (result, store) = h.shutdown().await;
    result.expect("a graceful end");
    assert!(!*leadership.borrow());
    let released = store.lock().expect("the store").spec();
    assert_eq!(released.holder_identity, None);
    assert_eq!(released.lease_duration_seconds, Some(1));
    assert_eq!(released.lease_transitions, Some(0));
}

#[tokio::test(start_paused = true)]
async fn takes_over_a_lease_left_unrenewed_for_its_duration() {
    // The old holder's renewTime is far in the past, but only local observation counts.
    let stale = held_by(OTHER, base() - SignedDuration::from_secs(3600));
    let mut h = Harness::start(Some(stale));
    tokio::time::sleep(Duration::from_secs(13)).await;
    assert!(!*h.leadership.borrow());
    assert_eq!(h.store().count(&format!("PUT {LEASES}/{NAME}")), 0);

    h.until_leader().await;
    let taken = h.store().spec();
    assert_eq!(taken.holder_identity.as_deref(), Some(ME));
    assert_eq!(taken.lease_transitions, Some(3));
    let acquired = taken.acquire_time.expect("an acquire time").0;
    assert!(acquired.duration_since(base()) >= SignedDuration::from_secs(15));
    assert_eq!(h.store().count(&format!("POST {LEASES}")), 0);
    h.shutdown().await.0.expect("a graceful end");
}

#[tokio::test(start_paused = true)]
async fn stands_by_while_another_holder_renews() {
    let h = Harness::start(Some(held_by(OTHER, base())));
    for second in (2..=60).step_by(2) {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let renewed = base() + SignedDuration::from_secs(second);
        h.store().write_foreign(held_by(OTHER, renewed));
    }
    assert!(!*h.leadership.borrow());
    assert!(!h.leadership.has_changed().expect("the elector runs"));
    assert_eq!(h.store().count(&format!("PUT {LEASES}/{NAME}")), 0);
    assert_eq!(h.store().count(&format!("POST {LEASES}")), 0);
    assert!(h.store().count(&format!("GET {LEASES}/{NAME}")) >= 25);
    let (result, store) = h.shutdown().await;
    result.expect("a graceful end");
    // A standby never writes, not even to release.
    assert_eq!(
        store
            .lock()
            .expect("the store")
            .spec()
            .holder_identity
            .as_deref(),
        Some(OTHER)
    );
}

#[tokio::test(start_paused = true)]
async fn losing_the_race_for_a_free_lease_with_409_leaves_it_a_standby() {
    let mut free = held_by(OTHER, base());
    free.holder_identity = None;
    let h = Harness::start(Some(free));
    // The other candidate's write lands first; ours is refused.
    h.store().conflict_next_update = Some(held_by(OTHER, base()));
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(h.store().count(&format!("PUT {LEASES}/{NAME}")), 1);
    assert!(!*h.leadership.borrow());
    assert!(!h.leadership.has_changed().expect("the elector runs"));
    assert_eq!(h.store().spec().holder_identity.as_deref(), Some(OTHER));
    h.shutdown().await.0.expect("a graceful end");
}

fn lost(result: Result<(), LeaderError>) -> LossCause {
    match result {
        Err(LeaderError::LeadershipLost {
            namespace,
            name,
            cause,
        }) => {
            assert_eq!((namespace.as_str(), name.as_str()), (NS, NAME));
            cause
        }
        other => panic!("expected a lost lease, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_leader_whose_renewal_conflicts_gives_up_at_once() {
    let mut h = Harness::start(None);
    h.until_leader().await;
    h.store().conflict_next_update = Some(held_by(OTHER, base()));
    let leadership = h.leadership.clone();
    let result = h.run.await.expect("no panic");
    assert_eq!(lost(result), LossCause::Conflict);
    assert!(!*leadership.borrow());
}

#[tokio::test(start_paused = true)]
async fn a_leader_that_sees_another_holder_gives_up() {
    let mut h = Harness::start(None);
    h.until_leader().await;
    h.store().write_foreign(held_by(OTHER, base()));
    let leadership = h.leadership.clone();
    let result = h.run.await.expect("no panic");
    assert_eq!(
        lost(result),
        LossCause::TakenOver {
            holder: Some(OTHER.to_owned())
        }
    );
    assert!(!*leadership.borrow());
}

#[tokio::test(start_paused = true)]
async fn a_leader_that_cannot_renew_gives_up_after_the_renew_deadline() {
    let mut h = Harness::start(None);
    h.until_leader().await;
    let broke_at = tokio::time::Instant::now();
    h.store().broken = true;
    let leadership = h.leadership.clone();
    let result = h.run.await.expect("no panic");
    assert_eq!(lost(result), LossCause::RenewDeadlinePassed);
    assert!(!*leadership.borrow());
    // Before any standby may take over (15 s unchanged), after the 10 s deadline.
    let waited = broke_at.elapsed();
    assert!(
        waited > Duration::from_secs(8) && waited < Duration::from_secs(15),
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_standby_survives_an_unreachable_api_server() {
    let h = Harness::start(None);
    h.store().broken = true;
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(!*h.leadership.borrow());
    assert!(!h.run.is_finished());
    h.store().broken = false;
    let mut h = h;
    h.until_leader().await;
    h.shutdown().await.0.expect("a graceful end");
}

#[tokio::test]
async fn bad_settings_are_refused() {
    let (service, _handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, NS);
    let empty = LeaderElector::new(client.clone(), NS, NAME, "", LeaseTimings::default());
    assert!(matches!(empty, Err(LeaderError::EmptyIdentity)));
    let inverted = LeaseTimings {
        lease_duration: Duration::from_secs(5),
        renew_deadline: Duration::from_secs(10),
        retry_period: Duration::from_secs(2),
    };
    let bad = LeaderElector::new(client, NS, NAME, ME, inverted);
    assert!(matches!(bad, Err(LeaderError::InvalidTimings { .. })));
}
