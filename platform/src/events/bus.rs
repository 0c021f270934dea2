//! The bus itself: a tokio broadcast channel in-process, or NATS JetStream.

use super::{EVENT_BUS_CAPACITY, Event, check_pattern, topic_matches};
use crate::error::PlatformError;
use async_nats::jetstream;
use futures_util::StreamExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::broadcast;

/// Subject prefix of events on NATS: topic `a.b` is subject `dartmouth.events.a.b`.
const SUBJECT_PREFIX: &str = "dartmouth.events";
/// The JetStream stream holding events.
const STREAM_NAME: &str = "DARTMOUTH_EVENTS";
/// Events the JetStream stream keeps (oldest discarded beyond).
const STREAM_MAX_MESSAGES: i64 = 1_000_000;

/// Publishes events and hands out subscriptions. Cheap to clone.
#[derive(Clone)]
pub struct EventBus {
    backend: Backend,
    published: Arc<AtomicU64>,
    lagged: Arc<AtomicU64>,
}

#[derive(Clone)]
enum Backend {
    Local(broadcast::Sender<Arc<Event>>),
    Nats(Box<NatsBackend>),
}

#[derive(Clone)]
struct NatsBackend {
    client: async_nats::Client,
    jetstream: jetstream::Context,
}

impl std::fmt::Debug for EventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBus")
            .field("backend", &self.backend_name())
            .finish_non_exhaustive()
    }
}

fn bus_error(e: impl std::fmt::Display) -> PlatformError {
    PlatformError::Transport(format!("event bus: {e}"))
}

impl EventBus {
    /// The in-process bus.
    pub fn local() -> EventBus {
        let (sender, _) = broadcast::channel(EVENT_BUS_CAPACITY);
        EventBus {
            backend: Backend::Local(sender),
            published: Arc::default(),
            lagged: Arc::default(),
        }
    }

    /// Connects to NATS at `url` and makes sure the JetStream stream of events exists.
    pub async fn nats(url: &str) -> Result<EventBus, PlatformError> {
        let client = async_nats::connect(url).await.map_err(bus_error)?;
        let jetstream = jetstream::new(client.clone());
        jetstream
            .get_or_create_stream(jetstream::stream::Config {
                name: STREAM_NAME.into(),
                subjects: vec![format!("{SUBJECT_PREFIX}.>")],
                max_messages: STREAM_MAX_MESSAGES,
                ..Default::default()
            })
            .await
            .map_err(bus_error)?;
        Ok(EventBus {
            backend: Backend::Nats(Box::new(NatsBackend { client, jetstream })),
            published: Arc::default(),
            lagged: Arc::default(),
        })
    }

    /// `local` or `nats`.
    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Local(_) => "local",
            Backend::Nats(_) => "nats",
        }
    }

    /// Events published through this handle.
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }

    /// Events local subscribers lost by falling behind.
    pub fn lagged(&self) -> u64 {
        self.lagged.load(Ordering::Relaxed)
    }

    /// Puts an event on the bus (NATS: waits for JetStream's acknowledgement).
    pub async fn publish(&self, event: &Event) -> Result<(), PlatformError> {
        match &self.backend {
            Backend::Local(sender) => {
                // No subscriber is not an error.
                let _ = sender.send(Arc::new(event.clone()));
            }
            Backend::Nats(nats) => {
                let jetstream = &nats.jetstream;
                let payload = serde_json::to_vec(event).map_err(bus_error)?;
                jetstream
                    .publish(format!("{SUBJECT_PREFIX}.{}", event.topic), payload.into())
                    .await
                    .map_err(bus_error)?
                    .await
                    .map_err(bus_error)?;
            }
        }
        self.published.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// A live subscription to topics matching `pattern` (events published from now on).
    pub async fn subscribe(&self, pattern: &str) -> Result<Subscription, PlatformError> {
        check_pattern(pattern).map_err(PlatformError::Config)?;
        Ok(match &self.backend {
            Backend::Local(sender) => Subscription::Local {
                receiver: sender.subscribe(),
                pattern: pattern.to_string(),
                lagged: self.lagged.clone(),
            },
            Backend::Nats(nats) => Subscription::Nats(
                nats.client
                    .subscribe(format!("{SUBJECT_PREFIX}.{pattern}"))
                    .await
                    .map_err(bus_error)?,
            ),
        })
    }

    /// A durable subscription named `name`: with NATS, a JetStream consumer that resumes where
    /// it stopped (across restarts and nodes) and redelivers events not acknowledged; in-process,
    /// a live subscription whose acknowledgements do nothing.
    pub async fn durable(
        &self,
        name: &str,
        pattern: &str,
    ) -> Result<DurableSubscription, PlatformError> {
        check_pattern(pattern).map_err(PlatformError::Config)?;
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            || name.is_empty()
        {
            return Err(PlatformError::Config(format!(
                "consumer name {name:?}: letters, digits, _ and - only"
            )));
        }
        match &self.backend {
            Backend::Local(_) => Ok(DurableSubscription::Local(
                Box::pin(self.subscribe(pattern)).await?,
            )),
            Backend::Nats(nats) => {
                let stream = nats
                    .jetstream
                    .get_stream(STREAM_NAME)
                    .await
                    .map_err(bus_error)?;
                let consumer = stream
                    .get_or_create_consumer(
                        name,
                        jetstream::consumer::pull::Config {
                            durable_name: Some(name.to_string()),
                            filter_subject: format!("{SUBJECT_PREFIX}.{pattern}"),
                            ack_policy: jetstream::consumer::AckPolicy::Explicit,
                            ..Default::default()
                        },
                    )
                    .await
                    .map_err(bus_error)?;
                let messages = consumer.messages().await.map_err(bus_error)?;
                Ok(DurableSubscription::Nats(Box::new(messages)))
            }
        }
    }
}

