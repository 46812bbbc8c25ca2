//! What a function produces: [`Output`] records collected in [`Outputs`].

use std::borrow::Cow;
use std::ops::Range;
use std::sync::{Arc, OnceLock};

use serde::Serialize;
use sluice_contract::layout;

use crate::record::Headers;
use crate::{Header, Record, Result};

/// One record the function asks the runtime to produce.
///
/// Without [`Output::to`] it goes to the pipeline's default output; with it, to the named
/// output, which the pipeline must declare (naming an undeclared output fails the input record,
/// not retryable).
///
/// ```
/// use sluice_sdk::Output;
///
/// let output = Output::new().with_key("user-1").with_value("hello").with_header("source", "demo").to("greetings");
/// assert_eq!(output.value_str(), Some("hello"));
/// assert_eq!(output.target(), Some("greetings"));
/// ```
#[derive(Clone, Default)]
pub struct Output {
    /// The bytes that shared parts are ranges of: the record's, for an output made from one.
    pub(crate) source: Arc<[u8]>,
    pub(crate) key: Option<Part>,
    pub(crate) value: Option<Part>,
    pub(crate) headers: Headers,
    pub(crate) target: Option<String>,
}

/// A key or value: the output's own bytes (held in the output itself when they are short), or a
/// range of its source (the record it was made from), which is copied only when the output
/// leaves the function.
#[derive(Clone)]
pub(crate) enum Part {
    Owned(Vec<u8>),
    Inline(Inline),
    Shared(Range<usize>),
}

/// Up to [`Output::INLINE_BYTES`] bytes, in place.
#[derive(Clone, Copy)]
pub(crate) struct Inline {
    len: u8,
    bytes: [u8; Output::INLINE_BYTES],
}

impl Part {
    /// Short borrowed bytes are held inline; longer ones are copied; owned ones are moved.
    #[inline]
    fn new(bytes: Cow<'_, [u8]>) -> Part {
        match bytes {
            Cow::Borrowed(borrowed) if borrowed.len() <= Output::INLINE_BYTES => {
                let mut inline = Inline { len: borrowed.len() as u8, bytes: [0; Output::INLINE_BYTES] };
                inline.bytes[..borrowed.len()].copy_from_slice(borrowed);
                Part::Inline(inline)
            }
            bytes => Part::Owned(bytes.into_owned()),
        }
    }

    #[inline]
    fn len(&self) -> usize {
        match self {
            Part::Owned(bytes) => bytes.len(),
            Part::Inline(inline) => usize::from(inline.len),
            Part::Shared(range) => range.len(),
        }
    }

    #[inline]
    fn bytes<'a>(&'a self, source: &'a [u8]) -> &'a [u8] {
        match self {
            Part::Owned(bytes) => bytes,
            Part::Inline(inline) => &inline.bytes[..usize::from(inline.len)],
            Part::Shared(range) => &source[range.clone()],
        }
    }
}

/// What [`Output::with_key`] and [`Output::with_value`] take: text or bytes, borrowed or owned.
/// Borrowed ones are copied (into the output itself, without allocating, when they are at
/// most [`Output::INLINE_BYTES`] long); owned ones are moved.
pub trait IntoBytes<'a> {
    /// The bytes, borrowed or owned.
    fn into_bytes(self) -> Cow<'a, [u8]>;
}

impl<'a> IntoBytes<'a> for &'a [u8] {
    #[inline]
    fn into_bytes(self) -> Cow<'a, [u8]> {
        Cow::Borrowed(self)
    }
}

impl<'a, const N: usize> IntoBytes<'a> for &'a [u8; N] {
    #[inline]
    fn into_bytes(self) -> Cow<'a, [u8]> {
        Cow::Borrowed(self)
    }
}

impl<'a> IntoBytes<'a> for &'a str {
    #[inline]
    fn into_bytes(self) -> Cow<'a, [u8]> {
        Cow::Borrowed(self.as_bytes())
    }
}

impl<'a> IntoBytes<'a> for &'a String {
    #[inline]
    fn into_bytes(self) -> Cow<'a, [u8]> {
        Cow::Borrowed(self.as_bytes())
    }
}

