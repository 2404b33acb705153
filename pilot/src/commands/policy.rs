//! `spike policy ...`

use http::Method;
use spike_core::api::{
    ExplainRequest, ListPoliciesResponse, PolicyResponse, PutPolicyRequest, PutPolicyResponse,
};
use spike_core::id::{Builtin, SpiffeId};
use spike_core::pattern::IdPattern;
use spike_core::policy::{CallerClass, Explanation, Permission};

use crate::cli::{Output, PolicyCmd};
use crate::client::{CliError, CliResult, Nexus};
use crate::output::{print_structured, print_table};

/// Runs a policy subcommand.
pub async fn run(nexus: &Nexus, out: Output, cmd: PolicyCmd) -> CliResult<()> {
    match cmd {
        PolicyCmd::Create {
            name,
            spiffe_id_pattern,
            path_pattern,
            permissions,
            replace,
        } => {
            let req = PutPolicyRequest {
                spiffe_id_pattern,
                path_pattern,
                permissions: parse_permissions(&permissions)?,
                create_only: !replace,
            };
            put(nexus, out, &name, &req).await?;
        }
        PolicyCmd::Attach {
            spiffe_id,
            to: _,
            path_pattern,
            permissions,
            name,
        } => {
            let name = name.unwrap_or_else(|| attach_name(&spiffe_id, &path_pattern));
            let req = PutPolicyRequest {
                spiffe_id_pattern: spiffe_id,
                path_pattern,
                permissions: parse_permissions(&permissions)?,
                create_only: false,
            };
            put(nexus, out, &name, &req).await?;
        }
        PolicyCmd::Get { name } => {
            let p: PolicyResponse = nexus
                .call(Method::GET, &format!("/v1/policies/{name}"), None::<&()>)
                .await?;
            match out {
                Output::Text => print_policy(&p),
                _ => print_structured(out, &p),
            }
        }
        PolicyCmd::List { spiffe_id } => {
            let mut l: ListPoliciesResponse =
                nexus.call(Method::GET, "/v1/policies", None::<&()>).await?;
            if let Some(id) = &spiffe_id {
                l.policies.retain(|p| applies_to(p, id));
            }
            match out {
                Output::Text if l.policies.is_empty() && spiffe_id.is_some() => {
                    println!(
                        "no policy applies to {}: it is denied everything (built-in SPIKE identities excepted)",
                        spiffe_id.unwrap_or_default()
                    );
                }
                Output::Text if l.policies.is_empty() => {
                    println!(
                        "no policies: every workload is denied (create one with `spike policy create` or `spike policy apply`)"
                    );
                }
                Output::Text => {
                    let rows: Vec<[String; 4]> = l
                        .policies
                        .iter()
                        .map(|p| {
                            [
                                p.name.clone(),
                                p.spiffe_id_pattern.clone(),
                                p.path_pattern.clone(),
                                permission_names(&p.permissions),
                            ]
                        })
                        .collect();
                    print_table(
                        ["NAME", "SPIFFE ID PATTERN", "PATH PATTERN", "PERMISSIONS"],
                        &rows,
                    );
                }
                _ => print_structured(out, &l.policies),
            }
        }
        PolicyCmd::Delete { name } => {
            nexus
                .call_raw(Method::DELETE, &format!("/v1/policies/{name}"), None::<&()>)
                .await?;
            if out == Output::Text {
                println!("deleted policy {name}");
            } else {
                print_structured(out, &serde_json::json!({ "deleted": name }));
            }
        }
        PolicyCmd::Apply { file, dry_run } => {
            crate::commands::seed::apply(nexus, out, &file, dry_run).await?;
        }
        PolicyCmd::Test { spiffe_id, path } => {
            let superuser = SpiffeId::new(&spiffe_id)
                .is_ok_and(|id| id == Builtin::Superuser.id(&id.trust_domain()));
            let req = ExplainRequest { spiffe_id, path };
            let e: Explanation = nexus
                .call(Method::POST, "/v1/access/explain", Some(&req))
                .await?;
            match out {
                // No policy applies to the superuser, and none is needed: say what it may do.
                Output::Text if superuser => {
                    println!("spiffe id:   {} (superuser)", e.spiffe_id);
                    println!("path:        {}", e.path);
                    println!("permissions: superuser: everything");
                }
                Output::Text => print_explanation(&e),
                _ => print_structured(out, &e),
            }
            // Like `kubectl auth can-i`: a script can test the answer by the exit status.
            if e.permissions.is_empty() && !superuser {
                return Err(CliError::Denied(format!(
                    "{} may not use {}",
                    e.spiffe_id, e.path
                )));
            }
        }
    }
    Ok(())
}

fn parse_permissions(given: &[String]) -> CliResult<Vec<Permission>> {
    given
        .iter()
        .map(|p| {
            serde_json::from_value::<Permission>(serde_json::Value::String(p.trim().to_owned()))
                .map_err(|_| {
                    CliError::Usage(format!(
                        "unknown permission `{p}`; use read, write, list, delete, token, resolve, cipher or super"
                    ))
                })
        })
        .collect()
}

