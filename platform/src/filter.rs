//! Content filter on user input and LLM output: blocklisted words, regular expressions, PII, and
//! embedding similarity to example sentences of harmful categories. Each rule has an action —
//! block, redact or flag — and every action taken is written to the audit log. Also serves
//! `/v1/moderations` in the OpenAI shape.

use crate::error::ApiError;
use crate::state::AppState;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// What a rule does when it matches.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Record only.
    Flag,
    /// Replace the matched text.
    Redact,
    /// Refuse the text.
    Block,
}

/// A named regular-expression rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatternRule {
    /// Its name in the audit log.
    pub name: String,
    /// The expression (Rust `regex` syntax).
    pub regex: String,
    /// What to do.
    pub action: Action,
}

/// Settings of the content filter (`[platform.filter]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FilterConfig {
    /// Filter chat input and output. Default true.
    pub enabled: bool,
    /// Words or phrases (case-insensitive, whole words).
    pub blocklist: Vec<String>,
    /// Action of the blocklist. Default block.
    pub blocklist_action: Action,
    /// Regular-expression rules.
    pub patterns: Vec<PatternRule>,
    /// Action on emails, phone and card numbers. Default flag.
    pub pii_action: Action,
    /// Similarity to a harmful example above which a text is in that category. Default 0.6.
    pub harmful_threshold: f32,
    /// Action on harmful categories. Default block.
    pub harmful_action: Action,
}

impl Default for FilterConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            blocklist: Vec::new(),
            blocklist_action: Action::Block,
            patterns: Vec::new(),
            pii_action: Action::Flag,
            harmful_threshold: 0.6,
            harmful_action: Action::Block,
        }
    }
}

/// Example sentences per harmful category (OpenAI moderation names).
const HARMFUL: &[(&str, &[&str])] = &[
    (
        "violence",
        &[
            "I am going to kill you",
            "I will hurt you badly",
            "let's beat him until he bleeds",
            "how do I make a bomb to hurt people",
        ],
    ),
    (
        "self-harm",
        &[
            "I want to kill myself",
            "how can I end my life",
            "I am going to hurt myself tonight",
            "what is the best way to commit suicide",
        ],
    ),
    (
        "hate",
        &[
            "people of that race are vermin",
            "all immigrants are subhuman animals",
            "I hate them because of their religion, they should be wiped out",
        ],
    ),
    (
        "harassment",
        &[
            "you are a worthless idiot and everyone hates you",
            "shut up you stupid piece of trash",
        ],
    ),
    (
        "illicit",
        &[
            "how do I cook methamphetamine at home",
            "help me steal a credit card number",
            "how to launder money without getting caught",
        ],
    ),
];

/// The embedded harmful examples: (category, vector).
pub(crate) type HarmfulIndex = Vec<(&'static str, Vec<f32>)>;

/// One rule that matched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FilterMatch {
    /// `blocklist`, `pii`, a pattern's name, or a harmful category.
    pub rule: String,
    /// The action taken.
    pub action: Action,
    /// Similarity score for harmful categories.
    pub score: Option<f32>,
}

/// The filter's verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// The text to use (redacted where rules said so).
    pub text: String,
    /// Whether it must be refused.
    pub blocked: bool,
    /// Every rule that matched.
    pub matches: Vec<FilterMatch>,
    /// Similarity per harmful category.
    pub scores: Vec<(&'static str, f32)>,
}

/// Compiled rules.
#[derive(Debug)]
pub struct Filter {
    config: FilterConfig,
    blocklist: Option<regex::Regex>,
    patterns: Vec<(PatternRule, regex::Regex)>,
    harmful: tokio::sync::OnceCell<Arc<HarmfulIndex>>,
}

impl Filter {
    /// Compiles the configured rules.
    pub fn new(config: &FilterConfig) -> Result<Filter, crate::PlatformError> {
        let bad = |e: regex::Error| crate::PlatformError::Config(format!("filter: {e}"));
        let blocklist = if config.blocklist.is_empty() {
            None
        } else {
            let words: Vec<String> = config
                .blocklist
                .iter()
                .map(|w| regex::escape(w.trim()))
                .collect();
            Some(regex::Regex::new(&format!(r"(?i)\b(?:{})\b", words.join("|"))).map_err(bad)?)
        };
        let patterns = config
            .patterns
            .iter()
            .map(|p| Ok((p.clone(), regex::Regex::new(&p.regex).map_err(bad)?)))
            .collect::<Result<_, crate::PlatformError>>()?;
        Ok(Filter {
            config: config.clone(),
            blocklist,
            patterns,
            harmful: tokio::sync::OnceCell::new(),
        })
    }

    /// Whether chat traffic is filtered.
    pub fn enabled(&self) -> bool {
        self.config.enabled
    }

