//! The batch shape of contract 0.2.0 (`wit/sluice.wit`): its host bindings, and the two
//! conversions between the runtime's records and it. [`pack`] copies a batch's bytes into one
//! buffer with spans into it; [`unpack`] checks the positions a guest's results give and
//! builds one [`RecordResult`] per input record.

use crate::{Header, InputRecord, OutputRecord, RecordError, RecordResult};

/// Host bindings generated from `wit/sluice.wit` (contract 0.2.0).
#[allow(missing_docs)]
pub mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "processor",
        imports: { default: async },
        exports: { default: async },
        additional_derives: [PartialEq, Eq],
    });
}

use bindings::sluice::function::types::{self as wire, Span};

/// Packs `records`, which are consecutive records of one topic partition, into one batch:
/// their bytes in one buffer, records and headers as spans into it. The topic and partition
/// are the first record's.
pub fn pack(records: &[InputRecord]) -> wire::InputBatch {
    let bytes: usize = records.iter().map(input_bytes).sum();
    let mut batch = wire::InputBatch {
        topic: records.first().map(|r| r.topic.clone()).unwrap_or_default(),
        partition: records.first().map_or(0, |r| r.partition),
        data: Vec::with_capacity(bytes),
        headers: Vec::with_capacity(records.iter().map(|r| r.headers.len()).sum()),
        records: Vec::with_capacity(records.len()),
    };
    for record in records {
        debug_assert!(record.topic == batch.topic && record.partition == batch.partition, "one partition per batch");
        let headers = Span { start: batch.headers.len() as u32, len: record.headers.len() as u32 };
        for header in &record.headers {
            let key = append(&mut batch.data, header.key.as_bytes());
            let value = append(&mut batch.data, &header.value);
            batch.headers.push(wire::HeaderSpan { key, value });
        }
        batch.records.push(wire::InputRecord {
            offset: record.offset,
            timestamp_ms: record.timestamp_ms,
            key: record.key.as_deref().map(|key| append(&mut batch.data, key)),
            value: record.value.as_deref().map(|value| append(&mut batch.data, value)),
            headers,
        });
    }
    batch
}

fn input_bytes(record: &InputRecord) -> usize {
    let len = |b: &Option<Vec<u8>>| b.as_ref().map_or(0, Vec::len);
    len(&record.key) + len(&record.value) + record.headers.iter().map(|h| h.key.len() + h.value.len()).sum::<usize>()
}

fn append(data: &mut Vec<u8>, bytes: &[u8]) -> Span {
    let start = data.len() as u32;
    data.extend_from_slice(bytes);
    Span { start, len: bytes.len() as u32 }
}

/// Why the results of a call break the contract; the message names the entry at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MalformedResults(String);

