//! The record a function receives: one Kafka record with its coordinates.

use std::ops::Range;
use std::sync::{Arc, OnceLock};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Error, Result};

/// A Kafka record header. Keys need not be unique; order is preserved.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Header {
    /// The header's name.
    pub key: String,
    /// The header's value, as raw bytes.
    pub value: Vec<u8>,
}

impl Header {
    pub(crate) fn new(key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        Header { key: key.into(), value: value.into() }
    }
}

/// One record consumed from Kafka, as handed to a stream function.
///
/// The runtime builds records; tests build them with [`Record::new`] and the `with_*` methods:
///
/// ```
/// use sluice_sdk::Record;
///
/// let record = Record::new().with_offset(7).with_key("user-1").with_value("hello").with_header("trace", "t1");
/// assert_eq!(record.topic(), "test");
/// assert_eq!(record.offset(), 7);
/// assert_eq!(record.value_str().unwrap(), "hello");
/// assert_eq!(record.header("trace"), Some(&b"t1"[..]));
/// ```
#[derive(Clone)]
pub struct Record {
    pub(crate) topic: Arc<str>,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) timestamp_ms: Option<i64>,
    /// The bytes the key and value are ranges of: in a component, the whole batch's, shared by
    /// its records so that none is copied.
    pub(crate) data: Arc<[u8]>,
    pub(crate) key: Option<Range<usize>>,
    pub(crate) value: Option<Range<usize>>,
    pub(crate) headers: Headers,
}

/// Where a header's name and value are in a record's data.
#[derive(Debug, Clone)]
pub(crate) struct HeaderRange {
    pub(crate) key: Range<usize>,
    pub(crate) value: Range<usize>,
}

/// A record's headers: in a component, ranges of its data, turned into [`Header`]s only when
/// the function asks for them as such; in tests, the builders' list.
#[derive(Debug, Clone, Default)]
pub(crate) struct Headers {
    /// The batch's header ranges and the span of them that is this record's.
    ranges: Option<(Arc<[HeaderRange]>, Range<usize>)>,
    built: OnceLock<Vec<Header>>,
}

impl Headers {
    /// Headers at `ranges[span]` of a batch.
    #[cfg_attr(not(any(target_arch = "wasm32", test)), allow(dead_code))]
    pub(crate) fn in_batch(ranges: Arc<[HeaderRange]>, span: Range<usize>) -> Self {
        Headers { ranges: Some((ranges, span)), built: OnceLock::new() }
    }

    fn ranges(&self) -> &[HeaderRange] {
        self.ranges.as_ref().map_or(&[], |(ranges, span)| &ranges[span.clone()])
    }

    fn build(&self, data: &[u8]) -> Vec<Header> {
        let text = |range: &Range<usize>| String::from_utf8_lossy(&data[range.clone()]).into_owned();
        self.ranges().iter().map(|h| Header { key: text(&h.key), value: data[h.value.clone()].to_vec() }).collect()
    }

    /// The headers as [`Header`]s, built from `data` on first use.
    pub(crate) fn get(&self, data: &[u8]) -> &[Header] {
        self.built.get_or_init(|| self.build(data))
    }

    /// How many headers there are.
    #[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
    pub(crate) fn len(&self) -> usize {
        self.built.get().map_or(self.ranges().len(), Vec::len)
    }

    /// Calls `f` with the name and value of each header in order, without building them.
    pub(crate) fn each(&self, data: &[u8], mut f: impl FnMut(&[u8], &[u8])) {
        match self.built.get() {
            Some(built) => built.iter().for_each(|h| f(h.key.as_bytes(), &h.value)),
            None => self.ranges().iter().for_each(|h| f(&data[h.key.clone()], &data[h.value.clone()])),
        }
    }

    /// A copy of the headers, made without building them here first.
    fn to_vec(&self, data: &[u8]) -> Vec<Header> {
        match self.built.get() {
            Some(built) => built.clone(),
            None => self.build(data),
        }
    }

    /// The value of the first header named `name`, found without building the headers.
    fn find<'a>(&'a self, data: &'a [u8], name: &str) -> Option<&'a [u8]> {
        match self.built.get() {
            Some(built) => built.iter().find(|h| h.key == name).map(|h| h.value.as_slice()),
            None => {
                self.ranges().iter().find(|h| &data[h.key.clone()] == name.as_bytes()).map(|h| &data[h.value.clone()])
            }
        }
    }

    /// Appends a header (for the builders).
    pub(crate) fn push(&mut self, data: &[u8], header: Header) {
        let mut headers = self.to_vec(data);
        headers.push(header);
        *self = Headers { ranges: None, built: OnceLock::from(headers) };
    }
}

impl Default for Record {
    fn default() -> Self {
        Record {
            topic: Arc::from("test"),
            partition: 0,
            offset: 0,
            timestamp_ms: None,
            data: Arc::from([]),
            key: None,
            value: None,
            headers: Headers::default(),
        }
    }
}

