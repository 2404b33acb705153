//! `spike-gateway`: see the library docs.

use std::process::ExitCode;

use clap::CommandFactory;
use spike_gateway::config::{GatewayArgs, GatewaySettings, spec};
use spike_runtime::net::shutdown_signal;

// Per request the gateway allocates and frees many small buffers across threads (request
// heads, scanners, audit lines); mimalloc does that measurably faster than glibc's malloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
