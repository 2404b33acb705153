//! `spike-gateway`: see the library docs.

use std::process::ExitCode;

use clap::CommandFactory;
use spike_gateway::config::{GatewayArgs, GatewaySettings, spec};
use spike_runtime::net::shutdown_signal;

fn main() -> ExitCode {
    spike_runtime::config::service::main(
        GatewayArgs::command(),
        &spec(),
        |s: GatewaySettings| Ok((s.check()?, s.log_format)),
        |checked| async move {
            let source = checked.identity.open().await?;
            let (_bound, task) =
                spike_gateway::server::start(checked, source, shutdown_signal()).await?;
            task.await?;
            anyhow::Ok(())
        },
    )
}
