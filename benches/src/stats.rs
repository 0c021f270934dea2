//! Percentiles and table rows for benchmark reports.

use std::time::Duration;

/// Nearest-rank percentile (`p` in 0–100) of `samples`; `None` when empty.
pub fn percentile(samples: &[Duration], p: f64) -> Option<Duration> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    Some(sorted[rank.min(sorted.len()) - 1])
}

/// A row `label | n | p50 | p95 | p99` in milliseconds.
pub fn row(label: &str, samples: &[Duration]) -> String {
    let ms = |p| {
        percentile(samples, p).map_or("-".to_string(), |d| {
            format!("{:.1}", d.as_secs_f64() * 1000.0)
        })
    };
    format!(
        "| {label:<38} | {:>4} | {:>8} | {:>8} | {:>8} |",
        samples.len(),
        ms(50.0),
        ms(95.0),
        ms(99.0)
    )
}

/// The header matching [`row`], its first column titled `title`.
pub fn header(title: &str) -> String {
    format!(
        "| {:<38} | {:>4} | {:>8} | {:>8} | {:>8} |\n|{}|{}|{}|{}|{}|",
        title,
        "n",
        "p50",
        "p95",
        "p99",
        "-".repeat(40),
        "-".repeat(6),
        "-".repeat(10),
        "-".repeat(10),
        "-".repeat(10)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&samples, 50.0), Some(Duration::from_millis(50)));
        assert_eq!(percentile(&samples, 99.0), Some(Duration::from_millis(99)));
        assert_eq!(
            percentile(&samples, 100.0),
            Some(Duration::from_millis(100))
        );
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(
            percentile(&[Duration::from_millis(7)], 95.0),
            Some(Duration::from_millis(7))
        );
    }
}
