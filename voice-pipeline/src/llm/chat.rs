//! Chat messages and the ChatML prompt layout SmolLM2 was tuned on.
//!
//! The GGUF's `tokenizer.chat_template` renders each message as
//! `<|im_start|>{role}\n{content}<|im_end|>\n`, inserts a default system message when the
//! conversation does not start with one, and ends with `<|im_start|>assistant\n` so the model
//! writes the assistant's turn. [`render_chatml`] produces that text; the embedded model builds
//! the same layout directly as token ids (see `EmbeddedLlm::prompt_tokens`).

use std::fmt;

use crate::provider::ToolCall;

/// The system prompt SmolLM2's template inserts when a conversation has none.
pub const DEFAULT_SYSTEM_PROMPT: &str =
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face";

/// ChatML marker that opens a message.
pub const IM_START: &str = "<|im_start|>";
/// ChatML marker that closes a message (and the assistant's turn).
pub const IM_END: &str = "<|im_end|>";

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Instructions and context for the assistant.
    System,
    /// The person talking to the agent.
    User,
    /// The agent.
    Assistant,
    /// The result of a tool call the assistant asked for ([`ChatMessage::tool_call_id`] names
    /// the call).
    Tool,
}

impl Role {
    /// The role's name in the chat template.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    /// Who wrote it.
    pub role: Role,
    /// What was said (for a tool message: the result, usually JSON text).
    pub content: String,
    /// Calls the assistant asked for in this message (assistant messages only).
    pub tool_calls: Vec<ToolCall>,
    /// The call this message answers (tool messages only).
    pub tool_call_id: Option<String>,
}

impl ChatMessage {
    /// A message from `role`.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }
    }

    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        Self::new(Role::System, content)
    }

    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::new(Role::User, content)
    }

    /// An assistant message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new(Role::Assistant, content)
    }

    /// An assistant message that asks for tool calls (with any text said alongside).
    pub fn assistant_tool_calls(content: impl Into<String>, calls: Vec<ToolCall>) -> Self {
        Self {
            tool_calls: calls,
            ..Self::new(Role::Assistant, content)
        }
    }

    /// The result of the tool call `call_id`, to send back to the model.
    pub fn tool_result(call_id: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            tool_call_id: Some(call_id.into()),
            ..Self::new(Role::Tool, content)
        }
    }
}

/// The messages the template renders: the conversation, preceded by the default system message
/// when it does not start with a system message. An empty conversation stays empty.
pub fn with_default_system(messages: &[ChatMessage]) -> Vec<ChatMessage> {
    let mut out = Vec::with_capacity(messages.len() + 1);
    if messages.first().is_some_and(|m| m.role != Role::System) {
        out.push(ChatMessage::system(DEFAULT_SYSTEM_PROMPT));
    }
    out.extend_from_slice(messages);
    out
}

/// The ChatML text of a conversation, ending with the assistant's generation prompt.
pub fn render_chatml(messages: &[ChatMessage]) -> String {
    let mut text = String::new();
    for m in with_default_system(messages) {
        text.push_str(IM_START);
        text.push_str(m.role.as_str());
        text.push('\n');
        text.push_str(&m.content);
        text.push_str(IM_END);
        text.push('\n');
    }
    text.push_str(IM_START);
    text.push_str("assistant\n");
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_template_with_a_default_system_message() {
        let text = render_chatml(&[ChatMessage::user("Hi")]);
        assert_eq!(
            text,
            format!(
                "<|im_start|>system\n{DEFAULT_SYSTEM_PROMPT}<|im_end|>\n\
                 <|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
            )
        );
    }

    #[test]
    fn keeps_an_explicit_system_message() {
        let text = render_chatml(&[
            ChatMessage::system("Be brief."),
            ChatMessage::user("Hi"),
            ChatMessage::assistant("Hello!"),
            ChatMessage::user("Bye"),
        ]);
        assert_eq!(
            text,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n\
             <|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n\
             <|im_start|>assistant\n"
        );
    }

    #[test]
    fn an_empty_conversation_is_only_the_generation_prompt() {
        assert_eq!(render_chatml(&[]), "<|im_start|>assistant\n");
    }
}