/// The glob to write instead of a pattern that looks like a regular expression (`.*`, `^`,
/// `$`), if it does: such a pattern is a valid glob that matches something else, or nothing.
fn regex_lookalike(pattern: &str) -> Option<String> {
    let looks = pattern.contains(".*") || pattern.starts_with('^') || pattern.ends_with('$');
    looks.then(|| {
        let glob = pattern
            .trim_start_matches('^')
            .trim_end_matches('$')
            .replace(".*", "**");
        // `**` stands for whole segments: `a/b**` is written `a/b*` or `a/b/**`.
        glob.split('/')
            .map(|seg| {
                if seg.contains("**") && seg != "**" {
                    seg.replace("**", "*")
                } else {
                    seg.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("/")
    })
}

fn warn_regex_lookalikes(req: &PutPolicyRequest) {
    for (what, pattern) in [
        ("SPIFFE-ID pattern", &req.spiffe_id_pattern),
        ("path pattern", &req.path_pattern),
    ] {
        if let Some(glob) = regex_lookalike(pattern) {
            eprintln!(
                "warning: the {what} `{pattern}` looks like a regular expression; patterns are globs \
                 (`*` within one segment, `**` any number of segments): did you mean `{glob}`?"
            );
        }
    }
}

async fn put(nexus: &Nexus, out: Output, name: &str, req: &PutPolicyRequest) -> CliResult<()> {
    warn_regex_lookalikes(req);
    let resp: PutPolicyResponse = nexus
        .call(Method::PUT, &format!("/v1/policies/{name}"), Some(req))
        .await?;
    match out {
        Output::Text if resp.unchanged => println!("unchanged: policy {name}"),
        Output::Text if resp.created => println!("created policy {name}"),
        Output::Text => println!("updated policy {name}"),
        _ => print_structured(out, &resp),
    }
    Ok(())
}

/// True when `p`'s SPIFFE-ID pattern matches `id` (a policy Nexus stored always parses).
fn applies_to(p: &PolicyResponse, id: &str) -> bool {
    match (IdPattern::parse(&p.spiffe_id_pattern), SpiffeId::new(id)) {
        (Ok(pattern), Ok(id)) => pattern.matches(&id),
        _ => false,
    }
}

/// The name `attach` gives its policy: readable (the ID's last segment and the pattern's
/// literal start) and unique to the pair (a hash of both), so attaching again finds it.
fn attach_name(id: &str, pattern: &str) -> String {
    use sha2::Digest;
    let slug = |s: &str| -> String {
        s.split(['/', '*'])
            .filter(|seg| !seg.is_empty())
            .map(|seg| {
                seg.chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() || "._-".contains(c) {
                            c
                        } else {
                            '-'
                        }
                    })
                    .collect::<String>()
            })
            .collect::<Vec<_>>()
            .join("-")
    };
    let who = id.rsplit('/').next().unwrap_or(id);
    let digest = sha2::Sha256::digest(format!("{id}\n{pattern}").as_bytes());
    let hash = hex::encode(&digest[..3]);
    let mut base = format!("{}-{}", slug(who), slug(pattern));
    base.truncate(100);
    format!("{}-{hash}", base.trim_end_matches('-'))
}

/// Prints an explanation for people: the verdict first, then every policy that matched the ID
/// or the path, with what matched.
pub fn print_explanation(e: &Explanation) {
    let class = match e.caller {
        CallerClass::Workload => "workload",
        CallerClass::Gateway => "gateway",
        _ => "SPIKE identity",
    };
    println!("spiffe id:   {} ({class})", e.spiffe_id);
    println!("path:        {}", e.path);
    println!("permissions: {}", e.permissions);
    println!("why:         {}", e.reason);
    if e.policies.is_empty() {
        println!("no policy matches this ID or this path");
        return;
    }
    println!();
    let w = e
        .policies
        .iter()
        .map(|p| p.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    println!(
        "{:<8} {:<w$}  {:<3}  {:<4}  {:<24}  patterns",
        "", "name", "id", "path", "grants"
    );
    for p in &e.policies {
        let verdict = if p.applies { "APPLIES" } else { "-" };
        let yn = |b: bool| if b { "yes" } else { "no" };
        println!(
            "{verdict:<8} {:<w$}  {:<3}  {:<4}  {:<24}  {} on {}",
            p.name,
            yn(p.id_matches),
            yn(p.path_matches),
            p.permissions.to_string(),
            p.spiffe_id_pattern,
            p.path_pattern,
        );
        if let Some(n) = &p.note {
            println!("{:<8} {:<w$}  {n}", "", "");
        }
    }
}

/// `read,list`: the permissions by their API names.
fn permission_names(permissions: &[Permission]) -> String {
    permissions
        .iter()
        .filter_map(|x| serde_json::to_value(x).ok())
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect::<Vec<_>>()
        .join(",")
}

fn print_policy(p: &PolicyResponse) {
    println!("name:              {}", p.name);
    println!("spiffe-id-pattern: {}", p.spiffe_id_pattern);
    println!("path-pattern:      {}", p.path_pattern);
    println!("permissions:       {}", permission_names(&p.permissions));
    println!("updated:           {}", p.updated_at);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_that_look_like_regexes_get_the_glob_to_write() {
        assert_eq!(regex_lookalike("apps/.*").as_deref(), Some("apps/**"));
        assert_eq!(
            regex_lookalike("^apps/web/.*$").as_deref(),
            Some("apps/web/**")
        );
        assert_eq!(regex_lookalike("apps/db.*").as_deref(), Some("apps/db*"));
        assert_eq!(
            regex_lookalike("spiffe://spike.dev/ns/web/.*").as_deref(),
            Some("spiffe://spike.dev/ns/web/**")
        );
        assert_eq!(regex_lookalike("apps/**"), None);
        assert_eq!(regex_lookalike("apps/*/db"), None);
    }
}
