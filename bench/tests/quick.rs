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