impl PartialEq for Record {
    fn eq(&self, other: &Self) -> bool {
        (self.topic(), self.partition, self.offset, self.timestamp_ms, self.key(), self.value(), self.headers())
            == (
                other.topic(),
                other.partition,
                other.offset,
                other.timestamp_ms,
                other.key(),
                other.value(),
                other.headers(),
            )
    }
}

impl Eq for Record {}

impl std::fmt::Debug for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Record")
            .field("topic", &self.topic())
            .field("partition", &self.partition)
            .field("offset", &self.offset)
            .field("timestamp_ms", &self.timestamp_ms)
            .field("key", &self.key())
            .field("value", &self.value())
            .field("headers", &self.headers())
            .finish()
    }
}

impl Record {
    /// A record for tests: topic `"test"`, partition 0, offset 0, no timestamp, no key, no value
    /// and no headers. Change it with the `with_*` methods.
    pub fn new() -> Self {
        Record::default()
    }

    /// Sets the key.
    pub fn with_key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.key = Some(self.append(key.into()));
        self
    }

    /// Sets the value.
    pub fn with_value(mut self, value: impl Into<Vec<u8>>) -> Self {
        self.value = Some(self.append(value.into()));
        self
    }

    /// Appends `bytes` to the record's data and returns where they are (for the builders).
    fn append(&mut self, bytes: Vec<u8>) -> Range<usize> {
        let mut data = self.data.to_vec();
        let start = data.len();
        data.extend_from_slice(&bytes);
        self.data = Arc::from(data);
        start..start + bytes.len()
    }

    /// Sets the value to `value` serialized as JSON.
    ///
    /// # Panics
    ///
    /// When `value` cannot be serialized as JSON (a map with non-string keys, for example):
    /// this builder is meant for tests.
    pub fn with_json_value(self, value: &impl Serialize) -> Self {
        let bytes = serde_json::to_vec(value).expect("Record::with_json_value: value is not serializable as JSON");
        self.with_value(bytes)
    }

    /// Appends a header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push(&self.data, Header::new(name, value));
        self
    }

    /// Sets the offset.
    pub fn with_offset(mut self, offset: i64) -> Self {
        self.offset = offset;
        self
    }

    /// Sets the source topic.
    pub fn with_topic(mut self, topic: impl Into<String>) -> Self {
        self.topic = Arc::from(topic.into());
        self
    }

    /// Sets the source partition.
    pub fn with_partition(mut self, partition: i32) -> Self {
        self.partition = partition;
        self
    }

    /// Sets the timestamp, in milliseconds since the Unix epoch.
    pub fn with_timestamp_ms(mut self, timestamp_ms: i64) -> Self {
        self.timestamp_ms = Some(timestamp_ms);
        self
    }

    /// The topic the record was consumed from.
    #[inline]
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The partition the record was consumed from.
    #[inline]
    pub fn partition(&self) -> i32 {
        self.partition
    }

    /// The record's offset within its partition.
    #[inline]
    pub fn offset(&self) -> i64 {
        self.offset
    }

    /// The record's timestamp in milliseconds since the Unix epoch, when the broker gave one.
    #[inline]
    pub fn timestamp_ms(&self) -> Option<i64> {
        self.timestamp_ms
    }

    /// The key, or `None` for a null key.
    #[inline]
    pub fn key(&self) -> Option<&[u8]> {
        self.key.clone().map(|range| &self.data[range])
    }

    /// The value, or `None` for a null value (a tombstone).
    #[inline]
    pub fn value(&self) -> Option<&[u8]> {
        self.value.clone().map(|range| &self.data[range])
    }

    /// The headers, in order.
    pub fn headers(&self) -> &[Header] {
        self.headers.get(&self.data)
    }

    /// The value of the first header named `name` (names are case-sensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.find(&self.data, name)
    }

    /// The key as UTF-8 text.
    ///
    /// # Errors
    ///
    /// A fatal error naming the offset when the key is null or not UTF-8.
    #[inline]
    pub fn key_str(&self) -> Result<&str> {
        self.text("key", self.key())
    }

    /// The value as UTF-8 text.
    ///
    /// # Errors
    ///
    /// A fatal error naming the offset when the value is null (`record at offset N: value is
    /// missing`) or not UTF-8 (`record at offset N: value is not UTF-8 text`).
    #[inline]
    pub fn value_str(&self) -> Result<&str> {
        self.text("value", self.value())
    }

    /// The value parsed as JSON into `T`.
    ///
    /// # Errors
    ///
    /// A fatal error naming the offset when the value is null or does not parse as a `T`.
    pub fn value_json<T: DeserializeOwned>(&self) -> Result<T> {
        let bytes = self.value().ok_or_else(|| self.error("value is missing"))?;
        serde_json::from_slice(bytes).map_err(|e| self.error(format!("value is not valid JSON: {e}")))
    }

    /// The value as a JSON object, and the text of its field `field` (a JSON string, or a
    /// number written in decimal): the usual way to find an entity id in an event.
    ///
    /// Fatal errors name the offset and the field when the value is not a JSON object, or the
    /// field is missing or of another type.
    pub fn value_json_field(&self, field: &str) -> Result<(serde_json::Map<String, serde_json::Value>, String)> {
        use serde_json::Value;
        let Value::Object(object) = self.value_json::<Value>()? else {
            return Err(self.error("value is not a JSON object"));
        };
        let text = match object.get(field) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            Some(_) => return Err(self.error(format_args!("field {field:?} is not a string or a number"))),
            None => return Err(self.error(format_args!("field {field:?} is missing"))),
        };
        Ok((object, text))
    }

    /// A fatal error about this record: `record at offset N: <what>`.
    fn error(&self, what: impl std::fmt::Display) -> Error {
        Error::fatal(format!("record at offset {}: {what}", self.offset))
    }

    fn text<'a>(&self, part: &str, bytes: Option<&'a [u8]>) -> Result<&'a str> {
        let bytes = bytes.ok_or_else(|| self.error(format_args!("{part} is missing")))?;
        std::str::from_utf8(bytes).map_err(|_| self.error(format_args!("{part} is not UTF-8 text")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Output;

    #[test]
    fn new_record_has_test_coordinates_and_nothing_else() {
        let r = Record::new();
        assert_eq!((r.topic(), r.partition(), r.offset(), r.timestamp_ms()), ("test", 0, 0, None));
        assert_eq!((r.key(), r.value()), (None, None));
        assert!(r.headers().is_empty());
    }

    #[test]
    fn builders_set_every_field() {
        let r = Record::new()
            .with_topic("orders")
            .with_partition(3)
            .with_offset(42)
            .with_timestamp_ms(1_700_000_000_000)
            .with_key(vec![1, 2])
            .with_value("v")
            .with_header("a", "1")
            .with_header("a", "2");
        assert_eq!(r.topic(), "orders");
        assert_eq!(r.partition(), 3);
        assert_eq!(r.offset(), 42);
        assert_eq!(r.timestamp_ms(), Some(1_700_000_000_000));
        assert_eq!(r.key(), Some(&[1u8, 2][..]));
        assert_eq!(r.value(), Some(&b"v"[..]));
        assert_eq!(r.headers().len(), 2);
        assert_eq!(r.header("a"), Some(&b"1"[..]), "first match wins");
        assert_eq!(r.header("A"), None);
    }

    /// A record as a component gets it: key, value and headers are ranges of a batch's data.
    fn in_batch() -> Record {
        let data: Arc<[u8]> = Arc::from(&b"keyvaluetrace1t2other"[..]);
        let ranges: Arc<[HeaderRange]> = Arc::from(vec![
            HeaderRange { key: 8..13, value: 13..14 },
            HeaderRange { key: 8..13, value: 14..16 },
            HeaderRange { key: 16..21, value: 21..21 },
        ]);
        Record {
            data,
            key: Some(0..3),
            value: Some(3..8),
            headers: Headers::in_batch(ranges, 0..2),
            ..Record::new().with_offset(3)
        }
    }

    #[test]
    fn a_record_of_a_batch_reads_its_own_ranges_of_the_batch_data() {
        let record = in_batch();
        assert_eq!((record.key_str().unwrap(), record.value_str().unwrap()), ("key", "value"));
        assert_eq!(record.header("trace"), Some(&b"1"[..]), "found before the headers are built");
        assert_eq!(record.header("other"), None, "another record's header");
        let built = [Header::new("trace", "1"), Header::new("trace", "t2")];
        assert_eq!(Output::from_record(&record).headers(), built, "copied before the headers are built");
        assert_eq!(record.headers(), built);
        assert_eq!(record.header("trace"), Some(&b"1"[..]), "found after");
        let built_by_hand = Record::new()
            .with_offset(3)
            .with_key("key")
            .with_value("value")
            .with_header("trace", "1")
            .with_header("trace", "t2");
        assert_eq!(in_batch(), built_by_hand);
        let more = in_batch().with_header("x", "y");
        assert_eq!(more.headers().len(), 3);
        assert_eq!(more.header("x"), Some(&b"y"[..]));
    }

    #[test]
    fn text_getters_name_the_offset_when_they_fail() {
        let r = Record::new().with_offset(9).with_value(vec![0xff, 0xfe]);
        let err = r.value_str().unwrap_err();
        assert_eq!(err.message(), "record at offset 9: value is not UTF-8 text");
        assert!(!err.is_retryable());
        assert_eq!(r.key_str().unwrap_err().message(), "record at offset 9: key is missing");
        assert_eq!(Record::new().value_str().unwrap_err().message(), "record at offset 0: value is missing");
    }

    #[test]
    fn value_json_parses_or_fails_fatally() {
        let r = Record::new().with_json_value(&serde_json::json!({"n": 1}));
        let v: serde_json::Value = r.value_json().unwrap();
        assert_eq!(v["n"], 1);
        let err = Record::new().with_offset(4).with_value("{nope").value_json::<serde_json::Value>().unwrap_err();
        assert!(err.message().starts_with("record at offset 4: value is not valid JSON"), "{err}");
        assert!(!err.is_retryable());
    }
}
