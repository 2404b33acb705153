//! `spike dev`: a whole local system in one process, in the foreground.
//!
//! Starts the dev SPIFFE agent (its socket is what the CLI uses), three keepers, Nexus and
//! bootstrap on loopback, prints the `export` lines for the CLI, and runs until Ctrl-C. The
//! in-process components take their SVIDs straight from the agent's CA (they share this
//! process, so Unix attestation could not tell them apart); CLI processes get theirs over the
//! Workload API, attested by uid and executable path.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use spike_agent::{AgentConfig, AgentHandle, CertificateAuthority, Registration};
use spike_core::api::ShareBody;
use spike_core::id::{Builtin, SpiffeId, TrustDomain};
use spike_keeper::{KeeperAddrs, KeeperHandle, KeeperListeners};
use spike_nexus::{NexusAddrs, NexusConfig, NexusListeners};
use spike_runtime::svid::{Identity, StaticSource, SvidSource};

use crate::cli::{BootstrapArgs, DevArgs, Output};
use crate::client::{CliError, CliResult, Nexus};

const KEEPERS: u8 = 3;
const THRESHOLD: u8 = 2;
const SVID_TTL: Duration = Duration::from_secs(3600);
const SHARE_FILE: &str = "INSECURE-dev-keeper-shares.json";
/// The variable that selects a `--workload` identity.
const WORKLOAD_ENV: &str = "SPIKE_DEV_WORKLOAD";

