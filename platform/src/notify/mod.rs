//! Notifications and the integration hub: email over SMTP (`lettre`), SMS through a
//! Twilio-compatible form API, push through a generic JSON webhook; `{{var}}` templates and
//! per-user preferences (which channels a user accepts, and where); every attempt recorded.
//! Calendar and CRM systems are generic HTTP integrations whose credentials are stored
//! encrypted by the keyring and sent only upstream, never back to API callers.
//!
//! Every outgoing HTTP target (SMS and push adapters, integrations) passes the SSRF guard of
//! [`crate::webhooks::ssrf`] unless `allow_private_targets` is set. The SMTP relay is the
//! operator's own configuration and is commonly a local relay, so it is not SSRF-checked.

mod channels;
mod client;
pub mod integrations;
pub mod preferences;
pub mod retry;
pub mod routes;

use crate::error::ApiError;
use crate::webhooks::ssrf;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;

/// Longest template or message body, in bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Longest subject, in characters.
pub const MAX_SUBJECT_CHARS: usize = 998;
/// Most variables in one send.
pub const MAX_VARIABLES: usize = 64;

/// Settings of notifications and integrations (`[platform.notify]`); every channel is optional.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default)]
pub struct NotifyConfig {
    /// Email over SMTP; `None` → email answers 409 `not_configured`.
    pub smtp: Option<SmtpConfig>,
    /// SMS through a Twilio-compatible API; `None` → SMS answers 409 `not_configured`.
    pub sms: Option<SmsConfig>,
    /// Push through a generic JSON webhook; `None` → push answers 409 `not_configured`.
    pub push: Option<PushConfig>,
    /// Allow SMS/push adapters and integrations on loopback/private/link-local addresses
    /// (tests, on-premises). Default false.
    pub allow_private_targets: bool,
    /// Timeout of one outgoing call (SMTP, adapters, integrations) in milliseconds. Default 10 000.
    pub timeout_ms: u64,
    /// Largest integration response read back, in bytes. Default 1 MiB.
    pub max_response_bytes: usize,
    /// Attempts a notification gets before it is `failed` (1: no retries). Default 4.
    pub max_attempts: u32,
    /// Delay before the first retry, in milliseconds; it doubles per attempt (the upper half is
    /// jitter). Default 10 000.
    pub retry_base_ms: u64,
    /// Longest delay between retries, in milliseconds. Default 3 600 000 (1 h).
    pub retry_max_ms: u64,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            smtp: None,
            sms: None,
            push: None,
            allow_private_targets: false,
            timeout_ms: 10_000,
            max_response_bytes: 1024 * 1024,
            max_attempts: 4,
            retry_base_ms: 10_000,
            retry_max_ms: 3_600_000,
        }
    }
}

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain text (a trusted local relay only).
    Off,
    /// Plain connection upgraded with STARTTLS, which is required (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
}

/// The SMTP relay (`[platform.notify.smtp]`).
#[derive(Clone, PartialEq, Deserialize, Serialize)]
pub struct SmtpConfig {
    /// Host name of the relay.
    pub host: String,
    /// Port. Default 587.
    #[serde(default = "default_smtp_port")]
    pub port: u16,
    /// The `From` address, e.g. `Dartmouth <noreply@example.com>`.
    pub from: String,
    /// Login user, when the relay wants one.
    #[serde(default)]
    pub username: Option<String>,
    /// Login password.
    #[serde(default)]
    pub password: Option<String>,
    /// `off`, `starttls` (default) or `tls`.
    #[serde(default)]
    pub tls: SmtpTls,
}

impl std::fmt::Debug for SmtpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("from", &self.from)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls)
            .finish()
    }
}

fn default_smtp_port() -> u16 {
    587
}

/// A Twilio-compatible SMS API (`[platform.notify.sms]`): `POST
/// {base_url}/2010-04-01/Accounts/{account_sid}/Messages.json` with form fields `To`, `From`,
/// `Body` and basic auth `account_sid:auth_token`.
#[derive(Clone, PartialEq, Deserialize, Serialize)]
pub struct SmsConfig {
    /// Base URL. Default `https://api.twilio.com`.
    #[serde(default = "default_sms_base")]
    pub base_url: String,
    /// Account SID (the basic-auth user).
    pub account_sid: String,
    /// Auth token (the basic-auth password).
    pub auth_token: String,
    /// The sending number (`From`), E.164.
    pub from: String,
}

