//! Counting per record on a real cache: Sluice's Redis and Memcached backends, driven the way the
//! engine drives them, beside a native client loop and the server's pipelined ceiling, all
//! measured in this run on loopback servers started by the harness.
//!
//! The workload is word-count's: one increment per record, keys drawn from 10,000 words with a
//! Zipf skew (s = 1, so the most frequent word is about 1 in 10 records), generated
//! deterministically. Rows per backend:
//!
//! - **sluice incr-many x P**: P partitions (tasks) share one backend, as a pipeline's
//!   partitions share its cache. Records are split by key (Kafka's keyed partitioning), and each
//!   partition sends one `incr-many` of 512 entries per batch of 512 records: a function that
//!   counts a whole record batch in one call. This measures the cache path only (no guest, no
//!   Kafka).
//! - **sluice incr x P**: the same partitions, one `Cache::incr` awaited per record: a function
//!   that counts record by record (word-count calls `incr-many` once per record, with that
//!   record's words; on one-word records that is this row).
//! - **sluice incr per record, 1 partition**: one `Cache::incr` awaited after another: the
//!   same shape as (a), so the ratio is the cost of Sluice's layer over a plain round trip.
//! - **(a) native per record**: one connection, one `INCR` awaited per record (Redis, redis
//!   crate), or one blocking `increment` per record with the memcache crate's classic client
//!   (Memcached): the tutorial pattern, what a hand-written consumer without batching gets.
//! - **(b) pipelined ceiling**: the server driven flat out over one connection with 64 requests
//!   in flight: `redis-benchmark -P 64 -t incr` (as the server's authors measure it) and a raw
//!   `ma` pipeline for Memcached. Not a fair target for a cache shared by many writers; it shows
//!   how much of the server's capacity the batched path reaches.
//!
//! Run with `make bench` (or `cargo bench -p sluice-tests --bench cache_incr`). Sizes can be set
//! with `SLUICE_BENCH_RECORDS` (default 200,000) and `SLUICE_BENCH_PARTITIONS` (default 8).

/// The allocator the `sluice` binary ships with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::HashMap;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice::cache::{self, Cache, CacheBackend, Namespace};
use sluice_tests::servers::{MemcachedServer, RedisServer};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

const KEYS: usize = 10_000;
const BATCH: usize = 512;
const IN_FLIGHT: usize = 64;
/// Records measured by the one-at-a-time rows (each is a round trip).
const PER_RECORD_CAP: usize = 50_000;

fn main() {
    let records = env_usize("SLUICE_BENCH_RECORDS", 200_000);
    let partitions = env_usize("SLUICE_BENCH_PARTITIONS", 8);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let keys = zipf_keys(records, KEYS, 1.0, 0x5eed);
    let hottest = keys.iter().filter(|k| *k == "w0").count();
    println!(
        "cache_incr: {records} increments over {KEYS} keys (Zipf s=1; the hottest key is {:.1}% of records), \
         {partitions} partitions, batches of {BATCH}, loopback servers",
        100.0 * hottest as f64 / records as f64
    );

    let redis = RedisServer::start();
    let memcached = MemcachedServer::start();
    let mut rows = Vec::new();
    runtime.block_on(async {
        rows.extend(redis_rows(&redis, &keys, partitions).await);
        rows.extend(memcached_rows(&memcached, &keys, partitions).await);
    });
    print_table(&rows);
}

struct Row {
    backend: &'static str,
    workload: String,
    ops: usize,
    elapsed: Duration,
    /// What the row measures, for the ratios.
    kind: RowKind,
}

#[derive(Clone, Copy, PartialEq)]
enum RowKind {
    Sluice,
    Native,
    Ceiling,
}

impl Row {
    fn rate(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }
}