/// Runs the dev system until SIGINT/SIGTERM.
pub async fn run(args: DevArgs, td: TrustDomain) -> CliResult<()> {
    let other = |e: &dyn std::fmt::Display| CliError::Other(anyhow::anyhow!("{e}"));
    if let Some(dir) = &args.data_dir {
        create_private_dir(dir).map_err(|e| other(&format!("{}: {e}", dir.display())))?;
    }
    // Nexus's ports first: a second `spike dev` must stop before it starts (or announces)
    // anything.
    let listeners = NexusListeners::bind(NexusAddrs {
        api: ([127, 0, 0, 1], args.port).into(),
        health: ([127, 0, 0, 1], args.port.saturating_add(1)).into(),
    })
    .await
    .map_err(|e| port_in_use(&e, args.port).unwrap_or_else(|| other(&e)))?;
    // With a data dir the socket path is stable, so shells that pasted the export lines keep
    // working across restarts; without one, a fresh temp dir (0700) removed when `_tmp` drops.
    let (run_dir, _tmp) = match (&args.run_dir, &args.data_dir) {
        (Some(d), _) => (d.clone(), None),
        (None, Some(data)) => (data.join("run"), None),
        (None, None) => {
            let t = tempfile::Builder::new()
                .prefix("spike-dev-")
                .tempdir()
                .map_err(|e| other(&e))?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    tracing::warn!("spike dev is for development: one process holds every component");

    // The agent: CLI processes run from this same `spike` binary get the superuser identity.
    let exe = std::env::current_exe().map_err(|e| other(&e))?;
    let uid = spike_runtime::svid::process_uid().unwrap_or(0);
    let mut agent_cfg = AgentConfig::new(td.clone(), run_dir.join("agent").join("agent.sock"));
    // Workloads first: a `spike` started as a workload also matches the superuser entry, and a
    // client takes the first SVID it is given.
    for (name, id) in &args.workloads {
        let id = SpiffeId::new(id).map_err(|e| other(&e))?;
        if id.trust_domain() != td {
            return Err(CliError::Usage(format!(
                "--workload {name}={id}: not in trust domain {td}"
            )));
        }
        agent_cfg.registrations.push(
            Registration::new(id)
                .with_uid(uid)
                .with_env(WORKLOAD_ENV, name),
        );
    }
    agent_cfg.registrations.push(
        Registration::new(Builtin::Superuser.id(&td))
            .with_uid(uid)
            .with_exe(exe.clone()),
    );
    let agent = Arc::new(spike_agent::start(agent_cfg).await.map_err(|e| other(&e))?);
    let mut rotations = tokio::task::JoinSet::new();

    // Keepers.
    let mut keeper_handles: Vec<KeeperHandle> = Vec::new();
    let mut keeper_addrs = Vec::new();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stop = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let mut tasks = Vec::new();
    for i in 1..=KEEPERS {
        let source = ca_source(&agent, &mut rotations, Builtin::Keeper(i).id(&td))?;
        let listeners = KeeperListeners::bind(KeeperAddrs {
            api: "127.0.0.1:0".parse().map_err(|e| other(&e))?,
            health: "127.0.0.1:0".parse().map_err(|e| other(&e))?,
        })
        .await
        .map_err(|e| other(&e))?;
        keeper_addrs.push(
            listeners
                .api
                .local_addr()
                .map_err(|e| other(&e))?
                .to_string(),
        );
        let (h, t) =
            spike_keeper::start(source, listeners, stop(stop_rx.clone())).map_err(|e| other(&e))?;
        keeper_handles.push(h);
        tasks.push(t);
    }

    // With --data-dir, restore the insecure share copies so a full restart unseals by itself.
    if let Some(dir) = &args.data_dir
        && let Some(shares) = read_share_file(dir)?
    {
        for (h, s) in keeper_handles.iter().zip(shares) {
            h.preload(s).map_err(|e| other(&e))?;
        }
        tracing::warn!("loaded keeper shares from {SHARE_FILE} (INSECURE, dev only)");
    }

    // Nexus.
    let logs_dir = args.data_dir.as_deref().unwrap_or(&run_dir).to_owned();
    let audit_log = logs_dir.join("audit.log");
    let mut config = NexusConfig::new(td.clone(), keeper_addrs, audit_log);
    config.data_dir = args.data_dir.clone();
    let nexus_source = ca_source(&agent, &mut rotations, Builtin::Nexus.id(&td))?;
    let store = spike_nexus::open_store(&config).map_err(|e| other(&e))?;
    let (_nexus, nexus_task) = spike_nexus::start(
        config,
        nexus_source,
        store,
        listeners,
        stop(stop_rx.clone()),
    )
    .await
    .map_err(|e| other(&e))?;
    tasks.push(nexus_task);

    // Bootstrap, through the real API with the bootstrap identity.
    let nexus_addr = format!("127.0.0.1:{}", args.port);
    let bootstrap = Nexus::new(
        &nexus_addr,
        ca_source(&agent, &mut rotations, Builtin::Bootstrap.id(&td))?,
        Duration::from_secs(30),
    )?;
    super::bootstrap::run(
        &bootstrap,
        Output::Text,
        BootstrapArgs {
            shares: KEEPERS,
            threshold: THRESHOLD,
            wait: Duration::from_secs(60),
        },
    )
    .await?;
    if let Some(dir) = &args.data_dir {
        write_share_file(dir, &keeper_handles)?;
    }
    let gateway = if args.gateway {
        let admin = Nexus::new(
            &nexus_addr,
            ca_source(&agent, &mut rotations, Builtin::Superuser.id(&td))?,
            Duration::from_secs(30),
        )?;
        let g = super::dev_gateway::start(
            &admin,
            &nexus_addr,
            &td,
            ([127, 0, 0, 1], args.port.saturating_add(2)).into(),
            logs_dir.join(super::dev_gateway::AUDIT_LOG),
            ca_source(&agent, &mut rotations, super::dev_gateway::gateway_id(&td)?)?,
            stop(stop_rx.clone()),
        )
        .await?;
        Some(g)
    } else {
        None
    };

    println!();
    println!("SPIKE dev is running (trust domain {td}). In another shell:");
    println!();
    println!("  export SPIFFE_ENDPOINT_SOCKET={}", agent.endpoint());
    println!("  export SPIKE_NEXUS_ADDR={nexus_addr}");
    println!("  export SPIKE_TRUST_DOMAIN={td}");
    // The agent trusts this very executable, so the shell must find this one first (from any
    // directory, whatever the build profile).
    if let Some(line) = exe.parent().and_then(path_export) {
        println!("  {line}");
    }
    println!();
    println!("  spike secret put demo/hello greeting=world");
    println!("  spike secret get demo/hello");
    println!();
    println!(
        "CLI commands get the superuser identity when run as uid {uid} from {} (another copy of spike is refused).",
        exe.display()
    );
    for (name, id) in &args.workloads {
        println!("Processes started with {WORKLOAD_ENV}={name} get {id}.");
    }
    if let Some(g) = &gateway {
        println!();
        print!("{}", g.instructions());
        println!();
    }
    println!(
        "Health: http://127.0.0.1:{}/readyz   Press Ctrl-C to stop.",
        args.port.saturating_add(1)
    );

    spike_runtime::net::shutdown_signal().await;
    println!("stopping");
    // Shares change with rotate, rekey and restore: save the current ones for the next start.
    if let Some(dir) = &args.data_dir {
        write_share_file(dir, &keeper_handles)?;
    }
    let _ = stop_tx.send(true);
    if let Some(g) = gateway {
        tasks.push(g.task);
    }
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(15), t).await;
    }
    rotations.abort_all();
    while rotations.join_next().await.is_some() {}
    if let Ok(agent) = Arc::try_unwrap(agent) {
        let _ = agent.shutdown().await;
    }
    Ok(())
}

