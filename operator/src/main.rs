//! `spike-operator`: see the library docs.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use spike_core::id::Builtin;
use spike_operator::controller::{self, Context, NEXUS_TIMEOUT, NexusConnector};
use spike_operator::metrics::Metrics;
use spike_runtime::net::shutdown_signal;
use spike_runtime::svid::IdentityArgs;
use spike_runtime::telemetry::{self, LogFormat};

/// SPIKE's Kubernetes operator: reconciles SpikeCluster, SpikeSecret and SpikePolicy.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The operator's identity (its SVID must be `/spike/operator`).
    #[command(flatten)]
    identity: IdentityArgs,
    /// Where the health server listens (`/healthz`, `/readyz`, `/metrics`).
    #[arg(
        long,
        env = "SPIKE_OPERATOR_HEALTH_LISTEN",
        default_value = "0.0.0.0:8080"
    )]
    health_listen: SocketAddr,
    /// Log line format (the level comes from `RUST_LOG`).
    #[arg(long, env = "SPIKE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// This pod's name: the event reporter's instance and the Lease holder's identity.
    #[arg(long, env = "POD_NAME")]
    pod_name: Option<String>,
    /// This pod's namespace: where the leader-election Lease lives.
    #[arg(long, env = "POD_NAMESPACE")]
    pod_namespace: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    telemetry::init(args.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "spike-operator failed");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let source = args.identity.open().await?;
    // Nexus grants the operator by its identity alone; a reload to another SVID is refused.
    source.expect_id(&Builtin::Operator.id(source.trust_domain()))?;
    let client = kube::Client::try_default().await?;
    let metrics = Arc::new(Metrics::new());
    let ctx = Arc::new(Context::new(
        client,
        args.pod_name.clone(),
        metrics.clone(),
        NexusConnector::service(source, NEXUS_TIMEOUT),
    ));
    // PLUG-IN (H4): start the health server on `args.health_listen`, rendering
    // `metrics.render()` at `/metrics`, before leader election (liveness must answer while a
    // standby waits).
    // PLUG-IN (H4): acquire the Lease in `args.pod_namespace` as `args.pod_name` and run the
    // controllers only while leading; losing the Lease ends them (the shutdown future below).
    tracing::info!(health = %args.health_listen, namespace = ?args.pod_namespace, "spike-operator starting");
    controller::run(ctx, shutdown_signal()).await?;
    tracing::info!("spike-operator stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_arguments_are_consistent_and_take_the_charts_names() {
        Args::command().debug_assert();
        let args = Args::try_parse_from([
            "spike-operator",
            "--health-listen",
            "127.0.0.1:9000",
            "--log-format",
            "json",
            "--pod-name",
            "spike-operator-0",
        ])
        .expect("args");
        assert_eq!(args.health_listen, "127.0.0.1:9000".parse().expect("addr"));
        assert_eq!(args.log_format, LogFormat::Json);
        assert_eq!(args.pod_name.as_deref(), Some("spike-operator-0"));
        // The chart sets these variables; clap reads them when the flags are absent.
        let envs: Vec<String> = Args::command()
            .get_arguments()
            .filter_map(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()))
            .collect();
        for name in [
            "SPIFFE_ENDPOINT_SOCKET",
            "SPIKE_OPERATOR_HEALTH_LISTEN",
            "SPIKE_LOG_FORMAT",
            "POD_NAME",
            "POD_NAMESPACE",
        ] {
            assert!(envs.iter().any(|e| e == name), "{name} in {envs:?}");
        }
    }
}
