//! `spike-keeper`: see the library docs.

use std::process::ExitCode;

use clap::CommandFactory;
use spike_keeper::{KeeperArgs, KeeperListeners, KeeperSettings};
use spike_runtime::net::shutdown_signal;

fn main() -> ExitCode {
    spike_runtime::config::service::main(
        KeeperArgs::command(),
        &spike_keeper::spec(),
        |s: KeeperSettings| Ok(((s.check()?, s.mlock), s.log_format)),
        |((addrs, identity, limits), mlock)| async move {
            if mlock {
                spike_runtime::hardening::lock_memory()?;
                tracing::info!("memory locked (mlock)");
            }
            let source = identity.open().await?;
            // The keeper's index comes from its first SVID; a reload to another ID is refused.
            source.expect_id(&source.current().id().clone())?;
            let listeners = KeeperListeners::bind(addrs).await?;
            let (_handle, task) =
                spike_keeper::start_with(source, listeners, limits, shutdown_signal())?;
            task.await?;
            anyhow::Ok(())
        },
    )
}
