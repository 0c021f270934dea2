//! The conversation: the messages an agent's LLM sees, kept bounded, with the assistant's
//! interrupted answers truncated to what the listener actually heard.

use crate::frame::TurnId;
use crate::llm::{ChatMessage, Role};

/// Messages kept besides the system prompt; older ones are dropped first.
pub const MAX_HISTORY_MESSAGES: usize = 64;

/// One conversation between a person and an agent.
#[derive(Debug, Clone, PartialEq)]
pub struct Conversation {
    system_prompt: String,
    messages: Vec<(TurnId, ChatMessage)>,
}

impl Conversation {
    /// A conversation steered by `system_prompt` (empty for none).
    pub fn new(system_prompt: impl Into<String>) -> Self {
        Self {
            system_prompt: system_prompt.into(),
            messages: Vec::new(),
        }
    }

    /// Steers the rest of the conversation with `system_prompt` (a handoff to another agent:
    /// the history stays).
    pub fn set_system_prompt(&mut self, system_prompt: impl Into<String>) {
        self.system_prompt = system_prompt.into();
    }

    /// Records what the person said in `turn`.
    pub fn push_user(&mut self, turn: TurnId, text: impl Into<String>) {
        self.push(turn, ChatMessage::user(text));
    }

    /// Records the agent's answer for `turn` (as generated, or as heard when interrupted).
    pub fn push_assistant(&mut self, turn: TurnId, text: impl Into<String>) {
        self.push(turn, ChatMessage::assistant(text));
    }

    fn push(&mut self, turn: TurnId, message: ChatMessage) {
        self.messages.push((turn, message));
        if self.messages.len() > MAX_HISTORY_MESSAGES {
            let excess = self.messages.len() - MAX_HISTORY_MESSAGES;
            self.messages.drain(..excess);
        }
    }

    /// Replaces the assistant's answer for `turn` with `heard` (what the listener heard before
    /// barging in); an empty `heard` removes the answer. Returns whether an answer was found.
    pub fn truncate_assistant(&mut self, turn: TurnId, heard: &str) -> bool {
        let found = self
            .messages
            .iter()
            .rposition(|(t, m)| *t == turn && m.role == Role::Assistant);
        match found {
            Some(index) if heard.trim().is_empty() => {
                self.messages.remove(index);
                true
            }
            Some(index) => {
                self.messages[index].1.content = heard.trim().to_string();
                true
            }
            None => false,
        }
    }

    /// The messages to send to an LLM: the system prompt, then the history.
    pub fn to_messages(&self) -> Vec<ChatMessage> {
        let system = (!self.system_prompt.is_empty())
            .then(|| ChatMessage::system(self.system_prompt.clone()));
        system
            .into_iter()
            .chain(self.messages.iter().map(|(_, m)| m.clone()))
            .collect()
    }

    /// The last message, if any.
    pub fn last(&self) -> Option<&ChatMessage> {
        self.messages.last().map(|(_, m)| m)
    }

    /// The history without the system prompt.
    pub fn history(&self) -> impl Iterator<Item = &ChatMessage> {
        self.messages.iter().map(|(_, m)| m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_start_with_the_system_prompt() {
        let mut conversation = Conversation::new("Be brief.");
        conversation.push_user(TurnId(1), "Hi");
        conversation.push_assistant(TurnId(1), "Hello!");
        let messages = conversation.to_messages();
        assert_eq!(messages[0], ChatMessage::system("Be brief."));
        assert_eq!(messages.len(), 3);
    }

    #[test]
    fn an_interrupted_answer_keeps_only_what_was_heard() {
        let mut conversation = Conversation::new("");
        conversation.push_user(TurnId(1), "Tell me a story");
        conversation.push_assistant(TurnId(1), "Once upon a time there was a dragon. It slept.");
        assert!(conversation.truncate_assistant(TurnId(1), "Once upon a time"));
        assert_eq!(conversation.last().unwrap().content, "Once upon a time");
        assert!(conversation.truncate_assistant(TurnId(1), ""));
        assert_eq!(
            conversation.last().unwrap().role,
            Role::User,
            "nothing heard, nothing said"
        );
        assert!(!conversation.truncate_assistant(TurnId(9), "x"));
    }

    #[test]
    fn history_is_bounded() {
        let mut conversation = Conversation::new("system");
        for i in 0..(MAX_HISTORY_MESSAGES as u64 * 2) {
            conversation.push_user(TurnId(i), format!("message {i}"));
        }
        let messages = conversation.to_messages();
        assert_eq!(messages.len(), MAX_HISTORY_MESSAGES + 1);
        assert_eq!(messages[0].role, Role::System);
        assert_eq!(
            messages.last().unwrap().content,
            format!("message {}", MAX_HISTORY_MESSAGES * 2 - 1)
        );
    }
}
