//! What an agent's request asks for, checked before anything else looks at it.
//!
//! Two forms reach the gateway:
//!
//! - a named route, `/r/<route>/<rest>`: the upstream is fixed by the route's configuration,
//!   so an SDK only changes its base URL;
//! - a forward-proxy request in absolute form (`GET https://api.example.com/v1/x HTTP/1.1`, or
//!   an HTTP/2 request whose `:authority` is not the gateway's own): the destination is the
//!   URI's authority.
//!
//! Whatever the form, the request must say one thing about where it goes: a `Host` header
//! that disagrees with the absolute URI or with `:authority`, or two `Host` headers, is refused
//! (a proxy and an upstream that pick different ones is how requests get smuggled past a
//! check). `CONNECT` and `Upgrade` are refused for now. Paths with dot segments or encoded
//! separators are refused too: the gateway checks a token's path prefixes on the path as sent,
//! and an upstream that normalizes `/v1/chat/../../admin` would serve something else.

use http::request::Parts;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Version};

use crate::refusal::{Reason, Refusal};

/// Where a request goes, as the agent addressed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addressed {
    /// `/r/<route>/<rest>`.
    Route {
        /// The route's name.
        name: String,
        /// The path and query to send upstream (below the route's base path), starting with
        /// `/`.
        rest: PathAndQuery,
    },
    /// Absolute form (HTTP/1.x only: HTTP/2 requests are always routes).
    Forward {
        /// `http` or `https`.
        tls: bool,
        /// The host (lower case, no trailing dot; IPv6 in brackets) and port.
        host: String,
        /// The port (the scheme's default when none was written).
        port: u16,
        /// The path and query.
        path: PathAndQuery,
    },
}

/// Longest route name.
const MAX_ROUTE_NAME: usize = 64;

/// Reads where `head` goes, refusing what cannot be forwarded safely.
pub fn addressed(head: &Parts) -> Result<Addressed, Refusal> {
    if head.method == Method::CONNECT {
        return Err(Refusal::new(
            Reason::ConnectNotSupported,
            "CONNECT tunnels are not supported: send plain requests to a route (/r/<route>/...) or in absolute form",
        ));
    }
    if head.headers.contains_key(http::header::UPGRADE) {
        return Err(Refusal::new(
            Reason::UpgradeNotSupported,
            "protocol upgrades (WebSocket) are not supported through the gateway yet",
        ));
    }
    let mut hosts = head.headers.get_all(http::header::HOST).iter();
    let host = match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => {
            return Err(bad("the request has two Host headers: send exactly one"));
        }
        (h, None) => h
            .map(|h| {
                h.to_str()
                    .map_err(|_| bad("the Host header is not plain ASCII"))
                    .and_then(|s| {
                        Authority::try_from(s)
                            .map_err(|_| bad("the Host header is not host[:port]"))
                    })
            })
            .transpose()?,
        (None, Some(_)) => None,
    };
    let path = head
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    check_path(path.path())?;
    let absolute = head.uri.scheme().zip(head.uri.authority());
    if head.version == Version::HTTP_2 {
        // Every HTTP/2 request carries `:authority`: the gateway's own name, since agents
        // reach it directly. So HTTP/2 requests are always routes, addressed by path; a Host
        // header beside `:authority` must still agree with it.
        if let (Some((_, authority)), Some(h)) = (absolute, &host)
            && !same_authority(authority, h)
        {
            return Err(bad(
                "the Host header and :authority name different hosts: send one",
            ));
        }
        return route(&path);
    }
    let Some((scheme, authority)) = absolute else {
        return match head.uri.authority() {
            None => route(&path),
            Some(_) => Err(bad(
                "the request URI is neither a path nor an absolute http(s) URI",
            )),
        };
    };
    let tls = if *scheme == Scheme::HTTPS {
        true
    } else if *scheme == Scheme::HTTP {
        false
    } else {
        return Err(bad("only http:// and https:// URIs can be forwarded"));
    };
    if authority.as_str().contains('@') {
        return Err(bad("a URI with user information cannot be forwarded"));
    }
    let (uri_host, port) = split(authority, tls)?;
    if let Some(h) = &host {
        let (h_host, h_port) = split(h, tls)?;
        if (h_host.as_str(), h_port) != (uri_host.as_str(), port) {
            return Err(bad(
                "the Host header and the request's URI name different hosts: send one destination",
            ));
        }
    }
    Ok(Addressed::Forward {
        tls,
        host: uri_host,
        port,
        path,
    })
}

