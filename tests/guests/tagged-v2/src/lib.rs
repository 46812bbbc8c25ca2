//! Version 2 of the tagged test guest (see `tests/guests/tagged/function.rs`).

const TAG: &str = "v2";

include!("../../tagged/function.rs");