/// Turns what a call on a batch of `batch_len` records returned into one result per record,
/// checking that every position is in the batch and in order, and that no record has both
/// outputs and an error.
pub fn unpack(batch_len: usize, results: wire::BatchResults) -> Result<Vec<RecordResult>, MalformedResults> {
    let malformed = |what: String| Err(MalformedResults(what));
    let mut unpacked: Vec<RecordResult> = (0..batch_len).map(|_| Ok(Vec::new())).collect();
    let mut last_input = 0;
    for (n, output) in results.outputs.into_iter().enumerate() {
        let input = output.input as usize;
        if input >= batch_len {
            return malformed(format!("output {n} is for input {input}, outside the batch of {batch_len}"));
        }
        if input < last_input {
            return malformed(format!("output {n} is for input {input}, after an output for input {last_input}"));
        }
        last_input = input;
        let headers = output.headers.into_iter().map(|h| Header { key: h.key, value: h.value }).collect();
        if let Ok(outputs) = &mut unpacked[input] {
            outputs.push(OutputRecord { key: output.key, value: output.value, headers, target: output.target });
        }
    }
    let mut next_input = 0;
    for (n, error) in results.errors.into_iter().enumerate() {
        let input = error.input as usize;
        if input >= batch_len || input < next_input {
            return malformed(format!(
                "error {n} is for input {input}: errors must be for inputs of the batch of {batch_len}, one at most per \
                 input, in order"
            ));
        }
        next_input = input + 1;
        if unpacked[input].as_ref().is_ok_and(|outputs| !outputs.is_empty()) {
            return malformed(format!("input {input} has both outputs and an error"));
        }
        unpacked[input] = Err(RecordError { message: error.message, retryable: error.retryable });
    }
    Ok(unpacked)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `items[span]`, or `None` when the span is not inside `items`.
    fn slice<'a, T>(items: &'a [T], span: &Span) -> Option<&'a [T]> {
        let start = span.start as usize;
        items.get(start..start.checked_add(span.len as usize)?)
    }

    fn record(offset: i64, key: Option<&str>, value: Option<&str>, headers: &[(&str, &str)]) -> InputRecord {
        InputRecord {
            topic: "t".into(),
            partition: 3,
            offset,
            timestamp_ms: Some(offset * 10),
            key: key.map(|k| k.as_bytes().to_vec()),
            value: value.map(|v| v.as_bytes().to_vec()),
            headers: headers.iter().map(|(k, v)| Header { key: (*k).into(), value: v.as_bytes().to_vec() }).collect(),
        }
    }

    fn span_text<'a>(batch: &'a wire::InputBatch, span: Span) -> &'a str {
        std::str::from_utf8(slice(&batch.data, &span).unwrap()).unwrap()
    }

    #[test]
    fn a_packed_batch_gives_topic_and_partition_once_and_every_field_as_a_span() {
        let records = [
            record(7, Some("k1"), Some("v1"), &[("h", "1"), ("h", "2")]),
            record(8, None, None, &[]),
            record(9, Some(""), Some("v3"), &[("x", "")]),
        ];
        let batch = pack(&records);
        assert_eq!((batch.topic.as_str(), batch.partition), ("t", 3));
        assert_eq!(batch.records.len(), 3);
        assert_eq!(batch.data.len(), "k1v1h1h2v3x".len());
        let first = &batch.records[0];
        assert_eq!((first.offset, first.timestamp_ms), (7, Some(70)));
        assert_eq!(span_text(&batch, first.key.clone().unwrap()), "k1");
        assert_eq!(span_text(&batch, first.value.clone().unwrap()), "v1");
        let headers = slice(&batch.headers, &first.headers).unwrap();
        let headers: Vec<_> =
            headers.iter().map(|h| (span_text(&batch, h.key.clone()), span_text(&batch, h.value.clone()))).collect();
        assert_eq!(headers, [("h", "1"), ("h", "2")]);
        let second = &batch.records[1];
        assert_eq!((&second.key, &second.value, second.headers.len), (&None, &None, 0));
        assert_eq!(batch.records[2].key, Some(Span { start: 9, len: 0 }), "an empty key is not a null key");
        assert_eq!(batch.records[2].headers, Span { start: 2, len: 1 });
    }

    /// Results with outputs for inputs 0 and 2 (two for 2) and an error for input 1.
    fn results() -> wire::BatchResults {
        let output = |input, value: &str| wire::OutputRecord {
            input,
            key: None,
            value: Some(value.as_bytes().to_vec()),
            headers: Vec::new(),
            target: None,
        };
        let first = wire::OutputRecord {
            key: Some(b"k0".to_vec()),
            headers: vec![wire::Header { key: "h".into(), value: Vec::new() }],
            ..output(0, "v0")
        };
        wire::BatchResults {
            outputs: vec![first, output(2, "v2"), wire::OutputRecord { target: Some("side".into()), ..output(2, "a") }],
            errors: vec![wire::RecordError { input: 1, message: "bad".into(), retryable: true }],
        }
    }

    #[test]
    fn results_unpack_to_one_result_per_input_in_order() {
        let unpacked = unpack(4, results()).unwrap();
        let output = |key: Option<&str>, value: &str, headers: Vec<Header>, target: Option<&str>| OutputRecord {
            key: key.map(|k| k.as_bytes().to_vec()),
            value: Some(value.as_bytes().to_vec()),
            headers,
            target: target.map(str::to_owned),
        };
        assert_eq!(
            unpacked,
            vec![
                Ok(vec![output(Some("k0"), "v0", vec![Header { key: "h".into(), value: vec![] }], None)]),
                Err(RecordError { message: "bad".into(), retryable: true }),
                Ok(vec![output(None, "v2", vec![], None), output(None, "a", vec![], Some("side"))]),
                Ok(vec![]),
            ]
        );
    }

    fn unpack_error(change: impl FnOnce(&mut wire::BatchResults)) -> String {
        let mut results = results();
        change(&mut results);
        unpack(4, results).unwrap_err().to_string()
    }

    #[test]
    fn results_that_break_the_contract_are_refused_with_the_entry_at_fault() {
        assert_eq!(unpack_error(|r| r.outputs[1].input = 4), "output 1 is for input 4, outside the batch of 4");
        assert_eq!(unpack_error(|r| r.outputs[2].input = 1), "output 2 is for input 1, after an output for input 2");
        assert_eq!(unpack_error(|r| r.errors[0].input = 2), "input 2 has both outputs and an error");
        let order =
            "error 1 is for input 1: errors must be for inputs of the batch of 4, one at most per input, in order";
        assert_eq!(unpack_error(|r| r.errors.push(r.errors[0].clone())), order);
        let outside =
            "error 0 is for input 9: errors must be for inputs of the batch of 4, one at most per input, in order";
        assert_eq!(unpack_error(|r| r.errors[0].input = 9), outside);
    }
}
