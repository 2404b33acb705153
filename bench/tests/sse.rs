//! The SSE benchmark in a small run, as CI runs it: every event of every stream arrives on
//! both paths (through a real gateway, which substitutes the key the upstream checks, and
//! directly). The latencies are printed, never asserted.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_arrives_through_the_gateway_and_directly() {
    spike_runtime::tls::install_crypto_provider();
    let stack = spike_bench::Stack::start(None).await.unwrap();
    let opts = spike_bench::SseOptions {
        streams: 3,
        events: 5,
        gap: Duration::from_millis(2),
    };
    let r = tokio::time::timeout(Duration::from_secs(120), spike_bench::sse(&stack, &opts))
        .await
        .expect("the SSE benchmark did not finish in time")
        .unwrap();
    stack.stop().await;
    eprintln!("{}", serde_json::to_string(&r).unwrap());
    for p in [&r.direct, &r.gateway] {
        assert_eq!(p.streams, 3);
        assert_eq!(p.events, 15);
        assert!(p.ttfb_p50_us > 0.0 && p.event_p50_us > 0.0);
    }
}

#[tokio::test]
async fn out_of_bounds_options_are_refused() {
    spike_runtime::tls::install_crypto_provider();
    let stack = spike_bench::Stack::start(None).await.unwrap();
    for (streams, events) in [(0, 5), (5, 0), (spike_bench::MAX_SSE + 1, 5)] {
        let opts = spike_bench::SseOptions {
            streams,
            events,
            gap: Duration::from_millis(1),
        };
        let e = spike_bench::sse(&stack, &opts).await.unwrap_err();
        assert!(e.to_string().contains("between 1 and"), "{e}");
    }
    stack.stop().await;
}
