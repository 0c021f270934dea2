//! The media core's figures on `/metrics` (Prometheus through the `metrics` facade), published
//! once a second by the driver, never per packet.

use std::sync::Arc;

use crate::core::{CoreCounters, PeerId, PeerStats};

/// Name prefixes of the series labelled by peer and room. They are re-published every second while
/// the peer exists and never after it leaves, so an exporter should forget them once idle (the
/// gateway's does); otherwise every peer that ever joined stays on `/metrics` for good.
pub const PER_PEER_METRIC_PREFIXES: &[&str] =
    &["dartmouth_sfu_subscriber_", "dartmouth_sfu_publisher_"];

/// Publishes the core's counters and every peer's RTCP statistics.
pub(crate) fn publish<'a>(
    counters: &CoreCounters,
    peers: impl Iterator<Item = (PeerId, &'a Arc<str>, &'a PeerStats)>,
) {
    metrics::counter!("dartmouth_sfu_received_packets_total").absolute(counters.received);
    metrics::counter!("dartmouth_sfu_forwarded_packets_total").absolute(counters.forwarded);
    metrics::counter!("dartmouth_sfu_policed_packets_total").absolute(counters.policed);
    metrics::counter!("dartmouth_sfu_malformed_packets_total").absolute(counters.malformed);
    metrics::counter!("dartmouth_sfu_unclaimed_datagrams_total").absolute(counters.unclaimed);
    metrics::counter!("dartmouth_sfu_dropped_events_total").absolute(counters.dropped_events);
    metrics::counter!("dartmouth_sfu_timer_wakes_total").absolute(counters.timer_wakes);
    metrics::counter!("dartmouth_sfu_peer_polls_total").absolute(counters.peer_polls);
    for (peer, room, stats) in peers {
        let labels = [("peer", peer.to_string()), ("room", room.to_string())];
        if let Some(rtt) = stats.rtt {
            metrics::gauge!("dartmouth_sfu_subscriber_rtt_seconds", &labels).set(rtt.as_secs_f64());
        }
        if let Some(jitter) = stats.jitter {
            metrics::gauge!("dartmouth_sfu_subscriber_jitter_seconds", &labels)
                .set(jitter.as_secs_f64());
        }
        if let Some(lost) = stats.fraction_lost {
            metrics::gauge!("dartmouth_sfu_subscriber_fraction_lost", &labels).set(f64::from(lost));
        }
        metrics::gauge!("dartmouth_sfu_subscriber_packets_lost", &labels)
            .set(stats.packets_lost as f64);
        metrics::gauge!("dartmouth_sfu_publisher_policed_packets", &labels)
            .set(stats.policed as f64);
    }
}

/// Registers descriptions of the media metrics.
pub fn describe() {
    metrics::describe_counter!(
        "dartmouth_sfu_forwarded_packets_total",
        "RTP packets the SFU wrote to subscribers"
    );
    metrics::describe_counter!(
        "dartmouth_sfu_policed_packets_total",
        "publisher packets dropped for exceeding the configured rate"
    );
    metrics::describe_counter!(
        "dartmouth_sfu_malformed_packets_total",
        "datagrams and RTP packets dropped as malformed"
    );
    metrics::describe_counter!(
        "dartmouth_sfu_timer_wakes_total",
        "times the media thread woke for a timer (RTCP, pacing, ICE, speaker ranking)"
    );
    metrics::describe_counter!(
        "dartmouth_sfu_peer_polls_total",
        "WebRTC peers polled for output (only peers with new input are polled)"
    );
    metrics::describe_gauge!(
        "dartmouth_sfu_subscriber_jitter_seconds",
        "interarrival jitter a subscriber reports for the audio it receives (RTCP)"
    );
    metrics::describe_gauge!(
        "dartmouth_sfu_subscriber_rtt_seconds",
        "round-trip time to a subscriber (RTCP or ICE)"
    );
}
