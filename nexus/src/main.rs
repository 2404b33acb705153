//! `spike-nexus`: see the library docs.

use std::process::ExitCode;

use clap::CommandFactory;
use spike_core::id::Builtin;
use spike_nexus::NexusListeners;
use spike_nexus::config::{self, NexusArgs, NexusSettings, Runtime};
use spike_runtime::net::shutdown_signal;

fn main() -> ExitCode {
    spike_runtime::config::service::main(
        NexusArgs::command(),
        &config::spec(),
        |s: NexusSettings| {
            let rt = s.into_runtime()?;
            let format = rt.log_format;
            Ok((rt, format))
        },
        run,
    )
}

async fn run(rt: Runtime) -> anyhow::Result<()> {
    if rt.mlock {
        spike_runtime::hardening::lock_memory()?;
        tracing::info!("memory locked (mlock)");
    }
    let source = rt.identity.open().await?;
    // A reload to another workload's SVID (say a keeper's) must be refused, not served.
    source.expect_id(&Builtin::Nexus.id(source.trust_domain()))?;
    let store = spike_nexus::open_store(&rt.config)?;
    let listeners = NexusListeners::bind(rt.addrs).await?;
    tracing::info!(api = %rt.addrs.api, health = %rt.addrs.health, "Nexus listening (sealed until keepers answer)");
    let (_nexus, task) =
        spike_nexus::start(rt.config, source, store, listeners, shutdown_signal()).await?;
    task.await?;
    tracing::info!("Nexus stopped");
    Ok(())
}
