//! Tools the gateway gives a voice agent whose language model can call functions: `ask_agent`
//! sends a question to another agent registered with the platform sidecar (agent-to-agent
//! messages over its event bus) and hands the model the reply — a support agent asking the
//! order agent, say. An agent on a phone call also gets the call's `send_digits` and
//! `transfer_call` ([`dartmouth_signaling::sip::CallTools`]); [`ToolSet`] offers several sets as one.

use std::sync::Arc;

use dartmouth_platform::client::PlatformClient;
use dartmouth_voice::knowledge::{AgentTools, ToolEvent};
use dartmouth_voice::provider::{
    CancellationToken, EventStream, ToolCall, ToolSpec, event_channel,
};
use serde_json::json;

/// How long the asking agent waits for the other agent's reply.
pub const ASK_AGENT_TIMEOUT_MS: i64 = 8_000;
/// The tool's name, as the model calls it.
pub const ASK_AGENT: &str = "ask_agent";

/// `ask_agent` for the agent named `me`.
pub struct AskAgent {
    client: PlatformClient,
    me: String,
}

impl AskAgent {
    /// The tool for agent `me`, reaching the sidecar through `client`.
    pub fn new(client: PlatformClient, me: &str) -> Self {
        Self {
            client,
            me: me.to_string(),
        }
    }
}

/// The `agent` and `question` of a call, or why they are unusable.
fn arguments(call: &ToolCall) -> Result<(String, String), String> {
    let value: serde_json::Value = serde_json::from_str(&call.arguments)
        .map_err(|e| format!("arguments are not JSON: {e}"))?;
    let field = |name: &str| {
        value[name]
            .as_str()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .ok_or_else(|| format!("`{name}` (a non-empty string) is required"))
    };
    Ok((field("agent")?, field("question")?))
}

impl AgentTools for AskAgent {
    fn specs(&self) -> Vec<ToolSpec> {
        vec![ToolSpec {
            name: ASK_AGENT.into(),
            description: "Ask another agent of this platform a question (for what it knows or does: orders, billing, …) and get its answer.".into(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "agent": {"type": "string", "description": "The other agent's name"},
                    "question": {"type": "string", "description": "What to ask it"}
                },
                "required": ["agent", "question"]
            }),
        }]
    }

    fn call(&self, call: ToolCall, cancel: CancellationToken) -> EventStream<ToolEvent> {
        let (tx, rx) = event_channel();
        let (client, me) = (self.client.clone(), self.me.clone());
        tokio::spawn(async move {
            let event = match arguments(&call) {
                Err(e) => ToolEvent::Error(e),
                Ok((agent, _)) if agent == me => {
                    ToolEvent::Error("an agent cannot ask itself".into())
                }
                Ok((agent, question)) => {
                    let body = json!({"question": question, "from": me});
                    let asked = tokio::select! {
                        _ = cancel.cancelled() => return,
                        r = client.send_message(&agent, body, ASK_AGENT_TIMEOUT_MS) => r,
                    };
                    match asked {
                        Ok(outcome) => ToolEvent::Output(
                            outcome.reply.map(|r| r.to_string()).unwrap_or_default(),
                        ),
                        Err(e) => ToolEvent::Error(format!("{agent} did not answer: {e}")),
                    }
                }
            };
            let _ = tx.send(event).await;
        });
        rx
    }
}

/// Several sets of tools offered as one: the model sees every function, each call goes to the
/// set that offers it.
pub struct ToolSet {
    sets: Vec<Arc<dyn AgentTools>>,
}

impl ToolSet {
    /// `sets` as one set of tools (`None` when there is none).
    pub fn combine(mut sets: Vec<Arc<dyn AgentTools>>) -> Option<Arc<dyn AgentTools>> {
        match sets.len() {
            0 => None,
            1 => sets.pop(),
            _ => Some(Arc::new(Self { sets })),
        }
    }
}

impl AgentTools for ToolSet {
    fn specs(&self) -> Vec<ToolSpec> {
        self.sets.iter().flat_map(|s| s.specs()).collect()
    }

