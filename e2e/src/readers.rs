//! A reader that keeps reading one secret while something else happens to the system (SVID
//! rotation, faults), recording every failed read.

use std::sync::Arc;
use std::time::Duration;

use spike_core::id::SpiffeId;
use spike_runtime::net::MtlsClient;
use spike_runtime::svid::SvidSource;

/// Reads `GET /v1/secrets/data/<path>` from Nexus at `addr` as `source`'s identity while
/// `go()` says so and at most `max_reads` times, 5 ms apart. Most reads reuse one pooled
/// client; every tenth makes a new client (a new connection), so handshakes happen on both
/// sides all along. Returns the reads made and each failure (status and body, or error).
pub async fn read_while(
    addr: String,
    nexus: SpiffeId,
    source: Arc<dyn SvidSource>,
    path: &str,
    go: impl Fn() -> bool,
    max_reads: u64,
) -> (u64, Vec<String>) {
    let client = || {
        MtlsClient::new(addr.clone(), nexus.clone(), source.clone())
            .expect("a client")
            .with_timeout(Duration::from_secs(10))
    };
    let pooled = client();
    let uri = format!("/v1/secrets/data/{path}");
    let (mut reads, mut failures) = (0u64, Vec::new());
    while go() && reads < max_reads {
        let fresh;
        let via = if reads % 10 == 9 {
            fresh = client();
            &fresh
        } else {
            &pooled
        };
        match via.send(http::Method::GET, &uri, None).await {
            Ok(r) if r.status == http::StatusCode::OK => {}
            Ok(r) => failures.push(format!("{} {}", r.status, String::from_utf8_lossy(&r.body))),
            Err(e) => failures.push(e.to_string()),
        }
        reads += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    (reads, failures)
}
