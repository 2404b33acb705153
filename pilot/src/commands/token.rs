//! `spike token create|list|inspect|revoke`: reference tokens, the opaque stand-ins for a
//! secret that an agent holds instead of the credential. A gateway resolves them with Nexus
//! and puts the value in at the last step before a request leaves (see docs/concepts.md).

use clap::{Args, Subcommand};
use http::Method;
use spike_core::api::{
    CreateTokenRequest, CreateTokenResponse, ListTokensResponse, TokenInfo, TokenLookupRequest,
};
use spike_core::secret::SecretString;
use spike_core::token::{TokenAction, TokenLocation};

use crate::cli::{Output, ttl_seconds};
use crate::client::{CliError, CliResult, Nexus, query_escape};
use crate::output::{print_structured, print_table};

/// `spike token ...`
#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Mint a token for one value of a secret and print it (shown this once: Nexus keeps
    /// only a keyed hash of it). Needs the `token` permission on the secret's path.
    ///
    /// Example:
    ///   spike token create --secret groq-api-key \
    ///     --spiffe-id spiffe://poc.local/agents/mcp-client/dspy-researcher/dev \
    ///     --ttl 1800 --action read
    ///
    /// The token is bound to one agent (an ID, or one of the secret's own ID patterns), the
    /// destinations it may be sent to (default: the secret's allowed destinations), one
    /// action, optional request path prefixes, where a gateway may substitute it (default:
    /// the Authorization header) and an optional use limit. It is never wider than its
    /// secret: IDs, destinations and TTL must lie within the secret's scope.
    /// Only the token goes to stdout, so `TOKEN=$(spike token create ...)` works.
    #[command(verbatim_doc_comment)]
    Create(CreateArgs),
    /// List the tokens you may mint for (bindings only, never a token itself).
    #[command(alias = "ls")]
    List {
        /// Only tokens for this secret.
        #[arg(long)]
        secret: Option<String>,
    },
    /// Show one token's binding, by its id or a prefix of it (at least 6 hex digits), or by
    /// the token itself (a leaked one, say).
    Inspect {
        /// The id (the ID column of `spike token list`), or the token ($SPIKE{ref:…}; `-`
        /// reads it from stdin, keeping it out of the shell's history).
        id: String,
    },
    /// Revoke a token, by its id or a prefix of it, or by the token itself: resolutions
    /// answer `token_revoked` from then on.
    Revoke {
        /// The id (the ID column of `spike token list`), or the token ($SPIKE{ref:…}; `-`
        /// reads it from stdin).
        id: String,
    },
}

/// `spike token create`
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The secret: PATH when it has one key, PATH:KEY to pick one of several.
    #[arg(long, value_name = "PATH[:KEY]")]
    pub secret: String,
    /// The agent it is for: a SPIFFE ID, or one of the secret's allowed ID patterns.
    #[arg(long, value_name = "ID|PATTERN")]
    pub spiffe_id: String,
    /// A host it may be sent to (host or host:port; a bare host means port 443). Repeatable.
    #[arg(long = "destination", value_name = "HOST[:PORT]")]
    pub destinations: Vec<String>,
    /// How long it lives: seconds, or a duration such as 30m.
    #[arg(long, value_name = "DURATION", value_parser = ttl_seconds)]
    pub ttl: u64,
    /// The one action it allows, as the gateway classifies requests: read, write or admin.
    #[arg(long)]
    pub action: TokenAction,
    /// A request path prefix it is limited to (segment-wise, e.g. /openai/v1/chat). Repeatable.
    #[arg(long = "path-prefix", value_name = "P")]
    pub path_prefixes: Vec<String>,
    /// Where a gateway may substitute it: header:NAME, query:NAME or body. Repeatable;
    /// default header:Authorization.
    #[arg(long = "in", value_name = "LOCATION")]
    pub locations: Vec<TokenLocation>,
    /// Most resolutions it allows.
    #[arg(long, value_name = "N")]
    pub max_uses: Option<u64>,
}

