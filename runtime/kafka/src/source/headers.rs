//! The headers of a consumed message, read straight from librdkafka.
//!
//! rdkafka's own reader (`rdkafka::message::Headers::iter`) unwraps the conversion of every
//! header name to UTF-8, so one message whose header name is not UTF-8, which any producer
//! can send, would panic its partition worker. Names are read here as bytes instead and
//! decoded lossily (a byte that is not UTF-8 becomes U+FFFD); values are copied as they are.
//! librdkafka ends each name at its first NUL byte, so a name holding one is cut there.

#![allow(unsafe_code)]

use std::ffi::{CStr, c_char, c_void};

use rdkafka::bindings as rdsys;
use rdkafka::message::BorrowedMessage;

use sluice_record::Header;

/// The headers of `message`, in order (none when it has none).
pub(crate) fn message_headers(message: &BorrowedMessage<'_>) -> Vec<Header> {
    let mut headers: *mut rdsys::rd_kafka_headers_t = std::ptr::null_mut();
    // SAFETY: `message.ptr()` is the librdkafka message that `message` borrows, alive for the
    // whole call; librdkafka only stores into `headers` a pointer to headers the message owns.
    let error = unsafe { rdsys::rd_kafka_message_headers(message.ptr(), &mut headers) };
    if error != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || headers.is_null() {
        return Vec::new();
    }
    // SAFETY: the headers belong to `message`, which outlives this call and is not changed
    // while it is borrowed.
    unsafe { read_headers(headers) }
}

/// Copies every header of `headers`.
///
/// # Safety
///
/// `headers` must point to librdkafka headers that stay alive and unchanged during the call.
pub(crate) unsafe fn read_headers(headers: *const rdsys::rd_kafka_headers_t) -> Vec<Header> {
    // SAFETY: `headers` is valid (the caller's promise).
    let count = unsafe { rdsys::rd_kafka_header_cnt(headers) };
    let mut copied = Vec::with_capacity(count);
    for index in 0..count {
        let mut name: *const c_char = std::ptr::null();
        let mut value: *const c_void = std::ptr::null();
        let mut size = 0usize;
        // SAFETY: `headers` is valid and `index` below its count; librdkafka stores into the
        // three out-pointers, which point to live locals.
        let error = unsafe { rdsys::rd_kafka_header_get_all(headers, index, &mut name, &mut value, &mut size) };
        if error != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || name.is_null() {
            continue;
        }
        // SAFETY: librdkafka ends every header name with a NUL byte, and the name lives as long
        // as the headers.
        let key = unsafe { CStr::from_ptr(name) }.to_string_lossy().into_owned();
        let value = if value.is_null() || size == 0 {
            Vec::new()
        } else {
            // SAFETY: librdkafka reports `size` readable bytes at `value`, alive as long as the
            // headers.
            unsafe { std::slice::from_raw_parts(value.cast::<u8>(), size) }.to_vec()
        };
        copied.push(Header { key, value });
    }
    copied
}

#[cfg(test)]
mod fuzz;
