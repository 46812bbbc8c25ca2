//! How contract 0.2.0 lays out a batch and its results (`wit/sluice.wit`): every part's bytes
//! back to back in one buffer, and columns of lengths that say where each ends. The runtime
//! packs batches and the guest SDK packs results with these same functions.

/// The length that stands for a null key or value, and the target for the default output.
pub const NULL: i32 = -1;

/// The timestamp that stands for none (Kafka's own convention).
pub const NO_TIMESTAMP: i64 = -1;

/// Appends a key or value to `data` and returns its length for its column, [`NULL`] for none.
#[inline]
pub fn append(data: &mut Vec<u8>, bytes: Option<&[u8]>) -> i32 {
    match bytes {
        Some(bytes) => {
            data.extend_from_slice(bytes);
            bytes.len() as i32
        }
        None => NULL,
    }
}

/// Appends a header's name and value to `data` and their lengths to `header_lengths`.
pub fn append_header(data: &mut Vec<u8>, header_lengths: &mut Vec<u32>, name: &[u8], value: &[u8]) {
    header_lengths.extend([name.len() as u32, value.len() as u32]);
    data.extend_from_slice(name);
    data.extend_from_slice(value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_go_back_to_back_and_a_null_one_is_a_length_of_minus_one() {
        let (mut data, mut header_lengths) = (Vec::new(), Vec::new());
        assert_eq!(append(&mut data, Some(b"key")), 3);
        assert_eq!(append(&mut data, None), NULL);
        assert_eq!(append(&mut data, Some(b"")), 0);
        append_header(&mut data, &mut header_lengths, b"h", b"v1");
        assert_eq!(data, b"keyhv1");
        assert_eq!(header_lengths, [1, 2]);
    }
}
