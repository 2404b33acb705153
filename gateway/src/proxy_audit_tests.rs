//! The audit line of every decision: written before anything leaves, naming the agent, token
//! ids, route, destination and reason, never a value; and no request served unaudited.

use spike_core::audit::{AuditLine, ChainOwner, ChainVerifier};

use super::*;

/// The log's lines, after checking that they form this gateway's chain under its key.
fn lines(gw: &Gw) -> Vec<AuditLine> {
    let text = std::fs::read_to_string(&gw.log).unwrap();
    let owner = ChainOwner::Gateway(SpiffeId::new(GATEWAY).unwrap());
    let mut v = ChainVerifier::new(&gw.key).owned_by(owner);
    v.read(text.as_bytes()).unwrap();
    v.finish().unwrap();
    text.lines().map(|l| AuditLine::parse(l).unwrap()).collect()
}

/// An upstream that counts the connections it gets and answers nothing useful.
async fn counting_upstream() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let n = Arc::new(AtomicUsize::new(0));
    let seen = n.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            drop(tcp);
        }
    });
    (addr, n)
}

#[tokio::test]
async fn every_decision_is_one_chained_line_without_the_value() {
    let up = reflector().await;
    let gw = proxy(vec![route("echo", up.port())], table()).await;
    let bearer = format!("Bearer {}", token(1));
    let ok = gw.handle(&agent(), req("/r/echo/x", &bearer, "")).await;
    assert_eq!(ok.status(), StatusCode::FOUND);
    let (_, all) = seen(ok).await;
    assert_no_value(&all);
    let other = SpiffeId::new("spiffe://poc.local/agents/b").unwrap();
    let unknown = gw
        .handle(&Caller::from(other.clone()), req("/r/echo/x", &bearer, ""))
        .await;
    assert_eq!(unknown.status(), StatusCode::FORBIDDEN);
    let no_route = gw.handle(&agent(), req("/r/nope/x", "none", "")).await;
    assert_eq!(no_route.status(), StatusCode::NOT_FOUND);
    let leaked = gw
        .handle(&agent(), req("/r/echo/x", &format!("Bearer {REAL}"), ""))
        .await;
    assert_eq!(leaked.status(), StatusCode::FORBIDDEN);

    let l = lines(&gw);
    assert_eq!(l.len(), 4, "{l:?}");
    let dest = format!("upstream.test:{}", up.port());
    let summary: Vec<_> = l
        .iter()
        .map(|l| {
            (
                l.caller.as_deref().unwrap(),
                l.agent.as_deref().unwrap(),
                l.action.as_str(),
                l.route.as_deref(),
                l.destination.as_deref(),
                l.token.as_deref(),
                l.decision.as_str(),
                l.reason.as_str(),
                l.status,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            // Allowed: written before the request left, so no upstream status. (A POST no
            // rule of the route names is a write.)
            (
                GATEWAY,
                AGENT,
                "gateway.write",
                Some("echo"),
                Some(dest.as_str()),
                Some("0123456789abcdef"),
                "allow",
                "ok",
                None
            ),
            (
                GATEWAY,
                other.as_str(),
                "gateway.write",
                Some("echo"),
                Some(dest.as_str()),
                None,
                "deny",
                "token_unknown",
                Some(403)
            ),
            // Refused before it was classified: no route, no destination.
            (
                GATEWAY,
                AGENT,
                "gateway.request",
                None,
                None,
                None,
                "deny",
                "route_unknown",
                Some(404)
            ),
            (
                GATEWAY,
                AGENT,
                "gateway.write",
                Some("echo"),
                Some(dest.as_str()),
                None,
                "deny",
                "value_in_request",
                Some(403)
            ),
        ]
    );
    // Neither the value (in any form the scrubber knows) nor a reference is in the log.
    let text = std::fs::read_to_string(&gw.log).unwrap();
    assert_no_value(&text);
    assert!(
        !text.contains(&token(1)) && !text.contains("SPIKE{"),
        "{text}"
    );
}

#[tokio::test]
async fn an_allowed_request_that_fails_upstream_gets_an_error_line_after_its_allow_line() {
    let (up, connections) = counting_upstream().await;
    let gw = proxy(vec![route("dead", up.port())], table()).await;
    let r = gw
        .handle(
            &agent(),
            req("/r/dead/x", &format!("Bearer {}", token(1)), ""),
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY);
    assert!(connections.load(Ordering::SeqCst) >= 1);
    let l = lines(&gw);
    let decisions: Vec<_> = l
        .iter()
        .map(|l| (l.decision.as_str(), l.reason.as_str(), l.token.as_deref()))
        .collect();
    assert_eq!(
        decisions,
        [
            ("allow", "ok", Some("0123456789abcdef")),
            ("error", "upstream_unavailable", Some("0123456789abcdef")),
        ]
    );
}

#[tokio::test]
async fn nothing_is_served_or_resolved_before_the_log_is_open() {
    let (up, connections) = counting_upstream().await;
    let t = table();
    let trail = Arc::new(AuditTrail::new(SpiffeId::new(GATEWAY).unwrap()));
    let p = unaudited(vec![route("up", up.port())], t.clone(), trail);
    let r = p
        .handle(
            &agent(),
            req("/r/up/x", &format!("Bearer {}", token(1)), ""),
        )
        .await;
    let (status, all) = seen(r).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{all}");
    assert!(all.contains(r#""code":"audit_unavailable""#), "{all}");
    assert_eq!(t.resolutions.load(Ordering::SeqCst), 0);
    assert_eq!(connections.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_log_that_cannot_be_written_refuses_requests_and_sends_nothing() {
    let (up, connections) = counting_upstream().await;
    let gw = proxy(vec![route("up", up.port())], table()).await;
    // The writer stops (as when its disk fails): every append now fails.
    gw.trail.close().await;
    for (path, auth) in [
        ("/r/up/x", format!("Bearer {}", token(1))),
        ("/r/up/x", format!("Bearer {}", token(2))),
        ("/r/nope/x", "none".to_owned()),
    ] {
        let r = gw.handle(&agent(), req(path, &auth, "")).await;
        let (status, all) = seen(r).await;
        assert_eq!(
            status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{path} {auth}: {all}"
        );
        assert!(all.contains(r#""code":"audit_unavailable""#), "{all}");
    }
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "nothing left unaudited"
    );
    assert!(std::fs::read_to_string(&gw.log).unwrap().is_empty());
}
