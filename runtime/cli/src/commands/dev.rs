//! `sluice dev`: the demo on embedded defaults.

use std::time::Duration;

use sluice::dev::DevOptions;

use crate::DevArgs;

/// Runs the demo until Ctrl-C or `--seconds`.
pub async fn dev(args: DevArgs) -> anyhow::Result<()> {
    sluice::dev::run(DevOptions {
        module: args.module,
        rate: args.rate,
        partitions: args.partitions,
        duration: args.seconds.map(Duration::from_secs),
        admin_listen: args.admin_listen,
        data_dir: args.data_dir,
    })
    .await
}
