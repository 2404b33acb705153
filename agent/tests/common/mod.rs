//! Helpers shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use spike_agent::proto::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use spike_agent::{AgentConfig, AgentHandle, Registration};
use spike_core::id::{SpiffeId, TrustDomain};
use tonic::transport::Channel;

/// Upper bound for every wait in these tests.
pub(crate) const WAIT: Duration = Duration::from_secs(30);

pub(crate) fn td() -> TrustDomain {
    TrustDomain::new("spike.dev").unwrap()
}

pub(crate) fn id(path: &str) -> SpiffeId {
    td().id(path).unwrap()
}

pub(crate) fn own_uid() -> u32 {
    rustix::process::getuid().as_raw()
}

/// An entry that matches this test process exactly (uid and executable).
pub(crate) fn me(path: &str) -> Registration {
    Registration::new(id(path))
        .with_uid(own_uid())
        .with_exe(std::env::current_exe().unwrap())
}

/// A fresh temporary directory with mode 0700, fit to hold the agent's socket.
pub(crate) fn private_tempdir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    tempfile::Builder::new()
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir()
        .unwrap()
}

pub(crate) fn socket_in(dir: &Path) -> PathBuf {
    dir.join("agent.sock")
}

pub(crate) async fn start(
    dir: &Path,
    registrations: Vec<Registration>,
    ttl: Duration,
) -> AgentHandle {
    let mut config = AgentConfig::new(td(), socket_in(dir));
    config.svid_ttl = ttl;
    config.registrations = registrations;
    spike_agent::start(config).await.unwrap()
}

/// Runs `fut` with the test-wide time bound.
pub(crate) async fn bounded<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// A client built from the agent's own generated code: it sends exactly what the test says,
/// without the security header a SPIFFE library always adds.
pub(crate) async fn raw_client(socket: &Path) -> SpiffeWorkloadApiClient<Channel> {
    let socket = socket.to_owned();
    let channel = tonic::transport::Endpoint::from_static("http://agent.invalid")
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let socket = socket.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(socket).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await
        .unwrap();
    SpiffeWorkloadApiClient::new(channel)
}

/// Adds the `workload.spiffe.io: true` header to a request.
pub(crate) fn with_header<T>(msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut()
        .insert(spike_agent::SECURITY_HEADER, "true".parse().unwrap());
    req
}