    fn call(&self, call: ToolCall, cancel: CancellationToken) -> EventStream<ToolEvent> {
        let owner = self
            .sets
            .iter()
            .find(|s| s.specs().iter().any(|spec| spec.name == call.name));
        match owner {
            Some(set) => set.call(call, cancel),
            None => {
                let (tx, rx) = event_channel();
                let _ = tx.try_send(ToolEvent::Error(format!("no tool named {:?}", call.name)));
                rx
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_sidecar::TestSidecar;
    use dartmouth_platform::registry::routes::RegisterAgent;
    use std::time::Duration;

    fn call(arguments: &str) -> ToolCall {
        ToolCall {
            id: "c1".into(),
            name: ASK_AGENT.into(),
            arguments: arguments.into(),
        }
    }

    #[test]
    fn arguments_need_an_agent_and_a_question() {
        assert_eq!(
            arguments(&call(r#"{"agent": "orders", "question": "Where is 42?"}"#)),
            Ok(("orders".into(), "Where is 42?".into()))
        );
        assert!(
            arguments(&call("not json"))
                .unwrap_err()
                .contains("not JSON")
        );
        assert!(
            arguments(&call(r#"{"agent": " ", "question": "q"}"#))
                .unwrap_err()
                .contains("`agent`")
        );
        assert!(
            arguments(&call(r#"{"agent": "orders"}"#))
                .unwrap_err()
                .contains("`question`")
        );
    }

    /// A set with one function that answers with its own name.
    struct Named(&'static str);

    impl AgentTools for Named {
        fn specs(&self) -> Vec<ToolSpec> {
            vec![ToolSpec {
                name: self.0.into(),
                description: String::new(),
                parameters: json!({"type": "object"}),
            }]
        }

        fn call(&self, _call: ToolCall, _cancel: CancellationToken) -> EventStream<ToolEvent> {
            let (tx, rx) = event_channel();
            let _ = tx.try_send(ToolEvent::Output(self.0.into()));
            rx
        }
    }

    #[tokio::test]
    async fn a_tool_set_routes_each_call_to_the_set_that_offers_it() {
        assert!(ToolSet::combine(Vec::new()).is_none());
        let set = ToolSet::combine(vec![Arc::new(Named("one")), Arc::new(Named("two"))])
            .expect("two sets");
        let names: Vec<String> = set.specs().into_iter().map(|s| s.name).collect();
        assert_eq!(names, ["one", "two"]);
        for name in ["two", "one"] {
            let mut call_it = call("{}");
            call_it.name = name.into();
            let mut events = set.call(call_it, CancellationToken::new());
            assert_eq!(events.recv().await, Some(ToolEvent::Output(name.into())));
        }
        let mut unknown = call("{}");
        unknown.name = "three".into();
        let mut events = set.call(unknown, CancellationToken::new());
        assert!(matches!(events.recv().await, Some(ToolEvent::Error(e)) if e.contains("three")));
    }

    async fn ask(tool: &AskAgent, arguments: &str) -> ToolEvent {
        let mut events = tool.call(call(arguments), CancellationToken::new());
        events.recv().await.expect("the tool answers")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ask_agent_brings_back_the_other_agents_reply_through_the_sidecar() {
        let sidecar = TestSidecar::start("ask-agent").await;
        let client = &sidecar.client;
        client
            .register_agent(&RegisterAgent {
                name: "orders".into(),
                capabilities: vec!["orders".into()],
                endpoint: "http://127.0.0.1:9/orders".into(),
                version: String::new(),
                heartbeat_interval_ms: Some(60_000),
                capacity: None,
            })
            .await
            .expect("registering the order agent");
        // The order agent: reads its requests from the event store and answers.
        let orders = {
            let client = client.clone();
            tokio::spawn(async move {
                for _ in 0..400 {
                    let requests = client
                        .list_events("a2a.request.orders", None, 10)
                        .await
                        .unwrap();
                    if let Some(request) = requests.first() {
                        let id = request.data["id"].as_str().unwrap();
                        assert_eq!(request.data["body"]["from"], "support");
                        let question = request.data["body"]["question"].as_str().unwrap();
                        let status = format!("{question}: shipped yesterday");
                        client
                            .reply_message(id, json!({ "status": status }))
                            .await
                            .unwrap();
                        return true;
                    }
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
                false
            })
        };
        let tool = AskAgent::new(client.clone(), "support");
        let answered = ask(&tool, r#"{"agent": "orders", "question": "order 42"}"#).await;
        assert_eq!(
            answered,
            ToolEvent::Output(r#"{"status":"order 42: shipped yesterday"}"#.into())
        );
        assert!(orders.await.unwrap(), "the order agent saw the question");

        let ToolEvent::Error(unknown) =
            ask(&tool, r#"{"agent": "nobody", "question": "hi"}"#).await
        else {
            panic!("asking an unknown agent must fail");
        };
        assert!(unknown.contains("no agent named nobody"), "{unknown}");
        let ToolEvent::Error(myself) =
            ask(&tool, r#"{"agent": "support", "question": "hi"}"#).await
        else {
            panic!("asking oneself must fail");
        };
        assert!(myself.contains("itself"), "{myself}");
    }
}