impl<'a> IntoBytes<'a> for &'a Vec<u8> {
    #[inline]
    fn into_bytes(self) -> Cow<'a, [u8]> {
        Cow::Borrowed(self)
    }
}

impl<'a> IntoBytes<'a> for Vec<u8> {
    #[inline]
    fn into_bytes(self) -> Cow<'a, [u8]> {
        Cow::Owned(self)
    }
}

impl<'a> IntoBytes<'a> for String {
    #[inline]
    fn into_bytes(self) -> Cow<'a, [u8]> {
        Cow::Owned(self.into_bytes())
    }
}

impl<'a, const N: usize> IntoBytes<'a> for [u8; N] {
    #[inline]
    fn into_bytes(self) -> Cow<'a, [u8]> {
        Cow::Owned(self.to_vec())
    }
}

impl<'a> IntoBytes<'a> for Box<[u8]> {
    #[inline]
    fn into_bytes(self) -> Cow<'a, [u8]> {
        Cow::Owned(self.into_vec())
    }
}

impl<'a> IntoBytes<'a> for Cow<'a, [u8]> {
    #[inline]
    fn into_bytes(self) -> Cow<'a, [u8]> {
        self
    }
}

impl<'a> IntoBytes<'a> for Cow<'a, str> {
    #[inline]
    fn into_bytes(self) -> Cow<'a, [u8]> {
        match self {
            Cow::Borrowed(text) => Cow::Borrowed(text.as_bytes()),
            Cow::Owned(text) => Cow::Owned(text.into_bytes()),
        }
    }
}

impl PartialEq for Output {
    fn eq(&self, other: &Self) -> bool {
        (self.key(), self.value(), self.headers(), self.target())
            == (other.key(), other.value(), other.headers(), other.target())
    }
}

impl Eq for Output {}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Output")
            .field("key", &self.key())
            .field("value", &self.value())
            .field("headers", &self.headers())
            .field("target", &self.target())
            .finish()
    }
}

impl Output {
    /// Longest key or value an output holds in place, without allocating, when it is given
    /// borrowed text or bytes (a word, a number's digits, an id).
    pub const INLINE_BYTES: usize = 22;

    /// An output with a null key, a null value, no headers, for the default output.
    #[inline]
    pub fn new() -> Self {
        Output::default()
    }

    /// An output with the key, value and headers of `record`, for the default output. They
    /// are shared with the record, not copied, until the output leaves the function.
    #[inline]
    pub fn from_record(record: &Record) -> Self {
        Output {
            source: record.data.clone(),
            key: record.key.clone().map(Part::Shared),
            value: record.value.clone().map(Part::Shared),
            headers: record.headers.clone(),
            target: None,
        }
    }

    /// The bytes of its key, value and headers.
    #[inline]
    fn byte_len(&self) -> usize {
        let mut bytes = self.key.as_ref().map_or(0, Part::len) + self.value.as_ref().map_or(0, Part::len);
        if self.headers.len() > 0 {
            self.headers.each(&self.source, |name, value| bytes += name.len() + value.len());
        }
        bytes
    }

