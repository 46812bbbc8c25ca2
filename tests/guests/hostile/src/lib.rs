//! Hostile: a **test-only** guest that misbehaves on purpose, so the runtime's limits and
//! failure handling each have a guest that trips them. Never deploy it.
//!
//! It acts on each record's value, read as text:
//!
//! | value | behaviour |
//! |---|---|
//! | `loop` | spins forever (stopped by the CPU-time limit) |
//! | `grow` | allocates and touches 1 MiB chunks forever, keeping them (stopped by the memory limit) |
//! | `leak` | keeps 1 MiB more for as long as the instance lives, then passes the record through (a leaking language runtime) |
//! | `recurse` | recurses without bound, not as a tail call, until the stack overflows (a trap) |
//! | `panic` | panics with `poison record at offset N` (a trap) |
//! | `huge` | emits 20 outputs of 1 MiB each, 20 MiB in all (the output-size limit) |
//! | `big` | emits one output of 2 MiB, more than Kafka producers send by default (`message.max.bytes`) |
//! | `many` | emits 200,000 outputs with empty values (the output-count limit) |
//! | `fail` | returns the fatal error `rejected record at offset N` |
//! | `retry` | returns the retryable error `try again later` |
//! | `print` | writes `hello from stdout` to stdout and `hello from stderr` to stderr, then passes the record through |
//! | `log <level> <text>` | logs `<text>` through the `log` import at `<level>` (`trace`, `debug`, `info`, `warn`, `error`), then passes the record through |
//! | `probe` | looks for what the host grants: emits `env=N args=N fs=<result of reading />` |
//! | `describe` | emits the record as the function sees it: `<topic>/<partition>@<offset> t=<timestamp> key=<key> headers=<name>:<value>,...` |
//! | anything else, or a null value | passes the record through unchanged |

use std::hint::black_box;

use sluice_sdk::log::{self, Level};
use sluice_sdk::{Error, Output, Outputs, Record, Result};

const MIB: usize = 1 << 20;

/// Never returns; `black_box` keeps the loop from being optimised away.
fn spin() -> ! {
    let mut counter = 0u64;
    loop {
        counter = black_box(counter.wrapping_add(1));
    }
}

/// Allocates 1 MiB chunks forever, writing to every page so the memory is really used.
fn grow() -> ! {
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut chunk = vec![0u8; MIB];
        for page in chunk.chunks_mut(4096) {
            page[0] = 1;
        }
        chunks.push(black_box(chunk));
    }
}

/// What `leak` keeps: a mebibyte more for every such record, freed only with the instance.
static LEAKED: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());

/// Holds one more mebibyte for as long as the instance lives (a guest that leaks, as some
/// language runtimes do, until its memory limit traps it).
fn leak() {
    let mut chunk = vec![0u8; MIB];
    for page in chunk.chunks_mut(4096) {
        page[0] = 1;
    }
    LEAKED.lock().unwrap_or_else(|p| p.into_inner()).push(black_box(chunk));
}

/// Recurses until the stack overflows.
fn recurse(depth: u64) -> u64 {
    // Scalar frames live on the WebAssembly stack (not in linear memory), and the result is
    // used after the call, so this is neither a loop nor a tail call.
    if black_box(depth) == u64::MAX { 0 } else { black_box(recurse(depth + 1)) ^ depth }
}

/// Misbehaves as the record's value asks.
#[sluice_sdk::function]
fn process(record: &Record, out: &mut Outputs) -> Result<()> {
    let offset = record.offset();
    match record.value_str().unwrap_or_default() {
        "loop" => spin(),
        "grow" => grow(),
        "leak" => {
            leak();
            out.emit(Output::from_record(record));
        }
        "recurse" => {
            black_box(recurse(0));
        }
        "panic" => panic!("poison record at offset {offset}"),
        "huge" => {
            for _ in 0..20 {
                out.emit(Output::new().with_value(vec![b'x'; MIB]));
            }
        }
        "big" => out.emit(Output::new().with_value(vec![b'x'; 2 * MIB])),
        "many" => {
            for _ in 0..200_000 {
                out.emit(Output::new().with_value(Vec::new()));
            }
        }
        "fail" => return Err(Error::fatal(format!("rejected record at offset {offset}"))),
        "retry" => return Err(Error::retryable("try again later")),
        "print" => {
            println!("hello from stdout");
            eprintln!("hello from stderr");
            out.emit(Output::from_record(record));
        }
        value if value.starts_with("log ") => {
            let (level, text) = value["log ".len()..].split_once(' ').unwrap_or(("info", ""));
            let level = match level {
                "trace" => Level::Trace,
                "debug" => Level::Debug,
                "warn" => Level::Warn,
                "error" => Level::Error,
                _ => Level::Info,
            };
            log::log(level, text);
            out.emit(Output::from_record(record));
        }
        "probe" => {
            let fs = match std::fs::read_dir("/") {
                Ok(_) => "readable".to_owned(),
                Err(e) => format!("denied ({e})"),
            };
            let probe = format!("env={} args={} fs={fs}", std::env::vars().count(), std::env::args().count());
            out.emit(Output::new().with_value(probe));
        }
        "describe" => {
            let text = |bytes: Option<&[u8]>| bytes.map_or("null".into(), |b| String::from_utf8_lossy(b).into_owned());
            let headers: Vec<String> =
                record.headers().iter().map(|h| format!("{}:{}", h.key, String::from_utf8_lossy(&h.value))).collect();
            let description = format!(
                "{}/{}@{} t={:?} key={} headers={}",
                record.topic(),
                record.partition(),
                offset,
                record.timestamp_ms(),
                text(record.key()),
                headers.join(",")
            );
            out.emit(Output::new().with_value(description));
        }
        _ => out.emit(Output::from_record(record)),
    }
    Ok(())
}
