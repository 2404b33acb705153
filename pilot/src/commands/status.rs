//! `spike status`

use http::Method;
use spike_core::api::StatusResponse;

use crate::cli::Output;
use crate::client::{CliResult, Nexus};
use crate::output::print_json;

/// Prints Nexus's state and the caller's identity.
pub async fn run(nexus: &Nexus, out: Output) -> CliResult<()> {
    let s: StatusResponse = nexus.call(Method::GET, "/v1/status", None::<&()>).await?;
    match out {
        Output::Json => print_json(&s),
        Output::Text => {
            println!("initialized: {}", s.initialized);
            println!("sealed:      {}", s.sealed);
            if let Some(r) = &s.reason {
                println!("reason:      {r}");
            }
            println!("you are:     {}", s.caller);
        }
    }
    Ok(())
}