    /// Sets the key: text or bytes, borrowed (copied; see [`IntoBytes`]) or owned (moved).
    pub fn with_key<'a>(mut self, key: impl IntoBytes<'a>) -> Self {
        self.key = Some(Part::new(key.into_bytes()));
        self
    }

    /// Sets the value: text or bytes, borrowed (copied; see [`IntoBytes`]) or owned (moved).
    pub fn with_value<'a>(mut self, value: impl IntoBytes<'a>) -> Self {
        self.value = Some(Part::new(value.into_bytes()));
        self
    }

    /// Sets the value to `value` serialized as JSON.
    ///
    /// # Errors
    ///
    /// A fatal error when `value` cannot be serialized as JSON.
    pub fn with_json_value(self, value: &impl Serialize) -> Result<Output> {
        Ok(self.with_value(serde_json::to_vec(value)?))
    }

    /// Appends a header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push(&self.source, Header::new(name, value));
        self
    }

    /// Sends the output to the pipeline's output named `target` instead of the default one.
    pub fn to(mut self, target: impl Into<String>) -> Self {
        self.target = Some(target.into());
        self
    }

    /// The key, or `None` for a null key.
    #[inline]
    pub fn key(&self) -> Option<&[u8]> {
        self.key.as_ref().map(|key| key.bytes(&self.source))
    }

    /// The value, or `None` for a null value.
    #[inline]
    pub fn value(&self) -> Option<&[u8]> {
        self.value.as_ref().map(|value| value.bytes(&self.source))
    }

    /// The headers, in order.
    pub fn headers(&self) -> &[Header] {
        self.headers.get(&self.source)
    }

    /// The named output this goes to, or `None` for the default output.
    pub fn target(&self) -> Option<&str> {
        self.target.as_deref()
    }

    /// The key as UTF-8 text; `None` when it is null or not UTF-8. Meant for test assertions.
    pub fn key_str(&self) -> Option<&str> {
        self.key().and_then(|k| std::str::from_utf8(k).ok())
    }

    /// The value as UTF-8 text; `None` when it is null or not UTF-8. Meant for test assertions.
    pub fn value_str(&self) -> Option<&str> {
        self.value().and_then(|v| std::str::from_utf8(v).ok())
    }
}

/// The outputs of one input record, in the order they were emitted.
///
/// Each call of the function gets a fresh, empty `Outputs`. When the function returns an error,
/// what it emitted is discarded.
///
/// An output's bytes are copied out of it as it is emitted, into one buffer laid out as the
/// results of a batch travel to the host ([`Columns`]), and the `Output` is dropped: in a
/// component one such buffer serves a whole batch, so emitting is the only copy an output's
/// bytes go through in the guest. An output that does not fit in the room the buffer has is
/// held instead, with the record's later outputs, until the record is done; then the buffer
/// grows once for all of them. A linear memory never shrinks, so the buffer does not grow by
/// doubling under a large output: a record's outputs and their copy are in memory together at
/// most once. [`Outputs::iter`] rebuilds the outputs from the buffer when it is asked for them.
#[derive(Clone, Default)]
pub struct Outputs {
    columns: Columns,
    /// The current record's outputs from the first one that did not fit in `columns` on.
    held: Vec<Output>,
    /// Where the current record's outputs start in `columns`.
    start: Mark,
    /// The current record's position in its batch.
    input: u32,
    /// The current record's outputs as `Output`s, made when first asked for since the last emit.
    rebuilt: OnceLock<Vec<Output>>,
}

/// Outputs laid out as the WIT `batch-results` carry them: one entry per output in each column,
/// their bytes back to back in `data` (`sluice_contract::layout`).
#[derive(Debug, Clone, Default)]
pub(crate) struct Columns {
    pub(crate) inputs: Vec<u32>,
    pub(crate) key_lengths: Vec<i32>,
    pub(crate) value_lengths: Vec<i32>,
    pub(crate) header_counts: Vec<u32>,
    pub(crate) header_lengths: Vec<u32>,
    pub(crate) targets: Vec<i32>,
    pub(crate) target_names: Vec<String>,
    pub(crate) data: Vec<u8>,
}

/// How long each growing part of [`Columns`] was when a record started.
#[derive(Debug, Clone, Copy, Default)]
struct Mark {
    outputs: usize,
    header_lengths: usize,
    target_names: usize,
    data: usize,
}

impl Columns {
    fn mark(&self) -> Mark {
        Mark {
            outputs: self.inputs.len(),
            header_lengths: self.header_lengths.len(),
            target_names: self.target_names.len(),
            data: self.data.len(),
        }
    }

    fn truncate(&mut self, to: Mark) {
        self.inputs.truncate(to.outputs);
        self.key_lengths.truncate(to.outputs);
        self.value_lengths.truncate(to.outputs);
        self.header_counts.truncate(to.outputs);
        self.targets.truncate(to.outputs);
        self.header_lengths.truncate(to.header_lengths);
        self.target_names.truncate(to.target_names);
        self.data.truncate(to.data);
    }