impl std::fmt::Debug for SmsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmsConfig")
            .field("base_url", &self.base_url)
            .field("account_sid", &self.account_sid)
            .field("auth_token", &"<redacted>")
            .field("from", &self.from)
            .finish()
    }
}

fn default_sms_base() -> String {
    "https://api.twilio.com".into()
}

/// A generic JSON push webhook (`[platform.notify.push]`): `POST url` with
/// `{"id", "user_id", "token", "title", "body"}`, signed like outgoing webhooks when a secret is set.
#[derive(Clone, PartialEq, Deserialize, Serialize)]
pub struct PushConfig {
    /// Where to POST.
    pub url: String,
    /// Signing secret (`webhook-signature` header, as outgoing webhooks); `None` → unsigned.
    #[serde(default)]
    pub secret: Option<String>,
}

impl std::fmt::Debug for PushConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushConfig")
            .field("url", &self.url)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// A notification channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    /// Email over SMTP.
    Email,
    /// SMS through the Twilio-compatible adapter.
    Sms,
    /// Push through the JSON webhook adapter.
    Push,
}

impl Channel {
    /// Its name as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Sms => "sms",
            Channel::Push => "push",
        }
    }

    /// Parses a stored name.
    pub fn parse(name: &str) -> Option<Channel> {
        match name {
            "email" => Some(Channel::Email),
            "sms" => Some(Channel::Sms),
            "push" => Some(Channel::Push),
            _ => None,
        }
    }
}

/// The names of the `{{var}}` placeholders of `text`, in order of appearance (repeats kept),
/// or why the text is not a valid template.
pub fn placeholders(text: &str) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        let after = &rest[open + 2..];
        let close = after
            .find("}}")
            .ok_or_else(|| "unclosed {{ in template".to_string())?;
        let name = after[..close].trim();
        if !valid_variable(name) {
            return Err(format!(
                "placeholder {{{{{}}}}} must be a name of letters, digits, _ or . (at most 64)",
                &after[..close]
            ));
        }
        names.push(name.to_string());
        rest = &after[close + 2..];
    }
    Ok(names)
}

fn valid_variable(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 64
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

/// Substitutes `{{var}}` in each of `texts` from `variables` (plain text: nothing escaped).
/// Every placeholder needs a variable and every variable must be used, else a 400 naming them.
pub fn render(
    texts: &[&str],
    variables: &BTreeMap<String, String>,
) -> Result<Vec<String>, ApiError> {
    if variables.len() > MAX_VARIABLES {
        return Err(ApiError::bad_request(format!(
            "variables: at most {MAX_VARIABLES}"
        )));
    }
    let mut used = std::collections::BTreeSet::new();
    let mut missing = std::collections::BTreeSet::new();
    let mut out = Vec::with_capacity(texts.len());
    for text in texts {
        let mut rendered = String::with_capacity(text.len());
        let mut rest = *text;
        while let Some(open) = rest.find("{{") {
            rendered.push_str(&rest[..open]);
            let after = &rest[open + 2..];
            let close = after
                .find("}}")
                .ok_or_else(|| ApiError::bad_request("unclosed {{ in template"))?;
            let name = after[..close].trim();
            match variables.get(name) {
                Some(value) => {
                    rendered.push_str(value);
                    used.insert(name.to_string());
                }
                None => {
                    missing.insert(name.to_string());
                }
            }
            rest = &after[close + 2..];
        }
        rendered.push_str(rest);
        out.push(rendered);
    }
    if !missing.is_empty() {
        let names: Vec<_> = missing.into_iter().collect();
        return Err(ApiError::bad_request(format!(
            "missing template variable(s): {}",
            names.join(", ")
        )));
    }
    let unknown: Vec<&str> = variables
        .keys()
        .filter(|k| !used.contains(*k))
        .map(String::as_str)
        .collect();
    if !unknown.is_empty() {
        return Err(ApiError::bad_request(format!(
            "unknown template variable(s): {} (the template does not use them)",
            unknown.join(", ")
        )));
    }
    Ok(out)
}

/// Checks a subject and body pair (sizes; no line breaks in the subject, which is a mail header).
pub(crate) fn check_message(subject: &str, body: &str) -> Result<(), ApiError> {
    if subject.chars().count() > MAX_SUBJECT_CHARS {
        return Err(ApiError::bad_request(format!(
            "subject: at most {MAX_SUBJECT_CHARS} characters"
        )));
    }
    if subject.contains(['\r', '\n']) {
        return Err(ApiError::bad_request("subject: no line breaks"));
    }
    if body.len() > MAX_BODY_BYTES {
        return Err(ApiError::bad_request(format!(
            "body: at most {MAX_BODY_BYTES} bytes"
        )));
    }
    Ok(())
}

/// The notification service's outgoing HTTP client (SSRF-guarded unless private targets are
/// allowed) and its settings.
#[derive(Debug, Clone)]
pub struct Notifier {
    /// The HTTP client of the adapters and integrations.
    pub http: reqwest::Client,
    /// The settings it was built from.
    pub config: NotifyConfig,
}

impl Notifier {
    /// Checks the configured channels (addresses and URLs parse) and builds the client.
    pub fn new(config: &NotifyConfig) -> Result<Notifier, String> {
        if let Some(smtp) = &config.smtp {
            if smtp.host.trim().is_empty() {
                return Err("notify.smtp.host is empty".into());
            }
            if !channels::valid_email(&smtp.from) {
                return Err(format!(
                    "notify.smtp.from {:?} is not an email address",
                    smtp.from
                ));
            }
        }
        if let Some(sms) = &config.sms {
            reqwest::Url::parse(&sms.base_url).map_err(|e| format!("notify.sms.base_url: {e}"))?;
        }
        if let Some(push) = &config.push {
            reqwest::Url::parse(&push.url).map_err(|e| format!("notify.push.url: {e}"))?;
        }
        let http = ssrf::outbound_client(
            Duration::from_millis(config.timeout_ms.max(1)),
            config.allow_private_targets,
        )
        .map_err(|e| format!("notification HTTP client: {e}"))?;
        Ok(Notifier {
            http,
            config: config.clone(),
        })
    }

    /// The per-call timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.config.timeout_ms.max(1))
    }
}

