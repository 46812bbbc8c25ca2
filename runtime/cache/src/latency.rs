//! Call latency, counted in fixed buckets without locks: the cache's calls are timed with it,
//! and the pipeline and `/metrics` read it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency buckets of [`LatencyHistogram`], in microseconds. One more
/// bucket, after these, holds every slower call.
pub const LATENCY_BUCKET_BOUNDS_MICROS: [u64; LATENCY_BUCKETS - 1] =
    [50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 5_000_000];

/// Number of buckets of [`LatencyHistogram`], the overflow bucket included.
pub const LATENCY_BUCKETS: usize = 16;

/// A fixed-bucket histogram of call durations, lock-free: one atomic add per bucket hit plus the
/// count and the total, so the mean and coarse quantiles can be read at any time.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    count: AtomicU64,
    total_nanos: AtomicU64,
    buckets: [AtomicU64; LATENCY_BUCKETS],
}

impl LatencyHistogram {
    /// Records one call that took `elapsed`.
    pub fn record(&self, elapsed: Duration) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let bucket =
            LATENCY_BUCKET_BOUNDS_MICROS.iter().position(|&bound| micros <= bound).unwrap_or(LATENCY_BUCKETS - 1);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.total_nanos.fetch_add(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Reads the histogram.
    pub fn snapshot(&self) -> LatencySnapshot {
        LatencySnapshot {
            count: self.count.load(Ordering::Relaxed),
            total_nanos: self.total_nanos.load(Ordering::Relaxed),
            buckets: std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed)),
        }
    }
}

/// A plain copy of a [`LatencyHistogram`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema, serde::Deserialize)]
pub struct LatencySnapshot {
    /// Calls recorded.
    pub count: u64,
    /// Their total duration, in nanoseconds.
    pub total_nanos: u64,
    /// Calls per bucket; bucket `i` holds calls of at most [`LATENCY_BUCKET_BOUNDS_MICROS`]`[i]`
    /// microseconds (and more than the bound before it); the last one holds the rest.
    pub buckets: [u64; LATENCY_BUCKETS],
}

impl LatencySnapshot {
    /// Mean call duration, `None` before the first call.
    pub fn mean(&self) -> Option<Duration> {
        (self.count > 0).then(|| Duration::from_nanos(self.total_nanos / self.count))
    }

    /// An upper bound of the `q` quantile (`0.0..=1.0`): the bound of the bucket it falls in.
    /// `None` before the first call, and `Duration::MAX` when it falls in the overflow bucket.
    pub fn quantile_upper_bound(&self, q: f64) -> Option<Duration> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, calls) in self.buckets.iter().enumerate() {
            seen += calls;
            if seen >= rank {
                return Some(LATENCY_BUCKET_BOUNDS_MICROS.get(i).map_or(Duration::MAX, |&b| Duration::from_micros(b)));
            }
        }
        Some(Duration::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_lands_in_fixed_buckets_with_mean_and_quantile_bounds() {
        let histogram = LatencyHistogram::default();
        assert_eq!(histogram.snapshot().mean(), None);
        for micros in [10, 50, 51, 400, 700, 7_000_000] {
            histogram.record(Duration::from_micros(micros));
        }
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.count, 6);
        assert_eq!(snapshot.buckets[0], 2, "<= 50 us");
        assert_eq!(snapshot.buckets[1], 1, "<= 100 us");
        assert_eq!(snapshot.buckets[3], 1, "<= 500 us");
        assert_eq!(snapshot.buckets[4], 1, "<= 1 ms");
        assert_eq!(snapshot.buckets[LATENCY_BUCKETS - 1], 1, "over 5 s");
        assert_eq!(snapshot.quantile_upper_bound(0.5), Some(Duration::from_micros(100)));
        assert_eq!(snapshot.quantile_upper_bound(0.8), Some(Duration::from_millis(1)));
        assert_eq!(snapshot.quantile_upper_bound(1.0), Some(Duration::MAX));
        assert_eq!(snapshot.mean(), Some(Duration::from_nanos(7_001_211_000 / 6)));
    }
}