async fn redis_rows(server: &RedisServer, keys: &[String], partitions: usize) -> Vec<Row> {
    let backend = cache::connect(&server.url()).await.expect("connect to redis");
    let mut rows = sluice_rows("redis", &backend, keys, partitions).await;

    let per_record = &keys[..keys.len().min(PER_RECORD_CAP)];
    let client = redis::Client::open(server.url()).expect("client");
    let mut connection = client.get_multiplexed_async_connection().await.expect("connection");
    let started = Instant::now();
    for key in per_record {
        let _: i64 = redis::cmd("INCR").arg(format!("native:{key}")).query_async(&mut connection).await.expect("INCR");
    }
    rows.push(Row {
        backend: "redis",
        workload: "(a) native INCR per record, 1 connection".into(),
        ops: per_record.len(),
        elapsed: started.elapsed(),
        kind: RowKind::Native,
    });

    match redis_benchmark(server.port(), keys.len()) {
        Some(rate) => rows.push(Row {
            backend: "redis",
            workload: format!("(b) redis-benchmark -P {IN_FLIGHT} -t incr"),
            ops: keys.len(),
            elapsed: Duration::from_secs_f64(keys.len() as f64 / rate),
            kind: RowKind::Ceiling,
        }),
        None => println!("redis-benchmark is not installed (make setup installs redis-tools): no (b) row for redis"),
    }
    rows
}

async fn memcached_rows(server: &MemcachedServer, keys: &[String], partitions: usize) -> Vec<Row> {
    let backend = cache::connect(&server.url()).await.expect("connect to memcached");
    let mut rows = sluice_rows("memcached", &backend, keys, partitions).await;

    // (a): the memcache crate's classic client, one blocking increment per record, creating
    // a missing counter with `add`: the pattern of most tutorials.
    let per_record: Vec<String> = keys[..keys.len().min(PER_RECORD_CAP)].to_vec();
    let url = format!("memcache://{}?tcp_nodelay=true", server.address());
    let (ops, elapsed) = tokio::task::spawn_blocking(move || {
        let client = memcache::Client::connect(url).expect("memcache crate connects");
        let started = Instant::now();
        for key in &per_record {
            let key = format!("native:{key}");
            if client.increment(&key, 1).is_err() {
                client.add(&key, 1u64, 0).or_else(|_| client.increment(&key, 1).map(|_| ())).expect("add or increment");
            }
        }
        (per_record.len(), started.elapsed())
    })
    .await
    .expect("memcache crate loop");
    rows.push(Row {
        backend: "memcached",
        workload: "(a) memcache crate, increment per record".into(),
        ops,
        elapsed,
        kind: RowKind::Native,
    });

    let elapsed = memcached_pipelined(&server.address(), keys).await;
    rows.push(Row {
        backend: "memcached",
        workload: format!("(b) raw ma pipeline, {IN_FLIGHT} in flight"),
        ops: keys.len(),
        elapsed,
        kind: RowKind::Ceiling,
    });
    rows
}

/// The Sluice rows for `backend`, checking that no increment was lost.
async fn sluice_rows(
    kind: &'static str,
    backend: &Arc<dyn CacheBackend>,
    keys: &[String],
    partitions: usize,
) -> Vec<Row> {
    let mut rows = Vec::new();
    for (namespace, batch) in [("bench-batched", BATCH), ("bench-per-record", 1)] {
        let cache = Cache::new(Arc::clone(backend), Namespace::new(namespace).unwrap());
        let elapsed = run_partitions(&cache, keys, partitions, batch).await;
        check_counts(&cache, keys).await;
        let workload = if batch > 1 {
            format!("sluice incr-many of {batch} x {partitions} partitions")
        } else {
            format!("sluice incr x {partitions} partitions")
        };
        rows.push(Row { backend: kind, workload, ops: keys.len(), elapsed, kind: RowKind::Sluice });
    }
    if kind == "memcached" {
        println!(
            "memcached: incr-many sums the deltas of a key repeated in one call, so the batched row sent {} `ma` \
             commands for {} increments",
            distinct_per_batch(keys, partitions, BATCH),
            keys.len()
        );
    }

    let per_record = &keys[..keys.len().min(PER_RECORD_CAP)];
    let single = Cache::new(Arc::clone(backend), Namespace::new("bench-single").unwrap());
    let started = Instant::now();
    for key in per_record {
        single.incr(key, 1, None).await.expect("incr");
    }
    rows.push(Row {
        backend: kind,
        workload: "sluice incr per record, 1 partition".into(),
        ops: per_record.len(),
        elapsed: started.elapsed(),
        kind: RowKind::Sluice,
    });
    let latency = single.stats().snapshot().latency;
    println!(
        "{kind}: one incr at a time takes {:?} on average (p99 <= {:?})",
        latency.mean().unwrap_or_default(),
        latency.quantile_upper_bound(0.99).unwrap_or_default()
    );
    rows
}