/// An SVID source issued directly by the agent's CA (in-process components share one pid and
/// executable, so the Workload API could not tell them apart), re-issued at half its lifetime.
fn ca_source(
    agent: &Arc<AgentHandle>,
    rotations: &mut tokio::task::JoinSet<()>,
    id: SpiffeId,
) -> CliResult<Arc<dyn SvidSource>> {
    let identity = issue(agent.ca(), &id)?;
    let src = Arc::new(StaticSource::new(agent.trust_domain().clone(), identity));
    let weak = Arc::downgrade(&src);
    let agent = agent.clone();
    rotations.spawn(async move {
        loop {
            tokio::time::sleep(SVID_TTL / 2).await;
            let Some(s) = weak.upgrade() else { return };
            match issue(agent.ca(), &id) {
                Ok(i) => s.replace(i),
                Err(e) => tracing::warn!(error = %e, "SVID re-issue failed"),
            }
        }
    });
    Ok(src)
}

fn issue(ca: &CertificateAuthority, id: &SpiffeId) -> CliResult<Identity> {
    let svid = ca
        .issue(id, SVID_TTL)
        .map_err(|e| CliError::Other(anyhow::anyhow!("dev CA: {e}")))?;
    Identity::from_pem(
        ca.trust_domain(),
        svid.chain_pem.as_bytes(),
        svid.key_pem.as_bytes(),
        svid.bundle_pem.as_bytes(),
    )
    .map_err(|e| CliError::Other(anyhow::anyhow!("dev SVID: {e}")))
}

fn read_share_file(dir: &Path) -> CliResult<Option<Vec<ShareBody>>> {
    let path = dir.join(SHARE_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let bytes = zeroize::Zeroizing::new(bytes);
            serde_json::from_slice(&bytes).map(Some).map_err(|_| {
                CliError::Other(anyhow::anyhow!(
                    "{} is corrupt; delete it and the data dir to start over",
                    path.display()
                ))
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CliError::Other(anyhow::anyhow!("{}: {e}", path.display()))),
    }
}

/// Writes the keepers' shares next to the data, mode 0600. This defeats the point of keepers
/// and exists only so that a dev system with --data-dir survives a full restart.
fn write_share_file(dir: &Path, keepers: &[KeeperHandle]) -> CliResult<()> {
    let shares: Vec<ShareBody> = keepers.iter().filter_map(KeeperHandle::share).collect();
    if shares.len() != keepers.len() {
        return Ok(());
    }
    let path = dir.join(SHARE_FILE);
    let json = zeroize::Zeroizing::new(
        serde_json::to_vec_pretty(&shares).map_err(|e| CliError::Other(e.into()))?,
    );
    write_private(&path, &json)
        .map_err(|e| CliError::Other(anyhow::anyhow!("{}: {e}", path.display())))?;
    tracing::warn!(
        file = %path.display(),
        "wrote keeper shares to disk: INSECURE, for spike dev only; never do this in production"
    );
    Ok(())
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Creates `dir` and its missing parents closed to group and others (0700): it will hold the
/// store, the audit log and the insecure share file.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// The error for a port someone else holds, usually another `spike dev`.
fn port_in_use(e: &spike_nexus::StartError, port: u16) -> Option<CliError> {
    match e {
        spike_nexus::StartError::Bind { addr, source }
            if source.kind() == std::io::ErrorKind::AddrInUse =>
        {
            Some(CliError::Other(anyhow::anyhow!(
                "{addr} is in use: another spike dev is probably running; stop it, or start \
                 this one with --port (Nexus uses that port and the next one), e.g. --port {}",
                port.saturating_add(10)
            )))
        }
        _ => None,
    }
}

/// `export PATH=DIR:"$PATH"` with DIR quoted for a POSIX shell; None when DIR is not UTF-8 or
/// cannot be quoted (a NUL), and the user is better told nothing than something wrong.
fn path_export(dir: &Path) -> Option<String> {
    let quoted = shlex::try_quote(dir.to_str()?).ok()?;
    Some(format!("export PATH={quoted}:\"$PATH\""))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The printed line, run by a real shell, puts the directory first, spaces and quotes
    /// included.
    #[test]
    fn the_path_line_survives_a_shell() {
        for dir in ["/opt/spike/target/debug", "/tmp/it's a dir/bin"] {
            let line = path_export(Path::new(dir)).unwrap();
            let out = std::process::Command::new("sh")
                .args(["-c", &format!("{line}; printf %s \"$PATH\"")])
                .env("PATH", "/usr/bin:/bin")
                .output()
                .unwrap();
            assert_eq!(
                String::from_utf8(out.stdout).unwrap(),
                format!("{dir}:/usr/bin:/bin"),
                "{line}"
            );
        }
    }
}