/// Whether two authorities name the same host and port (case and a trailing dot aside).
fn same_authority(a: &Authority, b: &Authority) -> bool {
    let norm = |x: &Authority| {
        let h = x.host().to_ascii_lowercase();
        (h.strip_suffix('.').unwrap_or(&h).to_owned(), x.port_u16())
    };
    norm(a) == norm(b)
}

fn route(path: &PathAndQuery) -> Result<Addressed, Refusal> {
    let unknown = || {
        Refusal::new(
            Reason::RouteUnknown,
            "address a route as /r/<route>/<path> (the gateway's configuration lists its routes), or send an absolute URI",
        )
    };
    let rest = path.path().strip_prefix("/r/").ok_or_else(unknown)?;
    let (name, below) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let valid = !name.is_empty()
        && name.len() <= MAX_ROUTE_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !valid {
        return Err(unknown());
    }
    let rest = match path.query() {
        Some(q) => format!("{below}?{q}"),
        None => below.to_owned(),
    };
    let rest = PathAndQuery::try_from(rest).map_err(|_| bad("the path is not a valid URI path"))?;
    Ok(Addressed::Route {
        name: name.to_owned(),
        rest,
    })
}

/// Refuses dot segments and encoded separators, raw or percent-encoded (either case).
fn check_path(path: &str) -> Result<(), Refusal> {
    let lower = path.to_ascii_lowercase();
    let encoded = ["%2f", "%5c", "%2e", "%00"]
        .iter()
        .any(|e| lower.contains(e));
    let dots = path.split('/').any(|seg| seg == "." || seg == "..");
    if encoded || dots || path.contains('\\') {
        return Err(Refusal::new(
            Reason::BadPath,
            "the path has a `.` or `..` segment, a backslash, or an encoded `/`, `\\`, `.` or NUL: send the path the upstream should serve, as it is",
        ));
    }
    Ok(())
}

/// A host (lower case, without a trailing dot) and port (the scheme's default when absent).
fn split(a: &Authority, tls: bool) -> Result<(String, u16), Refusal> {
    let host = a.host().to_ascii_lowercase();
    let host = host.strip_suffix('.').unwrap_or(&host).to_owned();
    if host.is_empty() {
        return Err(bad("the authority has no host"));
    }
    // One trailing dot names the root and is dropped; a host still ending in one after that
    // (`api.example.com..`) has an empty label and is not a host name.
    if host.ends_with('.') {
        return Err(bad("the host has an empty label (two trailing dots)"));
    }
    let port = match a.port_u16() {
        Some(0) => return Err(bad("port 0 cannot be forwarded to")),
        Some(p) => p,
        None if a.as_str().ends_with(':') => return Err(bad("the authority has an empty port")),
        None if tls => 443,
        None => 80,
    };
    Ok((host, port))
}

