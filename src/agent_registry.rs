//! The gateway's agents in the sidecar's agent registry: each configured agent is registered as
//! an instance (capabilities: its name and `voice`; endpoint: the gateway's WebSocket signaling)
//! and heartbeats with the machine's admission state — sessions running, capacity, and
//! `degraded` while new sessions are refused. An instance the registry lost (a sidecar on a new
//! database) is registered again; the instances are removed when the gateway stops.

use std::time::Duration;

use dartmouth_platform::PlatformError;
use dartmouth_platform::client::PlatformClient;
use dartmouth_platform::registry::routes::{Heartbeat, RegisterAgent};
use dartmouth_signaling::agent::SharedAgentFactory;
use tokio::sync::watch;

/// How often the gateway heartbeats (the registry calls an instance down after three misses).
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);
/// How long removing the instances may hold up shutdown.
const DEREGISTER_LIMIT: Duration = Duration::from_secs(2);

/// Registers `agents` reachable at `endpoint` and heartbeats until `stop` turns true; the task is
/// owned by the returned handle's holder (it also ends by itself on stop).
pub fn announce(
    client: PlatformClient,
    agents: SharedAgentFactory,
    endpoint: String,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let names: Vec<String> = agents.agents().into_iter().map(|a| a.name).collect();
        // One id per agent once registered.
        let mut ids: Vec<Option<String>> = vec![None; names.len()];
        loop {
            let admission = agents.capacity();
            let (active, capacity, accepting) = admission
                .map(|a| (a.active as i64, a.capacity.max(1) as i64, a.accepting))
                .unwrap_or((0, 1, true));
            for (name, id) in names.iter().zip(ids.iter_mut()) {
                let beat = Heartbeat {
                    active: Some(active),
                    degraded: !accepting,
                };
                let alive = match id {
                    Some(known) => match client.heartbeat_agent(known, &beat).await {
                        Ok(_) => true,
                        Err(PlatformError::Api { status: 404, .. }) => false,
                        Err(e) => {
                            tracing::debug!(error = %e, agent = %name, "registry heartbeat failed");
                            true
                        }
                    },
                    None => false,
                };
                if alive {
                    continue;
                }
                let registration = RegisterAgent {
                    name: name.clone(),
                    capabilities: vec![name.clone(), "voice".into()],
                    endpoint: endpoint.clone(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    heartbeat_interval_ms: Some(HEARTBEAT_INTERVAL.as_millis() as i64),
                    capacity: Some(capacity),
                };
                match client.register_agent(&registration).await {
                    Ok(instance) => {
                        tracing::info!(agent = %name, id = %instance.id, "registered in the platform's agent registry");
                        *id = Some(instance.id);
                        // The registration stands for the first heartbeat; report the load now.
                        if let Some(known) = id.as_deref() {
                            let _ = client.heartbeat_agent(known, &beat).await;
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, agent = %name, "registry registration failed");
                    }
                }
            }
            tokio::select! {
                _ = stop.wait_for(|s| *s) => break,
                _ = tokio::time::sleep(HEARTBEAT_INTERVAL) => {}
            }
        }
        let removals = async {
            for id in ids.iter().flatten() {
                let _ = client.deregister_agent(id).await;
            }
        };
        let _ = tokio::time::timeout(DEREGISTER_LIMIT, removals).await;
    })
}
