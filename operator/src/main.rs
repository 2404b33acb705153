//! `spike-operator`: see the library docs.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use futures::FutureExt;
use spike_core::id::Builtin;
use spike_operator::controller::{self, Context, NEXUS_TIMEOUT, NexusConnector};
use spike_operator::metrics::Metrics;
use spike_operator::runtime::health::{HealthServer, MetricsRender, Readiness};
use spike_operator::runtime::leader::{LeaderElector, LeaseTimings, leadership_metric};
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
    /// Where the health server listens (`/healthz`, `/readyz`, `/metrics`), as the chart sets it.
    #[arg(
        long,
        env = "SPIKE_OPERATOR_HEALTH_LISTEN",
        default_value = "0.0.0.0:8560"
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
    // The operator holds Kubernetes Secret values on their way to Nexus: a crash must leave
    // no core file with them.
    if let Err(e) = spike_runtime::hardening::disable_core_dumps() {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
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

/// The leader-election Lease, in the operator's own namespace (the chart's Role names it).
const LEASE: &str = "spike-operator";

async fn run(args: Args) -> anyhow::Result<()> {
    let (Some(pod), Some(namespace)) = (args.pod_name.clone(), args.pod_namespace.clone()) else {
        anyhow::bail!(
            "POD_NAME and POD_NAMESPACE must be set (the chart sets them from the downward API): they are the leader-election Lease's holder and namespace"
        );
    };
    let client = kube::Client::try_default().await?;
    let metrics = Arc::new(Metrics::new());
    let elector = LeaderElector::new(
        client.clone(),
        &namespace,
        LEASE,
        &pod,
        LeaseTimings::default(),
    )?;
    let leadership = elector.leadership();

    // 1. Health first, so the liveness probe answers while the SVID and the Lease are awaited
    //    (and a taken port fails the process at once).
    let readiness = Readiness::new();
    let render: MetricsRender = {
        let (metrics, leadership) = (metrics.clone(), leadership.clone());
        Arc::new(move || render_metrics(&metrics, *leadership.borrow()))
    };
    let health = HealthServer::bind(args.health_listen, readiness.clone(), render).await?;
    let shutdown = shutdown_signal().boxed().shared();
    let health = tokio::spawn(health.serve(shutdown.clone()));

    let source = args.identity.open().await?;
    // Nexus grants the operator by its identity alone; a reload to another SVID is refused.
    source.expect_id(&Builtin::Operator.id(source.trust_domain()))?;
    let ctx = Arc::new(Context::new(
        client,
        Some(pod),
        metrics,
        NexusConnector::service(source, NEXUS_TIMEOUT),
    ));

    // 2.-3. Stand by (ready: a standby is a healthy replica), lead, run the controllers.
    let elector = tokio::spawn(elector.run(shutdown.clone()));
    readiness.set_ready();
    tracing::info!(health = %args.health_listen, lease = %format!("{namespace}/{LEASE}"), "spike-operator standing by for the Lease");
    let mut became = leadership.clone();
    let leading = tokio::select! {
        () = shutdown.clone() => false,
        r = became.wait_for(|l| *l) => r.is_ok(),
    };
    if leading {
        // 4. Until SIGTERM, or until the Lease is lost (then the process exits non-zero and
        //    restarts clean, as a standby).
        let mut lost = leadership.clone();
        let lost = async move {
            let _ = lost.wait_for(|l| !*l).await;
        };
        let stop = futures::future::select(shutdown.clone(), lost.boxed()).map(|_| ());
        tracing::info!("leading: starting the controllers");
        controller::run(ctx, stop).await?;
    }
    readiness.set_not_ready("shutting down");
    // Releases the Lease on shutdown; reports a loss.
    elector.await??;
    health.await??;
    tracing::info!("spike-operator stopped");
    Ok(())
}

/// `/metrics`: the reconcile metrics and the leadership gauge, before the OpenMetrics end
/// marker.
fn render_metrics(metrics: &Metrics, leading: bool) -> String {
    let text = metrics.render();
    let body = text.strip_suffix("# EOF\n").unwrap_or(&text);
    format!("{body}{}# EOF\n", leadership_metric(leading))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn metrics_end_with_the_leadership_gauge_then_the_end_marker() {
        let m = Metrics::new();
        drop(m.reconcile(spike_operator::metrics::ControllerName::spikepolicy));
        let text = render_metrics(&m, true);
        assert!(text.contains("spike_operator_reconciles_total{controller=\"spikepolicy\"} 1"));
        assert!(text.ends_with("spike_operator_leader 1\n# EOF\n"), "{text}");
        assert_eq!(text.matches("# EOF").count(), 1);
    }

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
