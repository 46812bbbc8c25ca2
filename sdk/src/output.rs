//! What a function produces: [`Output`] records collected in [`Outputs`].

use std::borrow::Cow;
use std::ops::Range;
use std::sync::Arc;

use serde::Serialize;

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
    #[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
    #[inline]
    pub(crate) fn byte_len(&self) -> usize {
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
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Outputs {
    items: Vec<Output>,
}

impl Outputs {
    /// An empty list.
    pub fn new() -> Self {
        Outputs::default()
    }

    /// Appends `output`.
    #[inline]
    pub fn emit(&mut self, output: Output) {
        self.items.push(output);
    }

    /// How many outputs were emitted.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// `true` when nothing was emitted.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The outputs, in emission order.
    pub fn iter(&self) -> std::slice::Iter<'_, Output> {
        self.items.iter()
    }

    /// The outputs as a vector, in emission order.
    pub fn into_vec(self) -> Vec<Output> {
        self.items
    }

    /// Drops the outputs, keeping the list's capacity for the next record.
    #[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
    pub(crate) fn clear(&mut self) {
        self.items.clear();
    }
}

impl IntoIterator for Outputs {
    type Item = Output;
    type IntoIter = std::vec::IntoIter<Output>;

    fn into_iter(self) -> Self::IntoIter {
        self.items.into_iter()
    }
}

impl<'a> IntoIterator for &'a Outputs {
    type Item = &'a Output;
    type IntoIter = std::slice::Iter<'a, Output>;

    fn into_iter(self) -> Self::IntoIter {
        self.items.iter()
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
        assert_eq!(output.byte_len(), "kvh1".len());
        let changed = output.clone().with_value("other").with_header("h2", "2");
        assert!(matches!(changed.value, Some(Part::Inline(_))));
        assert_eq!(changed.key(), Some(&b"k"[..]), "the key is still the record's");
        assert_eq!(changed.headers(), [Header::new("h", "1"), Header::new("h2", "2")]);
        assert_eq!(changed.byte_len(), "kotherh1h22".len());
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
}
