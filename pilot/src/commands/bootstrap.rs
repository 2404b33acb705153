//! `spike bootstrap`: initialize once, idempotently.

use std::time::{Duration, Instant};

use http::Method;
use spike_core::api::{InitRequest, InitResponse, VerifyResponse};

use crate::cli::{BootstrapArgs, Output};
use crate::client::{CliError, CliResult, Nexus};
use crate::output::print_structured;

/// Asks Nexus to create and split the root key (a compare-and-set: only the first caller
/// creates it), then has Nexus prove that its keepers' shares rebuild the key. Retries while
/// Nexus or the keepers are not reachable yet, up to `args.wait`.
pub async fn run(nexus: &Nexus, out: Output, args: BootstrapArgs) -> CliResult<()> {
    let deadline = Instant::now() + args.wait;
    let req = InitRequest {
        shares: args.shares,
        threshold: args.threshold,
    };
    let init: InitResponse = retry(deadline, || {
        nexus.call(Method::POST, "/v1/bootstrap/init", Some(&req))
    })
    .await?;
    let verify: VerifyResponse = retry(deadline, || {
        nexus.call(Method::POST, "/v1/bootstrap/verify", None::<&()>)
    })
    .await?;
    match out {
        _ if out != Output::Text => {
            print_structured(out, &serde_json::json!({ "init": init, "verify": verify }));
        }
        _ => {
            if init.initialized {
                println!(
                    "initialized: root key created; {} of {} keepers acknowledged their share",
                    init.keepers_acknowledged, args.shares
                );
            } else {
                println!("already initialized: nothing changed");
            }
            println!(
                "verified: {} keepers hold valid shares (threshold {})",
                verify.keepers_with_share, verify.threshold
            );
        }
    }
    Ok(())
}

async fn retry<T, F, Fut>(deadline: Instant, mut f: F) -> CliResult<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = CliResult<T>>,
{
    let mut delay = Duration::from_millis(200);
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if retryable(&e) && Instant::now() + delay < deadline => {
                tracing::info!(error = %e, "not ready yet; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e),
        }
    }
}

fn retryable(e: &CliError) -> bool {
    use spike_core::error::ErrorCode;
    match e {
        CliError::Transport(_) => true,
        CliError::Api { code, .. } => matches!(code, ErrorCode::Unavailable | ErrorCode::Sealed),
        _ => false,
    }
}
