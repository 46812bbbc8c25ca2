//! Engine throughput: records through a guest in process, beside the same logic compiled
//! natively and run in the same process, on the same in-memory cache, with the same guarantee
//! (the native word count holds a batch's cache writes and applies them when it is done, as
//! the runtime does for every call).
//!
//! `cargo bench -p sluice-tests --bench engine` (or `make bench`). Set `SLUICE_BENCH_QUICK=1`
//! for a short run, `SLUICE_BENCH_HEADERS=N` for N headers per record (default 1), and
//! `SLUICE_BENCH_ONLY=passthrough` (or `word-count`, `word-count-py`, `word-count-js`) for one
//! workload. The Python and JavaScript word counts run against the same native word count, on
//! fewer records: they are 3 to 30 times slower.

/// The allocator the `sluice` binary ships with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice::cache::{Cache, CallCache, EffectLimits, MemoryCache, Namespace};
use sluice::engine::FunctionInstance;
use sluice::record::{Header, InputRecord, OutputRecord, RecordError, RecordResult};
use sluice_tests::fixtures::{context, engine, load};

const BATCH_SIZES: [usize; 3] = [1, 64, 512];
const VALUE_SIZES: [usize; 2] = [100, 1024];

#[derive(Clone, Copy)]
enum Workload {
    Passthrough,
    WordCount,
    /// The word count in Python (componentize-py).
    WordCountPython,
    /// The word count in JavaScript (componentize-qjs).
    WordCountJavaScript,
}

impl Workload {
    fn guest(self) -> &'static str {
        match self {
            Workload::Passthrough => "passthrough",
            Workload::WordCount => "word-count",
            Workload::WordCountPython => "word-count-py",
            Workload::WordCountJavaScript => "word-count-js",
        }
    }

    /// Records timed per run.
    fn records(self, value_size: usize, quick: bool) -> usize {
        let large = value_size > 100;
        match (self, quick) {
            (Workload::WordCountPython | Workload::WordCountJavaScript, _) if large => 1_000,
            (Workload::WordCountPython | Workload::WordCountJavaScript, _) => 5_000,
            (_, true) => 5_000,
            (Workload::Passthrough, false) => 200_000,
            (Workload::WordCount, false) if large => 20_000,
            (Workload::WordCount, false) => 100_000,
        }
    }
}

/// Text values of `size` bytes made of words from a 1,000-word vocabulary.
fn values(count: usize, size: usize) -> Vec<Vec<u8>> {
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    (0..count)
        .map(|_| {
            let mut text = String::with_capacity(size);
            while text.len() < size {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                text.push_str(&format!("w{} ", seed % 1000));
            }
            text.truncate(size);
            text.into_bytes()
        })
        .collect()
}

/// Headers per input record (`SLUICE_BENCH_HEADERS`, default 1).
fn header_count() -> usize {
    static COUNT: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *COUNT.get_or_init(|| std::env::var("SLUICE_BENCH_HEADERS").ok().and_then(|v| v.parse().ok()).unwrap_or(1))
}

fn batch(values: &[Vec<u8>], start: usize, size: usize) -> Vec<InputRecord> {
    (0..size)
        .map(|i| {
            let n = start + i;
            InputRecord {
                topic: "bench".into(),
                partition: 0,
                offset: n as i64,
                timestamp_ms: Some(n as i64),
                key: Some(format!("key-{}", n % 1000).into_bytes()),
                value: Some(values[n % values.len()].clone()),
                headers: (0..header_count())
                    .map(|i| Header { key: format!("trace-{i}"), value: b"abc123".to_vec() })
                    .collect(),
            }
        })
        .collect()
}

/// The native twin of the `passthrough` guest.
fn native_passthrough(records: &[InputRecord]) -> Vec<RecordResult> {
    records
        .iter()
        .map(|r| {
            Ok(vec![OutputRecord {
                key: r.key.clone(),
                value: r.value.clone(),
                headers: r.headers.clone(),
                target: None,
            }])
        })
        .collect()
}

/// The native twin of the `word-count` guest: the same split (the example's own `keys`), the
/// same cache calls, with the same guarantee as a function's call: the batch's cache writes are
/// held in an overlay and applied in one round trip when the batch is done, so a failed batch
/// leaves none behind.
async fn native_word_count(cache: &Cache, records: &[InputRecord]) -> Vec<RecordResult> {
    let mut cache = cache.begin_call(EffectLimits::default());
    let results = word_count_into(&mut cache, records).await;
    cache.apply().await.expect("memory cache");
    results
}

async fn word_count_into(cache: &mut CallCache, records: &[InputRecord]) -> Vec<RecordResult> {
    let mut results = Vec::with_capacity(records.len());
    for record in records {
        let Some(value) = &record.value else {
            results.push(Ok(Vec::new()));
            continue;
        };
        let Ok(text) = std::str::from_utf8(value) else {
            results.push(Err(RecordError { message: "not UTF-8".into(), retryable: false }));
            continue;
        };
        let (keys, ranges) = word_count::keys(text);
        // The cache's native API takes owned keys: the host lifts the guest's into the same.
        let entries: Vec<(String, i64)> = ranges.iter().map(|range| (keys[range.clone()].to_owned(), 1)).collect();
        let counts = cache.incr_many(&entries, None).await.expect("memory cache");
        let mut text = itoa::Buffer::new();
        let outputs = ranges
            .iter()
            .zip(counts)
            .map(|(range, n)| OutputRecord {
                key: Some(keys.as_bytes()[range.start + word_count::KEY_PREFIX.len()..range.end].to_vec()),
                value: Some(text.format(n).as_bytes().to_vec()),
                headers: Vec::new(),
                target: None,
            })
            .collect();
        results.push(Ok(outputs));
    }
    results
}