/// A live stream of events matching a pattern.
pub enum Subscription {
    /// In-process.
    Local {
        /// The broadcast receiver.
        receiver: broadcast::Receiver<Arc<Event>>,
        /// The topic pattern.
        pattern: String,
        /// Shared lag counter.
        lagged: Arc<AtomicU64>,
    },
    /// A core NATS subscription.
    Nats(async_nats::Subscriber),
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Subscription")
    }
}

impl Subscription {
    /// The next matching event; `None` when the bus is gone.
    pub async fn next(&mut self) -> Option<Event> {
        match self {
            Subscription::Local {
                receiver,
                pattern,
                lagged,
            } => loop {
                match receiver.recv().await {
                    Ok(event) if topic_matches(pattern, &event.topic) => {
                        return Some((*event).clone());
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        lagged.fetch_add(n, Ordering::Relaxed);
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            },
            Subscription::Nats(subscriber) => loop {
                let message = subscriber.next().await?;
                match serde_json::from_slice(&message.payload) {
                    Ok(event) => return Some(event),
                    Err(e) => tracing::warn!(error = %e, "unreadable event on NATS skipped"),
                }
            },
        }
    }
}

/// A durable stream of events; acknowledge each after handling it.
pub enum DurableSubscription {
    /// In-process (not durable across restarts).
    Local(Subscription),
    /// A JetStream pull consumer.
    Nats(Box<jetstream::consumer::pull::Stream>),
}

impl std::fmt::Debug for DurableSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DurableSubscription")
    }
}

/// Acknowledges one event of a [`DurableSubscription`].
pub struct Ack(Option<jetstream::Message>);

impl Ack {
    /// Marks the event handled: it will not be redelivered.
    pub async fn ack(self) -> Result<(), PlatformError> {
        match self.0 {
            Some(message) => message.ack().await.map_err(bus_error),
            None => Ok(()),
        }
    }
}

impl DurableSubscription {
    /// The next event and its acknowledgement; `None` when the bus is gone.
    pub async fn next(&mut self) -> Option<(Event, Ack)> {
        match self {
            DurableSubscription::Local(sub) => sub.next().await.map(|e| (e, Ack(None))),
            DurableSubscription::Nats(messages) => loop {
                let message = match messages.next().await? {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(error = %e, "JetStream consumer error");
                        continue;
                    }
                };
                match serde_json::from_slice::<Event>(&message.payload) {
                    Ok(event) => return Some((event, Ack(Some(message)))),
                    Err(e) => {
                        tracing::warn!(error = %e, "unreadable event on JetStream acknowledged and skipped");
                        let _ = message.ack().await;
                    }
                }
            },
        }
    }
}
