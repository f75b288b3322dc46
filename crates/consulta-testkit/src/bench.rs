//! Latency statistics and table rows for Consulta's benchmarks.

use std::time::Duration;

/// Percentiles of a set of latency samples.
#[derive(Debug, Clone, Copy)]
pub struct Stats {
    /// Samples.
    pub n: usize,
    /// Mean.
    pub mean: Duration,
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// 99.9th percentile.
    pub p999: Duration,
    /// Largest.
    pub max: Duration,
}

impl Stats {
    /// The statistics of `samples` (nearest-rank percentiles); `None` when there are none.
    pub fn of(mut samples: Vec<Duration>) -> Option<Self> {
        samples.sort();
        let n = samples.len();
        let last = *samples.last()?;
        let at = |q: f64| {
            let rank = ((n as f64 * q).ceil() as usize).clamp(1, n);
            samples.get(rank - 1).copied().unwrap_or(last)
        };
        Some(Self {
            n,
            mean: samples.iter().sum::<Duration>() / u32::try_from(n).unwrap_or(u32::MAX),
            p50: at(0.50),
            p99: at(0.99),
            p999: at(0.999),
            max: last,
        })
    }

    /// One Markdown table row: `| name | calls | mean | p50 | **p99** | p99.9 | max |`, in ms.
    pub fn row(&self, name: &str) -> String {
        format!(
            "| {name} | {} | {:.3} | {:.3} | **{:.3}** | {:.3} | {:.3} |",
            self.n,
            ms(self.mean),
            ms(self.p50),
            ms(self.p99),
            ms(self.p999),
            ms(self.max)
        )
    }
}

/// A whole-number setting from the environment, or `default`.
pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A small deterministic generator (SplitMix64), so that benchmark runs are comparable.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// Milliseconds, as a float.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The header of the table [`Stats::row`] writes rows of.
pub const TABLE_HEADER: &str = "| operation | calls | mean ms | p50 ms | p99 ms | p99.9 ms | max ms |\n|---|---:|---:|---:|---:|---:|---:|";

/// The machine's load averages (1, 5, 15 minutes), for the record of a run.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let samples = (1..=1000).map(Duration::from_millis).collect();
        let s = Stats::of(samples).unwrap();
        assert_eq!(
            (s.n, s.p50, s.p99, s.p999, s.max),
            (
                1000,
                Duration::from_millis(500),
                Duration::from_millis(990),
                Duration::from_millis(999),
                Duration::from_millis(1000)
            )
        );
        assert!(Stats::of(Vec::new()).is_none());
    }
}