    #[inline]
    fn push(&mut self, input: u32, output: &Output) {
        self.inputs.push(input);
        self.key_lengths.push(layout::append(&mut self.data, output.key()));
        self.value_lengths.push(layout::append(&mut self.data, output.value()));
        let header_count = output.headers.len();
        self.header_counts.push(header_count as u32);
        if header_count > 0 {
            output.headers.each(&output.source, |name, value| {
                layout::append_header(&mut self.data, &mut self.header_lengths, name, value);
            });
        }
        let target = output.target.as_deref().map(|target| match self.target_names.iter().position(|n| n == target) {
            Some(index) => index,
            None => {
                self.target_names.push(target.to_owned());
                self.target_names.len() - 1
            }
        });
        self.targets.push(target.map_or(layout::NULL, |index| index as i32));
    }

    /// The outputs from `from` on, rebuilt as `Output`s that own their bytes.
    fn rebuild(&self, from: Mark) -> Vec<Output> {
        let mut at = from.data;
        let mut take = |length: usize| {
            at += length;
            self.data[at - length..at].to_vec()
        };
        let mut header_lengths = self.header_lengths[from.header_lengths..].chunks_exact(2);
        (from.outputs..self.inputs.len())
            .map(|n| {
                let mut output = Output {
                    key: usize::try_from(self.key_lengths[n]).ok().map(|length| Part::Owned(take(length))),
                    value: usize::try_from(self.value_lengths[n]).ok().map(|length| Part::Owned(take(length))),
                    target: usize::try_from(self.targets[n]).ok().map(|t| self.target_names[t].clone()),
                    ..Output::default()
                };
                for pair in header_lengths.by_ref().take(self.header_counts[n] as usize) {
                    let name = String::from_utf8_lossy(&take(pair[0] as usize)).into_owned();
                    output = output.with_header(name, take(pair[1] as usize));
                }
                output
            })
            .collect()
    }
}

impl Outputs {
    /// An empty list.
    pub fn new() -> Self {
        Outputs::default()
    }

    /// A list for the outputs of a batch's records, one record after another, with room for
    /// `outputs` outputs and `bytes` bytes.
    #[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
    pub(crate) fn for_batch(outputs: usize, bytes: usize) -> Self {
        let columns = Columns {
            inputs: Vec::with_capacity(outputs),
            key_lengths: Vec::with_capacity(outputs),
            value_lengths: Vec::with_capacity(outputs),
            header_counts: Vec::with_capacity(outputs),
            targets: Vec::with_capacity(outputs),
            data: Vec::with_capacity(bytes),
            ..Columns::default()
        };
        Outputs { columns, ..Outputs::default() }
    }

    /// Starts the outputs of the batch's record at position `input`: the list looks empty again.
    #[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
    pub(crate) fn begin(&mut self, input: u32) {
        self.lay_out_held();
        self.start = self.columns.mark();
        self.input = input;
        self.rebuilt.take();
    }

    /// Drops what the current record emitted.
    #[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
    pub(crate) fn discard(&mut self) {
        self.held.clear();
        self.columns.truncate(self.start);
        self.rebuilt.take();
    }

    /// The outputs of every record so far, laid out for the host.
    #[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
    pub(crate) fn into_columns(mut self) -> Columns {
        self.lay_out_held();
        self.columns
    }

    /// Appends `output`: its bytes are copied into the list, and it is dropped (or, when it does
    /// not fit, held until the record is done).
    #[inline]
    pub fn emit(&mut self, output: Output) {
        self.rebuilt.take();
        let data = &self.columns.data;
        if self.held.is_empty() && output.byte_len() <= data.capacity() - data.len() {
            self.columns.push(self.input, &output);
        } else {
            self.held.push(output);
        }
    }

    /// Copies the held outputs into the buffer, making room for all of them at once: exactly
    /// that much when they are larger than the buffer so far, else as much as it holds, so that
    /// many small records grow it a few times only.
    fn lay_out_held(&mut self) {
        if self.held.is_empty() {
            return;
        }
        let bytes: usize = self.held.iter().map(Output::byte_len).sum();
        let data = &mut self.columns.data;
        if data.capacity() - data.len() < bytes {
            data.reserve_exact(bytes.max(data.len()));
        }
        for output in self.held.drain(..) {
            self.columns.push(self.input, &output);
        }
    }