/// Runs a token subcommand.
pub async fn run(nexus: &Nexus, out: Output, cmd: TokenCmd) -> CliResult<()> {
    match cmd {
        TokenCmd::Create(a) => {
            // PATH:KEY: a path never holds ':', so the last one splits.
            let (secret, key) = match a.secret.rsplit_once(':') {
                Some((p, k)) => (p.to_owned(), Some(k.to_owned())),
                None => (a.secret.clone(), None),
            };
            let req = CreateTokenRequest {
                secret,
                key,
                spiffe_id: a.spiffe_id,
                destinations: a.destinations,
                ttl_seconds: a.ttl,
                action: a.action,
                path_prefixes: a.path_prefixes,
                locations: a.locations,
                max_uses: a.max_uses,
            };
            let resp: CreateTokenResponse =
                nexus.call(Method::POST, "/v1/tokens", Some(&req)).await?;
            match out {
                Output::Text => {
                    println!("{}", resp.token.expose_secret());
                    let b = &resp.binding;
                    eprintln!(
                        "token {} for {}:{} ({} by {}, to {}), expires {}",
                        b.id,
                        b.secret,
                        b.key,
                        b.action,
                        b.spiffe_id,
                        b.destinations.join(", "),
                        b.expires_at
                    );
                }
                _ => print_structured(out, &resp),
            }
        }
        TokenCmd::List { secret } => {
            let q = secret
                .map(|s| format!("?secret={}", query_escape(&s)))
                .unwrap_or_default();
            let resp: ListTokensResponse = nexus
                .call(Method::GET, &format!("/v1/tokens{q}"), None::<&()>)
                .await?;
            match out {
                Output::Text if resp.tokens.is_empty() => {
                    println!("no tokens that you may see");
                }
                Output::Text => {
                    let rows: Vec<[String; 6]> = resp
                        .tokens
                        .iter()
                        .map(|t| {
                            [
                                t.id.clone(),
                                format!("{}:{}", t.secret, t.key),
                                t.spiffe_id.clone(),
                                t.action.to_string(),
                                state_with_uses(t),
                                t.expires_at.clone(),
                            ]
                        })
                        .collect();
                    print_table(
                        ["ID", "SECRET", "AGENT", "ACTION", "STATE", "EXPIRES"],
                        &rows,
                    );
                }
                _ => print_structured(out, &resp),
            }
        }
        TokenCmd::Inspect { id } => {
            let t = match reference(&id)? {
                Some(token) => lookup(nexus, token).await?,
                None => {
                    nexus
                        .call(
                            Method::GET,
                            &format!("/v1/tokens/{}", query_escape(&id)),
                            None::<&()>,
                        )
                        .await?
                }
            };
            print_info(out, &t);
        }
        TokenCmd::Revoke { id } => {
            // A token given by its reference is found first; its full id then names it.
            let id = match reference(&id)? {
                Some(token) => lookup(nexus, token).await?.id,
                None => id,
            };
            let t: TokenInfo = nexus
                .call(
                    Method::POST,
                    &format!("/v1/tokens/{}/revoke", query_escape(&id)),
                    None::<&()>,
                )
                .await?;
            match out {
                Output::Text => println!("revoked token {} for {}:{}", t.id, t.secret, t.key),
                _ => print_structured(out, &t),
            }
        }
    }
    Ok(())
}

/// The token itself when `arg` is one (`$SPIKE{ref:…}`, or `-` for one line of stdin), `None`
/// for an id.
fn reference(arg: &str) -> CliResult<Option<SecretString>> {
    let token = if arg == "-" {
        let mut line = zeroize::Zeroizing::new(String::new());
        std::io::stdin()
            .read_line(&mut line)
            .map_err(|e| CliError::Usage(format!("cannot read the token from stdin: {e}")))?;
        SecretString::new(line.trim().to_owned())
    } else if arg.starts_with("$SPIKE{") {
        SecretString::new(arg.to_owned())
    } else {
        return Ok(None);
    };
    Ok(Some(token))
}

/// The binding of the token `token` (Nexus hashes it; nothing of it is kept or logged).
async fn lookup(nexus: &Nexus, token: SecretString) -> CliResult<TokenInfo> {
    nexus
        .call(
            Method::POST,
            "/v1/tokens/lookup",
            Some(&TokenLookupRequest { token }),
        )
        .await
}

/// `active`, or `active (2/5 uses)` for a token with a use limit.
fn state_with_uses(t: &TokenInfo) -> String {
    match t.max_uses {
        Some(m) => format!("{} ({}/{m} uses)", t.state.as_str(), t.uses),
        None => t.state.as_str().to_owned(),
    }
}

fn print_info(out: Output, t: &TokenInfo) {
    if out != Output::Text {
        print_structured(out, t);
        return;
    }
    let locations: Vec<String> = t.locations.iter().map(ToString::to_string).collect();
    println!("id:            {}", t.id);
    println!("secret:        {}:{}", t.secret, t.key);
    println!("agent:         {}", t.spiffe_id);
    println!("destinations:  {}", t.destinations.join(", "));
    println!("action:        {}", t.action);
    if !t.path_prefixes.is_empty() {
        println!("path prefixes: {}", t.path_prefixes.join(", "));
    }
    println!("locations:     {}", locations.join(", "));
    println!("state:         {}", state_with_uses(t));
    println!("created:       {} by {}", t.created_at, t.created_by);
    println!("expires:       {}", t.expires_at);
    if let Some(r) = &t.revoked_at {
        println!("revoked:       {r}");
    }
}