struct Measure {
    records: usize,
    elapsed: Duration,
}

impl Measure {
    fn per_second(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64()
    }
    fn ns_per_record(&self) -> f64 {
        self.elapsed.as_nanos() as f64 / self.records as f64
    }
}

/// One side of the comparison.
trait Side {
    /// The records done, or why the batch failed (a limit an interpreted guest reaches).
    async fn run(&mut self, batch: &[InputRecord]) -> Result<usize, String>;
}

struct Wasm(FunctionInstance);

impl Side for Wasm {
    async fn run(&mut self, batch: &[InputRecord]) -> Result<usize, String> {
        self.0.process(batch).await.map(|results| results.len()).map_err(|e| e.kind().as_str().to_owned())
    }
}

struct Native(Workload, Cache);

impl Side for Native {
    async fn run(&mut self, batch: &[InputRecord]) -> Result<usize, String> {
        Ok(match self.0 {
            Workload::Passthrough => native_passthrough(batch).len(),
            Workload::WordCount | Workload::WordCountPython | Workload::WordCountJavaScript => {
                native_word_count(&self.1, batch).await.len()
            }
        })
    }
}

/// Runs `side` over batches until `total` records are done, after a warm-up.
async fn measure(side: &mut impl Side, total: usize, batch_size: usize, values: &[Vec<u8>]) -> Result<Measure, String> {
    let warmup = (total / 10).max(batch_size);
    let mut done = 0;
    while done < warmup {
        done += side.run(&batch(values, done, batch_size)).await?;
    }
    // Batches are built outside the timed region so both sides are timed on the same work.
    let batches: Vec<_> = (0..total.div_ceil(batch_size)).map(|i| batch(values, i * batch_size, batch_size)).collect();
    let started = Instant::now();
    let mut records = 0;
    for b in &batches {
        records += side.run(b).await?;
    }
    Ok(Measure { records, elapsed: started.elapsed() })
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let quick = std::env::var_os("SLUICE_BENCH_QUICK").is_some();
    let engine = engine();
    println!(
        "Engine: records through one guest instance in process, in-memory cache, {} header(s) per record.",
        header_count()
    );
    println!(
        "{:<14} {:>6} {:>6} {:>12} {:>10} {:>12} {:>10} {:>12} {:>11} {:>8}",
        "workload",
        "value",
        "batch",
        "wasm rec/s",
        "wasm ns",
        "native rec/s",
        "native ns",
        "overhead ns",
        "wasm/native",
        "wasm MiB"
    );
    let only = std::env::var("SLUICE_BENCH_ONLY").ok();
    let workloads =
        [Workload::Passthrough, Workload::WordCount, Workload::WordCountPython, Workload::WordCountJavaScript];
    for workload in workloads {
        if only.as_deref().is_some_and(|o| o != workload.guest()) {
            continue;
        }
        let module = load(&engine, workload.guest());
        for value_size in VALUE_SIZES {
            let values = values(1024, value_size);
            for batch_size in BATCH_SIZES {
                let total = workload.records(value_size, quick);
                let backend = Arc::new(MemoryCache::new());
                let instance = FunctionInstance::new(&engine, &module, context(workload.guest(), backend, &[]));
                let cache = Cache::new(Arc::new(MemoryCache::new()), Namespace::new("native").unwrap());
                let native = measure(&mut Native(workload, cache), total, batch_size, &values).await.expect("native");
                let mut side = Wasm(instance);
                let wasm = match measure(&mut side, total, batch_size, &values).await {
                    Ok(wasm) => wasm,
                    Err(limit) => {
                        println!(
                            "{:<14} {:>4} B {:>6}   a batch fails: {limit} (native: {:.0} rec/s)",
                            workload.guest(),
                            value_size,
                            batch_size,
                            native.per_second()
                        );
                        continue;
                    }
                };
                // Linear memory only grows: what the instance has is its peak.
                let memory = side.0.memory_bytes().unwrap_or_default() as f64 / (1 << 20) as f64;
                println!(
                    "{:<14} {:>4} B {:>6} {:>12.0} {:>10.0} {:>12.0} {:>10.0} {:>12.0} {:>11.2} {:>8.1}",
                    workload.guest(),
                    value_size,
                    batch_size,
                    wasm.per_second(),
                    wasm.ns_per_record(),
                    native.per_second(),
                    native.ns_per_record(),
                    wasm.ns_per_record() - native.ns_per_record(),
                    native.ns_per_record() / wasm.ns_per_record(),
                    memory,
                );
            }
        }
    }
    println!(
        "wasm/native is throughput relative to native (1.00 = as fast); overhead is wasm ns - native ns per record; \
         wasm MiB is the instance's linear memory at the end, its peak."
    );
}
