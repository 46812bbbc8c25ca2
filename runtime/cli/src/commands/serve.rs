//! `sluice serve`: the runtime, until Ctrl-C or SIGTERM.

use std::time::Duration;

use anyhow::bail;
use sluice::serve::{self, ServeConfig, shutdown_signal};

use crate::ServeArgs;

/// Restores the pipelines of the data directory, applies those of the config file and serves
/// the admin API, logging each pipeline's status every `--status-every` seconds.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let shutdown = shutdown_signal()?;
    tokio::pin!(shutdown);
    let mut config = match (&args.config, &args.brokers) {
        (Some(path), _) => ServeConfig::load(path)?,
        (None, Some(brokers)) => ServeConfig::new(brokers),
        (None, None) => bail!("give a config file (--config) or the cluster's bootstrap servers (--brokers)"),
    };
    if let Some(brokers) = args.brokers {
        config.kafka.brokers = brokers;
    }
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    if let Some(listen) = args.admin_listen {
        config.admin.listen = listen;
    }
    if let Some(node_id) = args.node_id {
        config.node_id = Some(node_id);
    }
    if let Some(registry) = args.registry {
        config.registry = registry;
    }
    // Refuse an open API off loopback before anything starts.
    sluice::admin::check_listen_address(config.admin.listen, &config.admin.config()).map_err(anyhow::Error::msg)?;
    let manager = tokio::select! {
        manager = serve::open(&config) => manager?,
        _ = &mut shutdown => {
            serve::exit_after_shutdown_timeout();
            tracing::info!("stopping during start-up");
            return Ok(());
        }
    };
    let (stop_admin, admin_stopped) = tokio::sync::oneshot::channel::<()>();
    let mut admin = tokio::spawn(serve::serve_admin(manager.clone(), config.admin.clone(), async move {
        let _ = admin_stopped.await;
    }));
    let mut ticker = tokio::time::interval(Duration::from_secs(args.status_every.max(1)));
    ticker.tick().await;
    let result = loop {
        tokio::select! {
            _ = &mut shutdown => {
                serve::exit_after_shutdown_timeout();
                break Ok(());
            }
            ended = &mut admin => break match ended {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e),
                Err(e) => Err(anyhow::anyhow!("the admin API task failed: {e}")),
            },
            _ = ticker.tick(), if args.status_every > 0 => {
                for (summary, s) in manager.statuses().await {
                    let c = &s.cache.stats;
                    tracing::info!(
                        pipeline = %s.name, state = ?summary.state, revision = summary.revision,
                        records_in = s.records_in, records_out = s.records_out,
                        failed = s.failed, dead_letters = s.dead_letters, lag = summary.lag,
                        cache = s.cache.backend, cache_hits = c.hits, cache_misses = c.misses,
                        cache_hit_ratio = s.cache.hit_ratio().map(|r| format!("{r:.3}")).unwrap_or_default(),
                        cache_unavailable = c.unavailable, cache_timeouts = c.timeouts, cache_errors = c.errors,
                        "status"
                    );
                }
            }
        }
    };
    tracing::info!("stopping");
    let _ = stop_admin.send(());
    manager.shutdown().await;
    result
}
