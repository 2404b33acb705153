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
