//! `spike-bench soak`: a fixed request rate against a real Nexus (redb on disk, durable
//! writes, mTLS on loopback, three keepers) for minutes, counting every answer that is not a
//! success and sampling the process's resident memory, so a leak or a slow failure shows.
//!
//! The load is open-loop: a request is started on every tick of a fixed-rate clock, whatever
//! the ones before are doing (at most `MAX_IN_FLIGHT` at once; a tick that finds them all busy
//! is counted as late, never silently dropped). Four in five requests read a random secret of
//! the working set, one in five writes a new version of one, through one pooled client as a
//! workload would. Nexus, the keepers and the client share this process, so the memory figure
//! is all of them; the client's part is bounded by the in-flight cap.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use serde::Serialize;
use spike_core::id::Builtin;
use spike_runtime::net::MtlsClient;

use crate::Stack;
use crate::refusals::{Distribution, distribution};

/// Most requests in flight at once.
const MAX_IN_FLIGHT: usize = 256;
/// Longest soak.
pub const MAX_SOAK: Duration = Duration::from_secs(3600);
/// Highest rate, requests per second.
pub const MAX_RATE: u32 = 20_000;

/// Options of [`soak`].
#[derive(Debug, Clone)]
pub struct SoakOptions {
    /// Requests started per second.
    pub rate: u32,
    /// How long to keep starting them.
    pub duration: Duration,
    /// Secrets in the working set.
    pub secrets: usize,
    /// How often memory is sampled.
    pub sample_every: Duration,
}

/// One memory sample.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct MemorySample {
    /// Seconds since the load started.
    pub at_secs: u64,
    /// Resident memory of the process (Nexus, keepers and client), KiB.
    pub rss_kib: u64,
    /// Requests answered so far.
    pub answered: u64,
}

/// What [`soak`] measured.
#[derive(Debug, Clone, Serialize)]
pub struct SoakReport {
    /// Requests answered (any status).
    pub answered: u64,
    /// Answers that were not a success, and transport errors.
    pub errors: u64,
    /// The first few of them.
    pub error_samples: Vec<String>,
    /// Ticks that found `MAX_IN_FLIGHT` requests still running (the rate was not kept).
    pub late: u64,
    /// Answered per second over the whole run.
    pub achieved_rate: f64,
    /// Latency of reads, microseconds.
    pub reads: Distribution,
    /// Latency of writes (durable), microseconds.
    pub writes: Distribution,
    /// Resident memory over time.
    pub memory: Vec<MemorySample>,
}

/// The process's resident memory, KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// A small deterministic generator: which secret each request touches.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[derive(Default)]
struct Tally {
    answered: AtomicU64,
    errors: AtomicU64,
    samples: std::sync::Mutex<(Vec<String>, Vec<Duration>, Vec<Duration>)>,
}

/// Runs the soak on `stack`.
pub async fn soak(stack: &Stack, opts: &SoakOptions) -> anyhow::Result<SoakReport> {
    if opts.rate == 0 || opts.rate > MAX_RATE {
        bail!("--rate must be between 1 and {MAX_RATE}");
    }
    if opts.duration.is_zero() || opts.duration > MAX_SOAK {
        bail!("--duration must be longer than zero and at most 1h");
    }
    if opts.secrets == 0 || opts.secrets > 100_000 {
        bail!("--secrets must be between 1 and 100000");
    }
    let td = stack.trust_domain();
    let client = Arc::new(
        MtlsClient::new(
            stack.nexus_addr().to_owned(),
            Builtin::Nexus.id(td),
            stack.svid_source(&Builtin::Superuser.id(td))?,
        )?
        .with_timeout(Duration::from_secs(30)),
    );
    let put = |n: u64| {
        serde_json::to_vec(&serde_json::json!({ "data": { "v": format!("soak-value-{n:016}") } }))
    };
    for i in 0..opts.secrets {
        let r = client
            .send(
                http::Method::PUT,
                &format!("/v1/secrets/data/soak/{i}"),
                Some(put(0)?),
            )
            .await?;
        if !r.status.is_success() {
            bail!("seeding soak/{i}: {}", r.status);
        }
    }

    let tally = Arc::new(Tally::default());
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(opts.rate)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut rng = SplitMix(0x5eed);
    let (mut late, mut started) = (0u64, 0u64);
    let mut memory = Vec::new();
    let t0 = Instant::now();
    let mut next_sample = t0;
    let total = u64::from(opts.rate) * opts.duration.as_secs().max(1);
    while started < total && t0.elapsed() < opts.duration {
        ticks.tick().await;
        if Instant::now() >= next_sample {
            memory.push(MemorySample {
                at_secs: t0.elapsed().as_secs(),
                rss_kib: rss_kib(),
                answered: tally.answered.load(Ordering::Relaxed),
            });
            next_sample += opts.sample_every;
        }
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            late += 1;
            continue;
        };
        started += 1;
        let r = rng.next();
        let path = format!("/v1/secrets/data/soak/{}", r % opts.secrets as u64);
        let write = (r >> 32).is_multiple_of(5);
        let body = if write { Some(put(started)?) } else { None };
        let (client, tally) = (client.clone(), tally.clone());
        tokio::spawn(async move {
            let start = Instant::now();
            let method = if write {
                http::Method::PUT
            } else {
                http::Method::GET
            };
            let outcome = client.send(method, &path, body).await;
            let took = start.elapsed();
            let problem = match outcome {
                Ok(r) if r.status.is_success() => None,
                Ok(r) => Some(format!("{} {}", r.status, String::from_utf8_lossy(&r.body))),
                Err(e) => Some(e.to_string()),
            };
            tally.answered.fetch_add(1, Ordering::Relaxed);
            let mut s = tally.samples.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(p) = problem {
                tally.errors.fetch_add(1, Ordering::Relaxed);
                if s.0.len() < 10 {
                    s.0.push(p);
                }
            }
            if write {
                s.2.push(took)
            } else {
                s.1.push(took)
            }
            drop(slot);
        });
    }
    // Every request answered (bounded by the client's timeout).
    let _ = slots.acquire_many(MAX_IN_FLIGHT as u32).await?;
    let elapsed = t0.elapsed();
    memory.push(MemorySample {
        at_secs: elapsed.as_secs(),
        rss_kib: rss_kib(),
        answered: tally.answered.load(Ordering::Relaxed),
    });
    let answered = tally.answered.load(Ordering::Relaxed);
    let s = tally.samples.lock().unwrap_or_else(|p| p.into_inner());
    Ok(SoakReport {
        answered,
        errors: tally.errors.load(Ordering::Relaxed),
        error_samples: s.0.clone(),
        late,
        achieved_rate: answered as f64 / elapsed.as_secs_f64(),
        reads: distribution("read", &s.1),
        writes: distribution("write", &s.2),
        memory,
    })
}
