//! The benchmark's quick mode, as CI runs it: 10,000 secrets through the batch API into a real
//! Nexus on redb, then the same again. Asserts correctness only (every secret created, then
//! every one unchanged); the rates are printed, never asserted.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_seed_loads_then_changes_nothing() {
    spike_runtime::tls::install_crypto_provider();
    let stack = spike_bench::Stack::start(None).await.unwrap();
    let opts = spike_bench::SeedOptions {
        count: 10_000,
        batch_size: 500,
        parallel: 4,
        value_len: 32,
        repeat: true,
        max_time: std::time::Duration::from_secs(600),
    };
    let r = tokio::time::timeout(
        std::time::Duration::from_secs(900),
        spike_bench::seed(&stack, &opts),
    )
    .await
    .expect("the quick benchmark did not finish in time")
    .unwrap();
    stack.stop().await;
    eprintln!("{}", serde_json::to_string(&r).unwrap());
    assert_eq!(r.written, 10_000);
    assert_eq!(r.unchanged, 10_000);
    assert!(r.disk_bytes > 0);
}

/// The refusal benchmark in miniature: every case (stolen token, no certificate, another
/// trust domain, unknown token) is answered the same `token_unknown`, which the run itself
/// checks; the latencies are printed, never asserted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_refusals_answer_every_case_alike() {
    spike_runtime::tls::install_crypto_provider();
    let opts = spike_bench::RefusalOptions {
        requests: 20,
        connections: 5,
        max_time: std::time::Duration::from_secs(300),
    };
    let r = tokio::time::timeout(
        std::time::Duration::from_secs(600),
        spike_bench::gateway_refusals(&opts),
    )
    .await
    .expect("the refusal benchmark did not finish in time")
    .unwrap();
    eprintln!("{}", serde_json::to_string(&r).unwrap());
    assert!(r.body.contains(r#""code":"token_unknown""#), "{}", r.body);
    assert_eq!(r.kept_alive.len(), 4);
    assert!(r.kept_alive.iter().all(|d| d.count == 20));
    assert!(r.new_connection.iter().all(|d| d.count == 5));
}

/// The audit-append measurement runs both modes to the end; its times are printed only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_append_measures_both_modes() {
    let dir = tempfile::tempdir().unwrap();
    let r = spike_bench::audit_append(dir.path(), 20).await.unwrap();
    eprintln!("{}", serde_json::to_string(&r).unwrap());
    let modes: Vec<_> = r.iter().map(|m| (m.durability, m.lines)).collect();
    assert_eq!(modes, [("synced", 20), ("batched", 20)]);
    for m in ["synced", "batched"] {
        let log = std::fs::read_to_string(dir.path().join(format!("audit-{m}.log"))).unwrap();
        assert_eq!(log.lines().count(), 20, "{m}");
    }
}

/// The soak in miniature: two seconds at a fixed rate, every request answered with success
/// and counted once, memory sampled; the latencies and memory are printed, never asserted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_soak_answers_every_request() {
    spike_runtime::tls::install_crypto_provider();
    let stack = spike_bench::Stack::start(None).await.unwrap();
    let opts = spike_bench::SoakOptions {
        rate: 50,
        duration: std::time::Duration::from_secs(2),
        secrets: 20,
        sample_every: std::time::Duration::from_secs(1),
    };
    let r = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        spike_bench::soak(&stack, &opts),
    )
    .await
    .expect("the soak did not finish in time")
    .unwrap();
    stack.stop().await;
    eprintln!("{}", serde_json::to_string(&r).unwrap());
    assert_eq!(r.errors, 0, "{:?}", r.error_samples);
    // Every tick started a request or was counted late (a slow machine may see the last
    // ticks fall after the deadline).
    assert!(
        (90..=100).contains(&(r.answered + r.late)),
        "{}",
        r.answered
    );
    assert_eq!(r.reads.count + r.writes.count, r.answered as usize);
    assert!(r.writes.count > 0 && r.reads.count > 0);
    assert!(r.memory.len() >= 2 && r.memory.iter().all(|m| m.rss_kib > 0));
}