    /// How many outputs were emitted.
    pub fn len(&self) -> usize {
        self.columns.inputs.len() - self.start.outputs + self.held.len()
    }

    /// `true` when nothing was emitted.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The outputs, in emission order.
    pub fn iter(&self) -> std::slice::Iter<'_, Output> {
        self.rebuilt.get_or_init(|| self.rebuild()).iter()
    }

    /// The outputs as a vector, in emission order.
    pub fn into_vec(mut self) -> Vec<Output> {
        if let Some(outputs) = self.rebuilt.take() {
            return outputs;
        }
        let mut outputs = self.columns.rebuild(self.start);
        outputs.append(&mut self.held);
        outputs
    }

    fn rebuild(&self) -> Vec<Output> {
        let mut outputs = self.columns.rebuild(self.start);
        outputs.extend(self.held.iter().cloned());
        outputs
    }
}

impl PartialEq for Outputs {
    fn eq(&self, other: &Outputs) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for Outputs {}

impl std::fmt::Debug for Outputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl IntoIterator for Outputs {
    type Item = Output;
    type IntoIter = std::vec::IntoIter<Output>;

    fn into_iter(self) -> Self::IntoIter {
        self.into_vec().into_iter()
    }
}

impl<'a> IntoIterator for &'a Outputs {
    type Item = &'a Output;
    type IntoIter = std::slice::Iter<'a, Output>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_record_copies_key_value_and_headers_to_the_default_output() {
        let record = Record::new().with_key("k").with_value("v").with_header("h", "1").with_offset(5);
        let output = Output::from_record(&record);
        assert_eq!(output, Output::new().with_key("k").with_value("v").with_header("h", "1"));
        assert_eq!(output.target(), None);
    }

    #[test]
    fn an_output_from_a_record_shares_its_bytes_until_it_is_changed() {
        let record = Record::new().with_key("k").with_value("v").with_header("h", "1");
        let output = Output::from_record(&record);
        assert!(matches!(output.key, Some(Part::Shared(_))), "not copied");
        let changed = output.clone().with_value("other").with_header("h2", "2");
        assert!(matches!(changed.value, Some(Part::Inline(_))));
        assert_eq!(changed.key(), Some(&b"k"[..]), "the key is still the record's");
        assert_eq!(changed.headers(), [Header::new("h", "1"), Header::new("h2", "2")]);
        assert_eq!(output, Output::new().with_key("k").with_value("v").with_header("h", "1"), "equal by content");
    }

    #[test]
    fn short_borrowed_bytes_are_held_in_place_and_owned_ones_are_moved() {
        let short = "x".repeat(Output::INLINE_BYTES);
        let long = "y".repeat(Output::INLINE_BYTES + 1);
        let output = Output::new().with_key(short.as_str()).with_value(long.as_str());
        assert!(matches!(output.key, Some(Part::Inline(_))), "no allocation for {} bytes", Output::INLINE_BYTES);
        assert!(matches!(output.value, Some(Part::Owned(_))), "copied when longer");
        assert_eq!((output.key_str(), output.value_str()), (Some(short.as_str()), Some(long.as_str())));

        let owned = b"ab".to_vec();
        let at = owned.as_ptr();
        let output = Output::new().with_value(owned);
        assert!(matches!(&output.value, Some(Part::Owned(v)) if v.as_ptr() == at), "moved, not copied");

        let empty = Output::new().with_key("").with_value(b"\x01\x02");
        assert_eq!((empty.key(), empty.value()), (Some(&b""[..]), Some(&[1u8, 2][..])), "empty is not null");
        let text = Output::new().with_key(Cow::Borrowed("k")).with_value(Cow::<str>::Owned("v".into()));
        assert_eq!((text.key_str(), text.value_str()), (Some("k"), Some("v")));
    }

