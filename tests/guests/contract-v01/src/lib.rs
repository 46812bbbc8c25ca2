//! A function built for contract 0.1.0 (`wit/v0.1/sluice.wit`, a list of records in, a list
//! of results out) with plain wit-bindgen, as components deployed before 0.2.0 were. Each
//! record comes out unchanged with a `contract: 0.1.0` header added, after counting it in the
//! cache under `v01:records`; a record whose value is `fail` fails (not retryable).

#![cfg(target_arch = "wasm32")]
#![allow(unsafe_code, missing_docs)]

wit_bindgen::generate!({ path: "../../../wit/v0.1", world: "processor" });

use sluice::function::cache;
use sluice::function::types::{Header, OutputRecord, RecordError};

struct Function;

impl Guest for Function {
    fn process(batch: Vec<InputRecord>) -> Vec<RecordResult> {
        batch.into_iter().map(process).collect()
    }
}

fn process(record: InputRecord) -> RecordResult {
    cache::incr("v01:records", 1, None)
        .map_err(|e| RecordError { message: format!("cache: {e:?}"), retryable: true })?;
    if record.value.as_deref() == Some(b"fail") {
        return Err(RecordError { message: format!("offset {}: asked to fail", record.offset), retryable: false });
    }
    let mut headers = record.headers;
    headers.push(Header { key: "contract".into(), value: b"0.1.0".to_vec() });
    Ok(vec![OutputRecord { key: record.key, value: record.value, headers, target: None }])
}

export!(Function);
