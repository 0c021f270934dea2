//! The `/metrics` exporter: Prometheus text rendered from two recorders. Series labelled by peer
//! (`dartmouth_media::metrics::PER_PEER_METRIC_PREFIXES`) go to one that forgets a series left
//! unchanged for a while, so peers that left disappear from the page; everything else (capacities,
//! session counts, totals) goes to one that keeps its series for the life of the process, even when
//! they are set once and never touched again.

use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use metrics_util::MetricKindMask;

/// How long a per-peer series survives without an update (the media driver updates them every
/// second while the peer is connected).
pub const PER_PEER_IDLE: Duration = Duration::from_secs(30);

/// Renders the process's metrics in the Prometheus text format.
#[derive(Clone)]
pub struct MetricsExporter {
    lasting: PrometheusHandle,
    per_peer: PrometheusHandle,
}

impl MetricsExporter {
    /// Installs the process-wide recorder; fails if one is installed already.
    pub fn install(per_peer_idle: Duration) -> anyhow::Result<Self> {
        let (recorder, exporter) = split_recorder(per_peer_idle);
        metrics::set_global_recorder(recorder)?;
        Ok(exporter)
    }

    /// The exposition text of both recorders (their metric names never overlap).
    pub fn render(&self) -> String {
        let mut text = self.lasting.render();
        text.push_str(&self.per_peer.render());
        text
    }
}

fn split_recorder(per_peer_idle: Duration) -> (SplitRecorder, MetricsExporter) {
    let lasting = PrometheusBuilder::new().build_recorder();
    let per_peer = PrometheusBuilder::new()
        .idle_timeout(MetricKindMask::ALL, Some(per_peer_idle))
        .build_recorder();
    let exporter = MetricsExporter {
        lasting: lasting.handle(),
        per_peer: per_peer.handle(),
    };
    (SplitRecorder { lasting, per_peer }, exporter)
}

/// Routes each metric by name to the recorder that keeps or forgets it.
struct SplitRecorder {
    lasting: PrometheusRecorder,
    per_peer: PrometheusRecorder,
}

impl SplitRecorder {
    fn for_name(&self, name: &str) -> &PrometheusRecorder {
        let per_peer = dartmouth_media::metrics::PER_PEER_METRIC_PREFIXES
            .iter()
            .any(|prefix| name.starts_with(prefix));
        if per_peer {
            &self.per_peer
        } else {
            &self.lasting
        }
    }
}

impl Recorder for SplitRecorder {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.for_name(key.as_str())
            .describe_counter(key, unit, description);
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.for_name(key.as_str())
            .describe_gauge(key, unit, description);
    }

    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.for_name(key.as_str())
            .describe_histogram(key, unit, description);
    }

    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        self.for_name(key.name()).register_counter(key, metadata)
    }

    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        self.for_name(key.name()).register_gauge(key, metadata)
    }

    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        self.for_name(key.name()).register_histogram(key, metadata)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_departed_peers_series_disappear_but_set_once_gauges_stay() {
        let (recorder, exporter) = split_recorder(Duration::from_millis(200));
        metrics::with_local_recorder(&recorder, || {
            metrics::gauge!("dartmouth_agent_capacity").set(6.0);
            let labels = [("peer", "7".to_string()), ("room", "demo".to_string())];
            metrics::gauge!("dartmouth_sfu_subscriber_rtt_seconds", &labels).set(0.02);
            metrics::gauge!("dartmouth_sfu_publisher_policed_packets", &labels).set(3.0);
        });
        let before = exporter.render();
        assert!(before.contains("dartmouth_agent_capacity 6"), "{before}");
        assert!(
            before.contains("dartmouth_sfu_subscriber_rtt_seconds{peer=\"7\",room=\"demo\"}"),
            "{before}"
        );
        assert!(
            before.contains("dartmouth_sfu_publisher_policed_packets{"),
            "{before}"
        );

        std::thread::sleep(Duration::from_millis(400));
        let after = exporter.render();
        assert!(after.contains("dartmouth_agent_capacity 6"), "{after}");
        assert!(!after.contains("peer=\"7\""), "{after}");
    }

    #[test]
    fn a_connected_peer_republished_every_tick_stays() {
        let (recorder, exporter) = split_recorder(Duration::from_millis(300));
        let labels = [("peer", "8".to_string()), ("room", "demo".to_string())];
        for tick in 0..6 {
            metrics::with_local_recorder(&recorder, || {
                metrics::gauge!("dartmouth_sfu_subscriber_packets_lost", &labels).set(tick as f64);
            });
            std::thread::sleep(Duration::from_millis(100));
        }
        let text = exporter.render();
        assert!(
            text.contains("dartmouth_sfu_subscriber_packets_lost{peer=\"8\",room=\"demo\"} 5"),
            "{text}"
        );
    }
}
