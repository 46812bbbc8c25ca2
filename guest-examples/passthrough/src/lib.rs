//! Passthrough: every record becomes one output with the same key, value and headers, on the
//! pipeline's default output. The smallest possible Sluice function.

use sluice_sdk::{Output, Outputs, Record, Result};

/// Emits the record unchanged.
#[sluice_sdk::function]
fn process(record: &Record, out: &mut Outputs) -> Result<()> {
    out.emit(Output::from_record(record));
    Ok(())
}

#[cfg(test)]
mod tests {
    use sluice_sdk::{Output, Record, testing};

    #[test]
    fn every_record_comes_out_unchanged_on_the_default_output() {
        let records = vec![
            Record::new().with_offset(0).with_key("k1").with_value("v1").with_header("h", "1").with_header("h", "2"),
            Record::new().with_offset(1).with_value(vec![0xff, 0x00]),
            Record::new().with_offset(2),
        ];
        let results = testing::run(super::process, records);
        assert_eq!(
            results,
            vec![
                Ok(vec![Output::new().with_key("k1").with_value("v1").with_header("h", "1").with_header("h", "2")]),
                Ok(vec![Output::new().with_value(vec![0xff, 0x00])]),
                Ok(vec![Output::new()]),
            ]
        );
        assert!(results.iter().flatten().flatten().all(|o| o.target().is_none()));
    }
}