    async fn harmful_index(&self, state: &AppState) -> Result<Option<Arc<HarmfulIndex>>, ApiError> {
        let Some(embedder) = &state.embedder else {
            return Ok(None);
        };
        let index = self
            .harmful
            .get_or_try_init(|| async {
                let pairs: Vec<(&'static str, &'static str)> = HARMFUL
                    .iter()
                    .flat_map(|(c, ex)| ex.iter().map(move |e| (*c, *e)))
                    .collect();
                let vectors = embedder
                    .embed(pairs.iter().map(|(_, e)| e.to_string()).collect())
                    .await?;
                Ok::<_, crate::PlatformError>(Arc::new(
                    pairs
                        .into_iter()
                        .map(|(c, _)| c)
                        .zip(vectors)
                        .collect::<HarmfulIndex>(),
                ))
            })
            .await?;
        Ok(Some(index.clone()))
    }

    /// Checks `text`: applies redactions, decides blocking, lists matches.
    pub async fn check(&self, state: &AppState, text: &str) -> Result<Verdict, ApiError> {
        let mut out = text.to_string();
        let mut matches = Vec::new();
        let mut apply = |rule: &str,
                         action: Action,
                         found: bool,
                         out: &mut String,
                         redacted: &dyn Fn(&str) -> String| {
            if !found {
                return;
            }
            if action == Action::Redact {
                *out = redacted(out);
            }
            matches.push(FilterMatch {
                rule: rule.into(),
                action,
                score: None,
            });
        };
        if let Some(re) = &self.blocklist {
            let found = re.is_match(&out);
            apply(
                "blocklist",
                self.config.blocklist_action,
                found,
                &mut out,
                &|t| re.replace_all(t, "[blocked]").into_owned(),
            );
        }
        for (rule, re) in &self.patterns {
            let found = re.is_match(&out);
            apply(&rule.name, rule.action, found, &mut out, &|t| {
                re.replace_all(t, "[redacted]").into_owned()
            });
        }
        let redacted = crate::redact::redact_pii(&out);
        let pii = redacted != out;
        apply(
            "pii",
            self.config.pii_action,
            pii,
            &mut out,
            &crate::redact::redact_pii,
        );
        let mut scores = Vec::new();
        if let Some(index) = self.harmful_index(state).await?
            && !text.trim().is_empty()
        {
            let query = state.embedder()?.embed_one(text).await?;
            for (category, _) in HARMFUL {
                let best = index
                    .iter()
                    .filter(|(c, _)| c == category)
                    .map(|(_, v)| crate::embed::dot(v, &query))
                    .fold(f32::MIN, f32::max);
                scores.push((*category, best));
                if best >= self.config.harmful_threshold {
                    matches.push(FilterMatch {
                        rule: (*category).into(),
                        action: self.config.harmful_action,
                        score: Some(best),
                    });
                }
            }
        }
        let blocked = matches.iter().any(|m| m.action == Action::Block);
        Ok(Verdict {
            text: out,
            blocked,
            matches,
            scores,
        })
    }

    /// Checks `text` for a chat exchange (`stage`: `input` or `output`), auditing any action.
    pub async fn screen(
        &self,
        state: &AppState,
        actor: &str,
        stage: &str,
        text: &str,
    ) -> Result<Verdict, ApiError> {
        let verdict = self.check(state, text).await?;
        for m in &verdict.matches {
            let action = match m.action {
                Action::Block => "block",
                Action::Redact => "redact",
                Action::Flag => "flag",
            };
            state
                .audit(actor, &format!("filter.{action}"), stage, "ok", &m.rule)
                .await;
        }
        Ok(verdict)
    }
}

/// Every category name OpenAI's moderation answers with.
pub const MODERATION_CATEGORIES: &[&str] = &[
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/intent",
    "self-harm/instructions",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
];

/// A verdict as one OpenAI moderation result.
pub fn moderation_result(verdict: &Verdict) -> serde_json::Value {
    let mut categories = serde_json::Map::new();
    let mut scores = serde_json::Map::new();
    let mut applied = serde_json::Map::new();
    for name in MODERATION_CATEGORIES {
        let score = verdict
            .scores
            .iter()
            .find(|(c, _)| name.split('/').next() == Some(*c))
            .map_or(0.0, |(_, s)| s.max(0.0));
        let hit = verdict
            .matches
            .iter()
            .any(|m| name.split('/').next() == Some(m.rule.as_str()))
            && !name.contains('/');
        categories.insert((*name).into(), hit.into());
        scores.insert((*name).into(), serde_json::json!(score));
        applied.insert((*name).into(), serde_json::json!(["text"]));
    }
    let rules: Vec<&str> = verdict.matches.iter().map(|m| m.rule.as_str()).collect();
    serde_json::json!({
        "flagged": !verdict.matches.is_empty(),
        "categories": categories,
        "category_scores": scores,
        "category_applied_input_types": applied,
        "dartmouth_rules": rules,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_compile_and_bad_regexes_are_config_errors() {
        let config = FilterConfig {
            blocklist: vec!["darn".into()],
            patterns: vec![PatternRule {
                name: "ticket".into(),
                regex: r"TK-\d+".into(),
                action: Action::Redact,
            }],
            ..FilterConfig::default()
        };
        assert!(Filter::new(&config).is_ok());
        let bad = FilterConfig {
            patterns: vec![PatternRule {
                name: "x".into(),
                regex: "(".into(),
                action: Action::Flag,
            }],
            ..FilterConfig::default()
        };
        assert!(
            Filter::new(&bad)
                .unwrap_err()
                .to_string()
                .contains("filter")
        );
    }
}