/// Splits `keys` over `partitions` by key and has every partition count its records on `cache`,
/// `batch` records per call (1: `incr`, more: `incr-many`), all partitions at once.
async fn run_partitions(cache: &Cache, keys: &[String], partitions: usize, batch: usize) -> Duration {
    let mut shares: Vec<Vec<String>> = vec![Vec::new(); partitions];
    for key in keys {
        shares[partition_of(key, partitions)].push(key.clone());
    }
    let started = Instant::now();
    let tasks: Vec<_> = shares
        .into_iter()
        .map(|share| {
            let cache = cache.clone();
            tokio::spawn(async move {
                for records in share.chunks(batch) {
                    if let [key] = records {
                        cache.incr(key, 1, None).await.expect("incr");
                    } else {
                        let entries: Vec<(String, i64)> = records.iter().map(|key| (key.clone(), 1)).collect();
                        cache.incr_many(&entries, None).await.expect("incr-many");
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("partition task");
    }
    started.elapsed()
}

/// How many distinct keys the batches of [`run_partitions`] hold, summed.
fn distinct_per_batch(keys: &[String], partitions: usize, batch: usize) -> usize {
    let mut shares: Vec<Vec<&str>> = vec![Vec::new(); partitions];
    for key in keys {
        shares[partition_of(key, partitions)].push(key);
    }
    shares
        .iter()
        .flat_map(|share| share.chunks(batch))
        .map(|records| records.iter().collect::<std::collections::HashSet<_>>().len())
        .sum()
}

/// Every key's counter equals the number of records that carry it.
async fn check_counts(cache: &Cache, keys: &[String]) {
    let mut expected: HashMap<&str, i64> = HashMap::new();
    for key in keys {
        *expected.entry(key).or_default() += 1;
    }
    let distinct: Vec<String> = expected.keys().map(|k| k.to_string()).collect();
    for chunk in distinct.chunks(1000) {
        let values = cache.get_many(chunk).await.expect("get-many");
        for (key, value) in chunk.iter().zip(values) {
            let value: i64 = String::from_utf8(value.expect("counter exists")).unwrap().parse().unwrap();
            assert_eq!(value, expected[key.as_str()], "lost increments on {key}");
        }
    }
}

/// `ma` requests over one socket with at most `IN_FLIGHT` unanswered; returns the time taken.
async fn memcached_pipelined(address: &str, keys: &[String]) -> Duration {
    let stream = TcpStream::connect(address).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let (read, mut write) = stream.into_split();
    let window = Arc::new(Semaphore::new(IN_FLIGHT));
    let count = keys.len();
    let started = Instant::now();
    let reader = {
        let window = Arc::clone(&window);
        tokio::spawn(async move {
            let mut read = BufReader::new(read);
            let mut line = Vec::new();
            for _ in 0..count {
                read_value_reply(&mut read, &mut line).await;
                window.add_permits(1);
            }
        })
    };
    // Write as many requests as the window allows in one go, like a pipelining client does.
    let mut payload = Vec::new();
    let mut next = keys.iter();
    let mut sent = 0;
    while sent < count {
        window.acquire().await.expect("window").forget();
        let mut granted = 1;
        while granted < count - sent && window.try_acquire().map(|permit| permit.forget()).is_ok() {
            granted += 1;
        }
        payload.clear();
        for key in next.by_ref().take(granted) {
            payload.extend_from_slice(format!("ma ceiling:{key} N0 J1 D1 v\r\n").as_bytes());
        }
        write.write_all(&payload).await.expect("write");
        sent += granted;
    }
    reader.await.expect("reader");
    started.elapsed()
}

/// Reads one `VA <n>` reply and its data line.
async fn read_value_reply<R: tokio::io::AsyncRead + Unpin>(reader: &mut BufReader<R>, line: &mut Vec<u8>) {
    line.clear();
    reader.read_until(b'\n', line).await.expect("read");
    assert!(line.starts_with(b"VA "), "unexpected reply {:?}", String::from_utf8_lossy(line));
    let length: usize = std::str::from_utf8(&line[3..line.len() - 2]).unwrap().trim().parse().unwrap();
    let mut data = vec![0u8; length + 2];
    reader.read_exact(&mut data).await.expect("read value");
}

/// `redis-benchmark -P 64 -t incr` against `port`: requests per second.
fn redis_benchmark(port: u16, requests: usize) -> Option<f64> {
    let output = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-P", &IN_FLIGHT.to_string(), "-t", "incr"])
        .args(["-n", &requests.to_string(), "-q"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    // The last line reads "INCR: 1234567.89 requests per second, p50=..." (progress lines
    // before it end with '\r').
    let line = text.split(['\r', '\n']).rfind(|line| line.contains("requests per second"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// `count` keys `w<rank>` drawn from `distinct` ranks with probability proportional to
/// `1 / rank^s`, from a fixed seed.
fn zipf_keys(count: usize, distinct: usize, s: f64, seed: u64) -> Vec<String> {
    let mut cumulative = Vec::with_capacity(distinct);
    let mut total = 0.0;
    for rank in 1..=distinct {
        total += 1.0 / (rank as f64).powf(s);
        cumulative.push(total);
    }
    let mut state = seed;
    (0..count)
        .map(|_| {
            let u = (splitmix64(&mut state) >> 11) as f64 / (1u64 << 53) as f64 * total;
            let rank = cumulative.partition_point(|&c| c < u).min(distinct - 1);
            format!("w{rank}")
        })
        .collect()
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The partition of a record with `key`, like a keyed Kafka producer spreads them.
fn partition_of(key: &str, partitions: usize) -> usize {
    let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    (hash % partitions as u64) as usize
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).filter(|&v| v > 0).unwrap_or(default)
}

fn print_table(rows: &[Row]) {
    println!();
    println!(
        "{:<10} {:<44} {:>8} {:>9} {:>12} {:>10} {:>10}",
        "backend", "workload", "ops", "seconds", "ops/s", "vs (a)", "vs (b)"
    );
    for row in rows {
        let baseline = |kind| rows.iter().find(|r| r.backend == row.backend && r.kind == kind).map(Row::rate);
        let ratio = |kind| match baseline(kind) {
            Some(base) if row.kind != kind => format!("{:.2}x", row.rate() / base),
            _ => "-".into(),
        };
        println!(
            "{:<10} {:<44} {:>8} {:>9.3} {:>12.0} {:>10} {:>10}",
            row.backend,
            row.workload,
            row.ops,
            row.elapsed.as_secs_f64(),
            row.rate(),
            ratio(RowKind::Native),
            ratio(RowKind::Ceiling)
        );
    }
    println!();
    println!("(a) = native client, one request per record awaited; (b) = the server's pipelined ceiling.");
    println!("Ratios above 1 are faster than the baseline. Rates of rows with fewer ops are per-op rates.");
}
