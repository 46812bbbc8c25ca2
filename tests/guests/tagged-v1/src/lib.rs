//! Version 1 of the tagged test guest (see `tests/guests/tagged/function.rs`).

const TAG: &str = "v1";

include!("../../tagged/function.rs");