fn bad(message: &str) -> Refusal {
    Refusal::new(Reason::BadRequest, message)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use http::Request;

    use super::*;

    fn head(method: &str, uri: &str, version: Version, hosts: &[&str]) -> Parts {
        let mut b = Request::builder().method(method).uri(uri).version(version);
        for h in hosts {
            b = b.header(http::header::HOST, *h);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn h1(uri: &str, hosts: &[&str]) -> Result<Addressed, Refusal> {
        addressed(&head("POST", uri, Version::HTTP_11, hosts))
    }

    fn code(r: Result<Addressed, Refusal>) -> &'static str {
        r.unwrap_err().reason.as_str()
    }

    #[test]
    fn routes_keep_their_rest_and_query() {
        assert_eq!(
            h1("/r/openai/v1/chat/completions?stream=true", &["gw:8080"]).unwrap(),
            Addressed::Route {
                name: "openai".into(),
                rest: PathAndQuery::from_static("/v1/chat/completions?stream=true"),
            }
        );
        assert_eq!(
            h1("/r/groq", &[]).unwrap(),
            Addressed::Route {
                name: "groq".into(),
                rest: PathAndQuery::from_static("/"),
            }
        );
        for bad in ["/v1/chat", "/r/", "/r//x", "/r/a%20b/x", "/rr/x"] {
            assert!(
                matches!(code(h1(bad, &[])), "route_unknown" | "bad_request"),
                "{bad}"
            );
        }
    }

    #[test]
    fn absolute_form_names_the_destination_and_host_must_agree() {
        assert_eq!(
            h1("https://API.Example.com./v1/x", &["api.example.com:443"]).unwrap(),
            Addressed::Forward {
                tls: true,
                host: "api.example.com".into(),
                port: 443,
                path: PathAndQuery::from_static("/v1/x"),
            }
        );
        assert_eq!(
            h1("http://[::1]:8080/", &[]).unwrap(),
            Addressed::Forward {
                tls: false,
                host: "[::1]".into(),
                port: 8080,
                path: PathAndQuery::from_static("/"),
            }
        );
        assert_eq!(
            code(h1("https://api.example.com/x", &["evil.test"])),
            "bad_request"
        );
        assert_eq!(
            code(h1("https://api.example.com/x", &["api.example.com:8443"])),
            "bad_request"
        );
        assert_eq!(code(h1("/r/a/x", &["a", "b"])), "bad_request");
        assert_eq!(
            code(h1("https://user@api.example.com/x", &[])),
            "bad_request"
        );
        assert_eq!(code(h1("ftp://api.example.com/x", &[])), "bad_request");
        // HTTP/2: always a route by path; a Host header must agree with `:authority`.
        let h2 = |hosts: &[&str]| {
            addressed(&head(
                "GET",
                "https://gw.test/r/a/x",
                Version::HTTP_2,
                hosts,
            ))
        };
        assert_eq!(code(h2(&["other.test"])), "bad_request");
        assert_eq!(
            h2(&["GW.test."]).unwrap(),
            Addressed::Route {
                name: "a".into(),
                rest: PathAndQuery::from_static("/x"),
            }
        );
    }

    #[test]
    fn a_host_with_more_than_one_trailing_dot_is_refused() {
        // Found by the `gateway_request` fuzz target: only the root's one dot is stripped, so
        // `api.example.com..` used to be forwarded as `api.example.com.`.
        for uri in [
            "https://api.example.com../x",
            "http://api.example.com...:8080/x",
            "https://../x",
        ] {
            assert_eq!(code(h1(uri, &[])), "bad_request", "{uri}");
        }
        assert_eq!(
            code(h1("https://api.example.com/x", &["api.example.com.."])),
            "bad_request"
        );
        // One root dot is still fine, on either side.
        assert!(h1("https://api.example.com./x", &["api.example.com."]).is_ok());
    }

    #[test]
    fn tunnels_upgrades_and_ambiguous_paths_are_refused() {
        assert_eq!(
            code(addressed(&head(
                "CONNECT",
                "api.example.com:443",
                Version::HTTP_11,
                &[]
            ))),
            "connect_not_supported"
        );
        let mut up = head("GET", "/r/a/ws", Version::HTTP_11, &[]);
        up.headers
            .insert(http::header::UPGRADE, "websocket".parse().unwrap());
        assert_eq!(code(addressed(&up)), "upgrade_not_supported");
        for p in [
            "/r/a/v1/../admin",
            "/r/a/./x",
            "/r/a/v1/%2e%2e/admin",
            "/r/a/v1%2Fadmin",
            "/r/a/x%5cy",
            "/r/a/x%00",
            "https://api.example.com/v1/..",
        ] {
            assert_eq!(code(h1(p, &[])), "bad_path", "{p}");
        }
    }
}