pub(crate) fn router() -> OpenApiRouter<crate::state::AppState> {
    routes::router()
        .merge(preferences::router())
        .merge(integrations::router())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn renders_and_rejects_missing_or_unknown_variables() {
        let out = render(
            &["Hi {{name}}", "Order {{ order.id }} for {{name}} <b>"],
            &vars(&[("name", "Ann & Bo"), ("order.id", "42")]),
        )
        .unwrap();
        assert_eq!(out, ["Hi Ann & Bo", "Order 42 for Ann & Bo <b>"]);
        let e = render(&["Hi {{name}}"], &vars(&[])).unwrap_err();
        assert!(e.to_string().contains("missing template variable(s): name"));
        let e = render(&["Hi"], &vars(&[("x", "1")])).unwrap_err();
        assert!(e.to_string().contains("unknown template variable(s): x"));
        assert!(render(&["{{a"], &vars(&[])).is_err());
    }

    #[test]
    fn bad_channel_configuration_is_refused_at_startup() {
        let smtp = |from: &str| NotifyConfig {
            smtp: Some(SmtpConfig {
                host: "127.0.0.1".into(),
                port: 25,
                from: from.into(),
                username: Some("u".into()),
                password: Some("hunter2".into()),
                tls: SmtpTls::Off,
            }),
            ..NotifyConfig::default()
        };
        assert!(Notifier::new(&smtp("Dartmouth <noreply@example.com>")).is_ok());
        assert!(
            Notifier::new(&smtp("not an address"))
                .unwrap_err()
                .contains("from")
        );
        assert!(!format!("{:?}", smtp("a@example.com")).contains("hunter2"));
        let push = NotifyConfig {
            push: Some(PushConfig {
                url: "no url".into(),
                secret: None,
            }),
            ..NotifyConfig::default()
        };
        assert!(Notifier::new(&push).unwrap_err().contains("push.url"));
    }

    #[test]
    fn placeholders_are_validated() {
        assert_eq!(
            placeholders("{{a}} {{ b.c }} {{a}}").unwrap(),
            ["a", "b.c", "a"]
        );
        assert!(placeholders("{{}}").is_err());
        assert!(placeholders("{{a b}}").is_err());
        assert!(placeholders("{{a").is_err());
        assert!(placeholders("no vars } { here").unwrap().is_empty());
    }
}
