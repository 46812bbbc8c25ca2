//! Fuzzing the reading of Kafka message headers: any producer can send any header names and
//! values. Headers are built with librdkafka's own API, as the consumer finds them.
//!
//! Properties: no headers make the reader panic; every header is read, in order; values come
//! back byte for byte; names come back as their UTF-8 text (U+FFFD for bytes that are not),
//! up to a NUL byte.

use proptest::prelude::*;

use super::*;
use sluice_fuzzing::check;

/// Headers made by librdkafka, destroyed on drop.
struct NativeHeaders(*mut rdsys::rd_kafka_headers_t);

impl NativeHeaders {
    fn new(headers: &[(Vec<u8>, Option<Vec<u8>>)]) -> Self {
        // SAFETY: a plain constructor; the result is owned by the returned value.
        let native = NativeHeaders(unsafe { rdsys::rd_kafka_headers_new(headers.len()) });
        for (name, value) in headers {
            let (value_ptr, value_len) =
                value.as_ref().map_or((std::ptr::null(), 0), |v| (v.as_ptr().cast::<c_void>(), v.len() as isize));
            // SAFETY: the headers are live; librdkafka copies `name_len` bytes of the name
            // and `value_len` bytes of the value, both live slices.
            let error = unsafe {
                rdsys::rd_kafka_header_add(native.0, name.as_ptr().cast(), name.len() as isize, value_ptr, value_len)
            };
            assert_eq!(error, rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR);
        }
        native
    }

    fn read(&self) -> Vec<Header> {
        // SAFETY: the headers are live and not changed while they are read.
        unsafe { read_headers(self.0) }
    }
}

impl Drop for NativeHeaders {
    fn drop(&mut self) {
        // SAFETY: created by `rd_kafka_headers_new` and destroyed once, here.
        unsafe { rdsys::rd_kafka_headers_destroy(self.0) }
    }
}

/// What the header `name` reads as.
fn expected_name(name: &[u8]) -> String {
    let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    String::from_utf8_lossy(&name[..end]).into_owned()
}

#[test]
fn a_header_name_that_is_not_utf8_is_read_lossily_instead_of_panicking() {
    let native = NativeHeaders::new(&[(vec![0xff, b'k'], Some(b"v".to_vec())), (b"ok".to_vec(), None)]);
    assert_eq!(
        native.read(),
        vec![Header { key: "\u{fffd}k".into(), value: b"v".to_vec() }, Header { key: "ok".into(), value: Vec::new() }]
    );
}

#[test]
fn any_headers_are_read_in_order_with_their_values_byte_for_byte() {
    let name = prop_oneof![prop::collection::vec(any::<u8>(), 0..24), any::<String>().prop_map(String::into_bytes),];
    let headers = prop::collection::vec((name, prop::option::of(prop::collection::vec(any::<u8>(), 0..64))), 0..12);
    check("kafka_headers", 512, headers, |headers| {
        let read = NativeHeaders::new(&headers).read();
        prop_assert_eq!(read.len(), headers.len());
        for ((name, value), header) in headers.iter().zip(&read) {
            prop_assert_eq!(&header.key, &expected_name(name));
            prop_assert_eq!(header.value.as_slice(), value.as_deref().unwrap_or_default());
        }
        Ok(())
    });
}
