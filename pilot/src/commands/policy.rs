//! `spike policy ...`

use http::Method;
use spike_core::api::{ListPoliciesResponse, PolicyResponse, PutPolicyRequest, PutPolicyResponse};
use spike_core::policy::Permission;

use crate::cli::{Output, PolicyCmd};
use crate::client::{CliError, CliResult, Nexus};
use crate::output::print_json;

/// Runs a policy subcommand.
pub async fn run(nexus: &Nexus, out: Output, cmd: PolicyCmd) -> CliResult<()> {
    match cmd {
        PolicyCmd::Create {
            name,
            spiffe_id_pattern,
            path_pattern,
            permissions,
        } => {
            let permissions = permissions
                .iter()
                .map(|p| {
                    serde_json::from_value::<Permission>(serde_json::Value::String(p.trim().to_owned()))
                        .map_err(|_| {
                            CliError::Usage(format!(
                                "unknown permission `{p}`; use read, write, list, delete, token, resolve, cipher or super"
                            ))
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let req = PutPolicyRequest {
                spiffe_id_pattern,
                path_pattern,
                permissions,
            };
            let resp: PutPolicyResponse = nexus
                .call(Method::PUT, &format!("/v1/policies/{name}"), Some(&req))
                .await?;
            match out {
                Output::Json => print_json(&resp),
                Output::Text if resp.unchanged => println!("unchanged: policy {name}"),
                Output::Text if resp.created => println!("created policy {name}"),
                Output::Text => println!("updated policy {name}"),
            }
        }
        PolicyCmd::Get { name } => {
            let p: PolicyResponse = nexus
                .call(Method::GET, &format!("/v1/policies/{name}"), None::<&()>)
                .await?;
            match out {
                Output::Json => print_json(&p),
                Output::Text => print_policy(&p),
            }
        }
        PolicyCmd::List => {
            let l: ListPoliciesResponse =
                nexus.call(Method::GET, "/v1/policies", None::<&()>).await?;
            match out {
                Output::Json => print_json(&l.policies),
                Output::Text => {
                    for p in &l.policies {
                        print_policy(p);
                        println!();
                    }
                }
            }
        }
        PolicyCmd::Delete { name } => {
            nexus
                .call_raw(Method::DELETE, &format!("/v1/policies/{name}"), None::<&()>)
                .await?;
            if out == Output::Text {
                println!("deleted policy {name}");
            } else {
                print_json(&serde_json::json!({ "deleted": name }));
            }
        }
    }
    Ok(())
}

fn print_policy(p: &PolicyResponse) {
    let perms: Vec<String> = p
        .permissions
        .iter()
        .filter_map(|x| serde_json::to_value(x).ok())
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    println!("name:              {}", p.name);
    println!("spiffe-id-pattern: {}", p.spiffe_id_pattern);
    println!("path-pattern:      {}", p.path_pattern);
    println!("permissions:       {}", perms.join(","));
    println!("updated:           {}", p.updated_at);
}
