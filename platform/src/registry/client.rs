//! The registry's methods of the typed sidecar client.

use super::Strategy;
use super::messages::{MessageOutcome, ReplyMessage, SendMessage};
use super::routes::{Heartbeat, RegisterAgent, RegisteredAgent, RouteRequest};
use crate::client::{PlatformClient, segment};
use crate::error::PlatformError;
use reqwest::Method;

impl PlatformClient {
    /// Registers an agent instance (again: refreshes the one with the same name and endpoint).
    pub async fn register_agent(
        &self,
        request: &RegisterAgent,
    ) -> Result<RegisteredAgent, PlatformError> {
        self.post("/v1/registry/agents", request).await
    }

    /// Tells the registry the instance is alive, with its load.
    pub async fn heartbeat_agent(
        &self,
        id: &str,
        beat: &Heartbeat,
    ) -> Result<RegisteredAgent, PlatformError> {
        self.post(
            &format!("/v1/registry/agents/{}/heartbeat", segment(id)),
            beat,
        )
        .await
    }

    /// Registered instances with `capability` (all when `None`) and their health.
    pub async fn discover_agents(
        &self,
        capability: Option<&str>,
    ) -> Result<Vec<RegisteredAgent>, PlatformError> {
        let path = match capability {
            Some(c) => format!("/v1/registry/agents?capability={}", segment(c)),
            None => "/v1/registry/agents".to_string(),
        };
        self.send(self.request(Method::GET, &path)).await
    }

    /// The instance a request for `capability` should go to.
    pub async fn route_to_agent(
        &self,
        capability: &str,
        strategy: Strategy,
    ) -> Result<RegisteredAgent, PlatformError> {
        self.post(
            "/v1/registry/route",
            &RouteRequest {
                capability: capability.into(),
                strategy,
            },
        )
        .await
    }

    /// Removes an instance from the registry.
    pub async fn deregister_agent(&self, id: &str) -> Result<(), PlatformError> {
        self.send_empty(self.request(
            Method::DELETE,
            &format!("/v1/registry/agents/{}", segment(id)),
        ))
        .await
    }

    /// Sends `body` to agent `to`; with `reply_timeout_ms` > 0 waits that long for its reply
    /// (`MessageOutcome::reply`), else returns once the message is on the bus.
    pub async fn send_message(
        &self,
        to: &str,
        body: serde_json::Value,
        reply_timeout_ms: i64,
    ) -> Result<MessageOutcome, PlatformError> {
        self.post(
            "/v1/messages",
            &SendMessage {
                to: to.into(),
                body,
                reply_timeout_ms,
            },
        )
        .await
    }

    /// Answers message `id` (addressed to this credential's agent).
    pub async fn reply_message(
        &self,
        id: &str,
        body: serde_json::Value,
    ) -> Result<(), PlatformError> {
        self.send_empty(
            self.request(Method::POST, &format!("/v1/messages/{}/reply", segment(id)))
                .json(&ReplyMessage { body }),
        )
        .await
    }
}
