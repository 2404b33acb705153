//! The gateway's reading of an inbound request (`spike_gateway::inbound::addressed`, with the
//! route rules of `route` and the token finder of `locate`): a request head built from the
//! fuzz data (method, URI, version, `Host` headers, `Upgrade`, `Authorization`) never panics
//! them. A forward-proxy request that is accepted names a normalized host (non-empty, lower
//! case, no trailing dot, no user information, IPv6 in brackets) and a port from 1 to 65535
//! that agree with any `Host` header; a route is a valid name and a path starting with `/`;
//! neither keeps a dot segment or an encoded separator. Action rules match whole segments.
#![no_main]

mod common;

use arbitrary::{Result, Unstructured};
use common::text;
use http::uri::PathAndQuery;
use http::{HeaderValue, Method, Request, Version};
use libfuzzer_sys::fuzz_target;
use spike_core::token::TokenAction;
use spike_gateway::inbound::{Addressed, addressed};
use spike_gateway::locate::tokens_in_head;
use spike_gateway::route::{ActionRule, classify, under};

const URI_PIECES: &[&str] = &[
    "https://",
    "http://",
    "ftp://",
    "/r/",
    "openai",
    "/",
    "v1",
    "chat",
    "API.",
    "Example",
    ".com",
    ".",
    "..",
    ":",
    "443",
    "0",
    "8080",
    "65536",
    "[::1]",
    "@",
    "user",
    "?",
    "q=1",
    "&",
    "%2f",
    "%2E",
    "%00",
    "\\",
    "#",
    "*",
    "$SPIKE{ref:0123456789abcdef0123456789abcdef}",
];
const HOST_PIECES: &[&str] = &[
    "api", ".", "example", ".com", "EXAMPLE", ":", "443", "80", "0", "[::1]", "gw", "@", " ",
];
const METHODS: &[&str] = &[
    "GET", "POST", "HEAD", "OPTIONS", "CONNECT", "DELETE", "PATCH", "X",
];

fn assert_host(host: &str, port: u16, uri: &str) {
    assert!(!host.is_empty(), "{uri}: empty host");
    assert_eq!(
        host,
        host.to_ascii_lowercase(),
        "{uri}: host not lower case"
    );
    assert!(!host.ends_with('.'), "{uri}: host {host:?} ends with a dot");
    assert!(!host.contains(['@', '/', '?', '#']), "{uri}: host {host:?}");
    assert!(
        !host.contains(':') || host.starts_with('['),
        "{uri}: bare IPv6 {host:?}"
    );
    assert!(port > 0, "{uri}: port 0");
}

fn run(u: &mut Unstructured<'_>) -> Result<()> {
    let uri = common::build(u, URI_PIECES, 16)?;
    let method = *u.choose(METHODS)?;
    let version = *u.choose(&[Version::HTTP_11, Version::HTTP_10, Version::HTTP_2])?;
    let mut b = Request::builder()
        .method(method)
        .uri(uri.as_str())
        .version(version);
    let mut hosts = Vec::new();
    for _ in 0..u.int_in_range(0..=2)? {
        let h = common::build(u, HOST_PIECES, 6)?;
        if let Ok(v) = HeaderValue::from_str(&h) {
            b = b.header(http::header::HOST, v);
            hosts.push(h);
        }
    }
    if u.ratio(1, 16)? {
        b = b.header(http::header::UPGRADE, "websocket");
    }
    if u.ratio(1, 4)? {
        if let Ok(v) = HeaderValue::from_str(&text(u, 80)?) {
            b = b.header(http::header::AUTHORIZATION, v);
        }
    }
    let Ok(req) = b.body(()) else {
        return Ok(());
    };
    let (head, ()) = req.into_parts();
    let _ = tokens_in_head(&head);
    match addressed(&head) {
        Err(_) => {}
        Ok(Addressed::Forward {
            host, port, path, ..
        }) => {
            assert_host(&host, port, &uri);
            assert!(
                version != Version::HTTP_2,
                "{uri}: an HTTP/2 request forwarded"
            );
            assert!(method != "CONNECT");
            if let [h] = &hosts[..] {
                // The Host header names the same place, in its own spelling.
                let a: http::uri::Authority = h.parse().expect("an accepted Host parses");
                let hh = a.host().to_ascii_lowercase();
                assert_eq!(
                    hh.strip_suffix('.').unwrap_or(&hh),
                    host,
                    "{uri} / Host {h}"
                );
            }
            check_path(&path, &uri);
        }
        Ok(Addressed::Route { name, rest }) => {
            assert!(
                !name.is_empty() && name.len() <= 64,
                "{uri}: route {name:?}"
            );
            assert!(
                name.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            );
            assert!(rest.path().starts_with('/'), "{uri}: rest {rest}");
            check_path(&rest, &uri);
        }
    }
    // Action rules: a rule applies to its prefix and below it, by whole segments.
    let prefix = common::build(u, &["/v1", "/chat", "/", "x"], 3)?;
    let rules = [ActionRule {
        method: String::new(),
        path_prefix: prefix.clone(),
        action: TokenAction::Admin,
    }];
    if let Ok(pq) = PathAndQuery::try_from(common::build(u, &["/v1", "/chat", "/", "x", "?a"], 4)?)
    {
        let path = pq.path();
        let is_under = under(path, &prefix);
        let trimmed = prefix.trim_end_matches('/');
        if is_under {
            assert!(path.starts_with(trimmed), "{path} under {prefix}");
        }
        assert_eq!(
            classify(&rules, &Method::GET, &pq) == TokenAction::Admin,
            is_under,
            "{path} / {prefix}"
        );
    }
    Ok(())
}

fn check_path(path: &PathAndQuery, uri: &str) {
    let p = path.path();
    assert!(
        !p.split('/').any(|s| s == "." || s == ".."),
        "{uri}: dot segment in {p}"
    );
    let lower = p.to_ascii_lowercase();
    for e in ["%2f", "%5c", "%2e", "%00", "\\"] {
        assert!(!lower.contains(e), "{uri}: {e} in {p}");
    }
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
