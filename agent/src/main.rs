//! `spike-agent`: a development SPIFFE Workload API server. See the library docs.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::CommandFactory;
use spike_agent::config::{AgentArgs, AgentSettings};
use spike_agent::{AgentConfig, load_registrations};
use tokio::signal::unix::{SignalKind, signal};

fn main() -> ExitCode {
    spike_runtime::config::service::main(
        AgentArgs::command(),
        &spike_agent::config::spec(),
        |s: AgentSettings| {
            s.check()?;
            let format = s.log_format;
            Ok((s, format))
        },
        run,
    )
}

async fn run(settings: AgentSettings) -> anyhow::Result<()> {
    let registrations = match &settings.registrations {
        Some(path) => load_registrations(path, &settings.trust_domain)?,
        None => Vec::new(),
    };
    let mut config = AgentConfig::new(settings.trust_domain.clone(), settings.socket.clone());
    config.svid_ttl = settings.svid_ttl;
    config.registrations = registrations;

    let agent = spike_agent::start(config)
        .await
        .context("cannot start the agent")?;

    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot listen for SIGHUP")?;
    loop {
        tokio::select! {
            r = tokio::signal::ctrl_c() => {
                r.context("cannot listen for SIGINT")?;
                tracing::info!("SIGINT received, shutting down");
                break;
            }
            _ = term.recv() => {
                tracing::info!("SIGTERM received, shutting down");
                break;
            }
            _ = hup.recv() => reload(&settings, &agent),
        }
    }
    agent.shutdown().await?;
    Ok(())
}

/// Re-reads the registration file; a bad file is logged and changes nothing.
fn reload(settings: &AgentSettings, agent: &spike_agent::AgentHandle) {
    let Some(path) = &settings.registrations else {
        tracing::info!("SIGHUP received, but no registration file is configured");
        return;
    };
    let result = load_registrations(path, &settings.trust_domain)
        .map_err(spike_agent::AgentError::from)
        .and_then(|regs| agent.set_registrations(regs));
    match result {
        Ok(()) => tracing::info!(file = %path.display(), "registrations reloaded"),
        Err(e) => tracing::error!(error = %e, "registrations NOT reloaded; the previous set stays"),
    }
}
