//! A large test guest: passes each record through with a `sluice.test.mix` header computed by
//! one of thousands of generated functions, chosen by the record's offset. It exists to
//! measure loading and hot-reloading a component of several megabytes.

use sluice_sdk::{Output, Outputs, Record, Result};

include!(concat!(env!("OUT_DIR"), "/mixers.rs"));

#[sluice_sdk::function]
fn process(record: &Record, out: &mut Outputs) -> Result<()> {
    let value = record.value().unwrap_or_default();
    let mixer = MIXERS[record.offset().unsigned_abs() as usize % MIXERS.len()];
    let mix = mixer(record.offset() as u64, value);
    out.emit(Output::from_record(record).with_header("sluice.test.mix", mix.to_string()));
    Ok(())
}
