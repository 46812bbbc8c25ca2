//! Fuzzing what the host makes of a guest's stdout and stderr: any bytes, written in any
//! pieces.
//!
//! Properties: no bytes make the host panic; each line is kept to its first
//! `max_line_bytes` bytes, decoded lossily; the error message of a trap holds the latest
//! lines, however the guest split its writes; a log message is cut on a character boundary.

use proptest::prelude::*;

use super::*;
use sluice_fuzzing::check;

/// The lines a guest's `bytes` should leave in the error message: the last
/// [`RECENT_STDERR_LINES`] non-empty lines, each cut to `max` bytes.
fn expected_recent(bytes: &[u8], max: usize) -> Vec<String> {
    let lines: Vec<String> = bytes
        .split(|&b| b == b'\n')
        .map(|line| &line[..line.len().min(max)])
        .filter(|line| !line.is_empty())
        .map(|line| String::from_utf8_lossy(line).into_owned())
        .collect();
    lines[lines.len().saturating_sub(RECENT_STDERR_LINES)..].to_vec()
}

#[test]
fn any_guest_output_in_any_pieces_keeps_its_latest_lines_cut_to_the_limit() {
    let output =
        prop::collection::vec(prop_oneof![any::<u8>(), Just(b'\n'), Just(0xe2), Just(0x82), Just(0xac)], 0..400);
    let cases = (output, prop::collection::vec(1usize..50, 0..20), 1usize..40);
    check("guest_stderr_lines", 1024, cases, |(bytes, cuts, max)| {
        let stream = GuestStream::stderr("fuzzed".into(), None, max);
        let mut rest = bytes.as_slice();
        for cut in cuts {
            let (piece, after) = rest.split_at(cut.min(rest.len()));
            stream.lock().write(piece);
            rest = after;
        }
        stream.lock().write(rest);
        let recent = stream.recent();
        let expected = expected_recent(&bytes, max).join("; ");
        prop_assert_eq!(recent, expected);
        Ok(())
    });
}

#[test]
fn a_log_message_is_cut_on_a_character_boundary_within_the_limit() {
    check("guest_log_truncate", 1024, (any::<String>(), 0usize..64), |(text, max)| {
        let cut = truncate(&text, max);
        prop_assert!(text.starts_with(cut));
        prop_assert!(cut.len() <= max || cut.len() == text.len() && text.len() <= max);
        prop_assert!(text.len() <= max || cut.len() + 4 > max, "{:?} cut to {:?} at {}", text, cut, max);
        Ok(())
    });
}