    #[test]
    fn json_value_and_target() {
        let output = Output::new().with_json_value(&serde_json::json!({"a": [1, 2]})).unwrap().to("side");
        assert_eq!(output.value_str(), Some(r#"{"a":[1,2]}"#));
        assert_eq!(output.target(), Some("side"));
        assert_eq!(output.key(), None);
    }

    #[test]
    fn outputs_keep_emission_order() {
        let mut outputs = Outputs::new();
        assert!(outputs.is_empty());
        outputs.emit(Output::new().with_value("1"));
        outputs.emit(Output::new().with_value("2"));
        assert_eq!(outputs.len(), 2);
        let values: Vec<_> = outputs.iter().map(|o| o.value_str().unwrap()).collect();
        assert_eq!(values, ["1", "2"]);
        assert_eq!(outputs.into_vec()[1].value_str(), Some("2"));
    }

    #[test]
    fn emitted_outputs_read_back_as_they_were_emitted_even_between_emits() {
        let mut outputs = Outputs::new();
        let first = Output::new().with_key("k").with_value(vec![0u8, 1]).with_header("h", "v").to("side");
        outputs.emit(first.clone());
        assert_eq!(outputs.iter().collect::<Vec<_>>(), [&first]);
        outputs.emit(Output::new());
        assert_eq!(outputs.len(), 2, "an emit after reading is seen");
        assert_eq!(outputs.iter().nth(1), Some(&Output::new()));
        assert_eq!(outputs.clone().into_vec(), [first.clone(), Output::new()]);
        assert_eq!((&outputs).into_iter().count(), 2);
        assert_eq!(outputs.into_iter().next(), Some(first));
    }

    #[test]
    fn a_batch_list_lays_out_each_records_outputs_and_drops_those_of_a_failed_record() {
        let record = Record::new().with_key("k").with_value("v").with_header("h", "1");
        let mut outputs = Outputs::for_batch(4, 64);
        outputs.begin(0);
        outputs.emit(Output::from_record(&record));
        outputs.emit(Output::new().with_value("x").to("side"));
        assert_eq!(outputs.len(), 2);
        outputs.begin(1);
        assert!(outputs.is_empty(), "each record starts empty");
        let gone = Output::new().with_key("gone").with_header("h", "2").to("other");
        outputs.emit(gone.clone());
        assert_eq!(outputs.iter().collect::<Vec<_>>(), [&gone], "read back from the buffer");
        outputs.discard();
        assert!(outputs.is_empty());
        outputs.begin(2);
        outputs.emit(Output::new().with_key("k2"));
        let columns = outputs.into_columns();
        assert_eq!(columns.inputs, [0, 0, 2]);
        assert_eq!(columns.key_lengths, [1, -1, 2]);
        assert_eq!(columns.value_lengths, [1, 1, -1]);
        assert_eq!(columns.header_counts, [1, 0, 0]);
        assert_eq!(columns.header_lengths, [1, 1]);
        assert_eq!(columns.targets, [-1, 0, -1]);
        assert_eq!(columns.target_names, ["side"]);
        assert_eq!(columns.data, b"kvh1xk2");
    }

    #[test]
    fn an_output_that_does_not_fit_is_held_with_the_records_later_ones_and_laid_out_once() {
        let mut outputs = Outputs::for_batch(4, 8);
        outputs.begin(0);
        outputs.emit(Output::new().with_value("abcd"));
        let large = Output::new().with_value(vec![b'x'; 16]);
        outputs.emit(large.clone());
        outputs.emit(Output::new().with_value("e"));
        assert_eq!((outputs.columns.inputs.len(), outputs.held.len()), (1, 2), "held from the first that did not fit");
        assert_eq!(outputs.len(), 3);
        let values: Vec<_> = outputs.iter().map(Output::value).collect();
        assert_eq!(values, [Some(&b"abcd"[..]), large.value(), Some(&b"e"[..])], "in emission order");
        outputs.begin(1);
        assert!(outputs.held.is_empty() && outputs.is_empty());
        let columns = outputs.into_columns();
        assert_eq!(columns.value_lengths, [4, 16, 1]);
        assert_eq!(columns.data.capacity(), 4 + 17, "grown once, by exactly what was held");
    }
}
