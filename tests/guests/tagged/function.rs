// The function shared by the `tagged-v1` and `tagged-v2` test guests: each record comes out
// once, same key, value `<TAG>:<input value>` and a `sluice.test.offset` header with the input
// offset, so a test can tell which version processed which record. `TAG` is defined by the
// crate that includes this file.

use sluice_sdk::{Output, Outputs, Record, Result};

#[sluice_sdk::function]
fn process(record: &Record, out: &mut Outputs) -> Result<()> {
    let mut value = format!("{TAG}:").into_bytes();
    value.extend_from_slice(record.value().unwrap_or_default());
    let mut output = Output::new().with_value(value).with_header("sluice.test.offset", record.offset().to_string());
    if let Some(key) = record.key() {
        output = output.with_key(key.to_vec());
    }
    out.emit(output);
    Ok(())
}
