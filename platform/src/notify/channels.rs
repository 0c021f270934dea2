//! The three delivery adapters: SMTP (lettre), a Twilio-compatible SMS form API and a generic
//! JSON push webhook. Each answers `Ok(detail)` or `Err(why)`; nothing here logs addresses,
//! bodies or credentials.

use super::{Notifier, PushConfig, SmsConfig, SmtpConfig, SmtpTls};
use crate::webhooks::{self, ssrf};
use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

/// Longest error detail kept from a provider's answer.
const MAX_DETAIL: usize = 300;
/// Largest provider answer read for SMS and push.
const MAX_PROVIDER_ANSWER: usize = 64 * 1024;

/// One message on its way out.
#[derive(Debug, Clone)]
pub(crate) struct Outbound<'a> {
    /// The notification id (push receivers dedup by it).
    pub id: &'a str,
    /// Whom it is for.
    pub user_id: &'a str,
    /// Address, phone number or device token.
    pub to: &'a str,
    /// Subject (email) or title (push); unused by SMS.
    pub subject: &'a str,
    /// The text.
    pub body: &'a str,
}

pub(crate) fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// Whether `address` is a single mailbox lettre accepts.
pub(crate) fn valid_email(address: &str) -> bool {
    address.len() <= 254 && address.parse::<Mailbox>().is_ok()
}

/// Sends a plain-text email through the configured relay.
pub(crate) async fn send_email(
    notifier: &Notifier,
    config: &SmtpConfig,
    message: &Outbound<'_>,
) -> Result<String, String> {
    let from: Mailbox = config
        .from
        .parse()
        .map_err(|e| format!("the configured from address is invalid: {e}"))?;
    let to: Mailbox = message
        .to
        .parse()
        .map_err(|e| format!("the recipient address is invalid: {e}"))?;
    let email = Message::builder()
        .from(from)
        .to(to)
        .subject(message.subject)
        .header(ContentType::TEXT_PLAIN)
        .body(message.body.to_string())
        .map_err(|e| format!("the message could not be built: {e}"))?;
    let tls = match config.tls {
        SmtpTls::Off => Tls::None,
        SmtpTls::Starttls => Tls::Required(
            TlsParameters::new(config.host.clone()).map_err(|e| format!("SMTP TLS: {e}"))?,
        ),
        SmtpTls::Tls => Tls::Wrapper(
            TlsParameters::new(config.host.clone()).map_err(|e| format!("SMTP TLS: {e}"))?,
        ),
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(config.host.as_str())
        .port(config.port)
        .tls(tls)
        .timeout(Some(notifier.timeout()));
    if let Some(user) = &config.username {
        builder = builder.credentials(Credentials::new(
            user.clone(),
            config.password.clone().unwrap_or_default(),
        ));
    }
    let transport = builder.build();
    let sent = tokio::time::timeout(notifier.timeout() * 2, transport.send(email))
        .await
        .map_err(|_| "the SMTP relay did not answer in time".to_string())?
        .map_err(|e| truncate(&format!("SMTP: {e}"), MAX_DETAIL))?;
    let answer: Vec<&str> = sent.message().collect();
    Ok(truncate(
        &format!(
            "accepted by the relay: {} {}",
            sent.code(),
            answer.join(" ")
        ),
        MAX_DETAIL,
    ))
}

/// Reads at most `max` bytes of a response body; more is an error.
pub(crate) async fn read_limited(
    response: &mut reqwest::Response,
    max: usize,
) -> Result<Vec<u8>, String> {
    if response.content_length().is_some_and(|n| n > max as u64) {
        return Err(format!("the response is larger than {max} bytes"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| format!("reading the response: {}", describe(&e)))?
    {
        if body.len() + chunk.len() > max {
            return Err(format!("the response is larger than {max} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A transport error in words (without the URL's query, which may carry secrets).
pub(crate) fn describe(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    let mut cause = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        cause = s.to_string();
        source = s.source();
    }
    if cause.is_empty() {
        what.to_string()
    } else {
        truncate(&format!("{what}: {cause}"), MAX_DETAIL)
    }
}

async fn checked_url(notifier: &Notifier, url: &str) -> Result<reqwest::Url, String> {
    let allow = notifier.config.allow_private_targets;
    let parsed = ssrf::check_url(url, allow)
        .await
        .map_err(|e| e.to_string())?;
    ssrf::check_literal_host(&parsed, allow).map_err(|e| e.to_string())?;
    Ok(parsed)
}

fn provider_failure(status: reqwest::StatusCode, body: &[u8]) -> String {
    let message = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(String::from))
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    truncate(
        &format!("the provider answered {status}: {}", message.trim()),
        MAX_DETAIL,
    )
}

/// Sends an SMS through the Twilio-compatible form API.
pub(crate) async fn send_sms(
    notifier: &Notifier,
    config: &SmsConfig,
    message: &Outbound<'_>,
) -> Result<String, String> {
    let sid = percent_encoding::utf8_percent_encode(
        &config.account_sid,
        percent_encoding::NON_ALPHANUMERIC,
    );
    let url = format!(
        "{}/2010-04-01/Accounts/{sid}/Messages.json",
        config.base_url.trim_end_matches('/')
    );
    let url = checked_url(notifier, &url).await?;
    let form = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("To", message.to)
        .append_pair("From", &config.from)
        .append_pair("Body", message.body)
        .finish();
    let mut response = notifier
        .http
        .post(url)
        .basic_auth(&config.account_sid, Some(&config.auth_token))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .map_err(|e| format!("SMS provider: {}", describe(&e)))?;
    let status = response.status();
    let body = read_limited(&mut response, MAX_PROVIDER_ANSWER).await?;
    if !status.is_success() {
        return Err(provider_failure(status, &body));
    }
    let sid = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("sid").and_then(|s| s.as_str()).map(String::from));
    Ok(match sid {
        Some(sid) => truncate(
            &format!("accepted by the SMS provider as {sid}"),
            MAX_DETAIL,
        ),
        None => format!("accepted by the SMS provider ({status})"),
    })
}

/// Sends a push notification to the JSON webhook (signed when a secret is configured).
pub(crate) async fn send_push(
    notifier: &Notifier,
    config: &PushConfig,
    message: &Outbound<'_>,
) -> Result<String, String> {
    let url = checked_url(notifier, &config.url).await?;
    let body = serde_json::json!({
        "id": message.id,
        "user_id": message.user_id,
        "token": message.to,
        "title": message.subject,
        "body": message.body,
    })
    .to_string();
    let mut request = notifier
        .http
        .post(url)
        .header("content-type", "application/json");
    if let Some(secret) = &config.secret {
        let timestamp = crate::db::now_ms() / 1000;
        request = request
            .header(webhooks::HEADER_ID, message.id)
            .header(webhooks::HEADER_TIMESTAMP, timestamp.to_string())
            .header(
                webhooks::HEADER_SIGNATURE,
                webhooks::sign(secret, message.id, timestamp, body.as_bytes()),
            );
    }
    let mut response = request
        .body(body)
        .send()
        .await
        .map_err(|e| format!("push webhook: {}", describe(&e)))?;
    let status = response.status();
    let answer = read_limited(&mut response, MAX_PROVIDER_ANSWER).await?;
    if !status.is_success() {
        return Err(provider_failure(status, &answer));
    }
    Ok(format!("accepted by the push webhook ({status})"))
}
