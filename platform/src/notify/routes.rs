//! HTTP face of notifications: templates, per-user preferences, sending, history.

use super::channels::Outbound;
use super::preferences::load_preferences;
use super::retry::{Attempted, Pending, after_attempt, announce, deliver};
use super::{Channel, check_message, placeholders, render};
use crate::auth::{Permission, Principal};
use crate::db::now_ms;
use crate::documents::check_name;
use crate::error::{ApiError, ErrorBody};
use crate::http::Json;
use crate::state::AppState;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use std::collections::BTreeMap;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Most templates in total.
const MAX_TEMPLATES: i64 = 1000;
/// Default and largest page of the history.
const DEFAULT_HISTORY: u32 = 100;
const MAX_HISTORY: u32 = 1000;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_templates))
        .routes(routes!(get_template, put_template, delete_template))
        .routes(routes!(send_notification, list_notifications))
}

/// A template's content: `{{var}}` placeholders are filled in at send time (plain text, nothing
/// escaped).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateBody {
    /// Email subject / push title (one line; may be empty for SMS-only templates).
    #[serde(default)]
    pub subject: String,
    /// The text (at most 64 KiB).
    pub body: String,
}

/// A stored template.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Template {
    /// Its name.
    pub name: String,
    /// Subject / title.
    pub subject: String,
    /// The text.
    pub body: String,
    /// The variables it needs (each placeholder name once).
    pub variables: Vec<String>,
    /// Unix milliseconds.
    pub updated_at: i64,
}

fn template_variables(subject: &str, body: &str) -> Result<Vec<String>, String> {
    let mut names = placeholders(subject)?;
    names.extend(placeholders(body)?);
    let mut seen = std::collections::BTreeSet::new();
    names.retain(|n| seen.insert(n.clone()));
    Ok(names)
}

fn template_of(row: &sqlx::any::AnyRow) -> Result<Template, ApiError> {
    let (subject, body): (String, String) = (row.try_get(1)?, row.try_get(2)?);
    Ok(Template {
        name: row.try_get(0)?,
        variables: template_variables(&subject, &body).unwrap_or_default(),
        subject,
        body,
        updated_at: row.try_get(3)?,
    })
}

async fn load_template(state: &AppState, name: &str) -> Result<Template, ApiError> {
    let row = sqlx::query(
        "SELECT name, subject, body, updated_at FROM notification_templates WHERE name = $1",
    )
    .bind(name)
    .fetch_optional(&state.db.pool)
    .await?
    .ok_or_else(|| ApiError::not_found(format!("no template named {name:?}")))?;
    template_of(&row)
}

/// All templates, by name.
#[utoipa::path(get, path = "/v1/notifications/templates", tag = "notifications", security(("bearer" = [])),
    responses((status = 200, body = Vec<Template>), (status = 403, body = ErrorBody)))]
async fn list_templates(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<Vec<Template>>, ApiError> {
    state.authorize(&principal, Permission::Notify).await?;
    let rows = sqlx::query("SELECT name, subject, body, updated_at FROM notification_templates ORDER BY name LIMIT 1000")
        .fetch_all(&state.db.pool)
        .await?;
    rows.iter()
        .map(template_of)
        .collect::<Result<_, _>>()
        .map(Json)
}

/// One template.
#[utoipa::path(get, path = "/v1/notifications/templates/{name}", tag = "notifications", security(("bearer" = [])),
    params(("name" = String, Path)),
    responses((status = 200, body = Template), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_template(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
) -> Result<Json<Template>, ApiError> {
    state.authorize(&principal, Permission::Notify).await?;
    check_name("template name", &name)?;
    load_template(&state, &name).await.map(Json)
}

/// Create or replace a template. Placeholders are `{{name}}` (letters, digits, `_`, `.`).
#[utoipa::path(put, path = "/v1/notifications/templates/{name}", tag = "notifications", security(("bearer" = [])),
    params(("name" = String, Path)), request_body = TemplateBody,
    responses((status = 200, body = Template), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn put_template(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
    Json(request): Json<TemplateBody>,
) -> Result<Json<Template>, ApiError> {
    state.authorize(&principal, Permission::Notify).await?;
    check_name("template name", &name)?;
    check_message(&request.subject, &request.body)?;
    if request.body.trim().is_empty() {
        return Err(ApiError::bad_request("body: must not be empty"));
    }
    let variables =
        template_variables(&request.subject, &request.body).map_err(ApiError::bad_request)?;
    let updated_at = now_ms();
    let mut tx = state.db.pool.begin().await?;
    let deleted = sqlx::query("DELETE FROM notification_templates WHERE name = $1")
        .bind(&name)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if deleted == 0 {
        let count: i64 = sqlx::query("SELECT COUNT(*) FROM notification_templates")
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
        if count >= MAX_TEMPLATES {
            return Err(ApiError::conflict(format!(
                "at most {MAX_TEMPLATES} templates"
            )));
        }
    }
    sqlx::query(
        "INSERT INTO notification_templates (name, subject, body, updated_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(&name)
    .bind(&request.subject)
    .bind(&request.body)
    .bind(updated_at)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    state
        .audit(&principal.actor(), "notify.template.put", &name, "ok", "")
        .await;
    Ok(Json(Template {
        name,
        subject: request.subject,
        body: request.body,
        variables,
        updated_at,
    }))
}

/// Delete a template.
#[utoipa::path(delete, path = "/v1/notifications/templates/{name}", tag = "notifications", security(("bearer" = [])),
    params(("name" = String, Path)),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn delete_template(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.authorize(&principal, Permission::Notify).await?;
    check_name("template name", &name)?;
    let deleted = sqlx::query("DELETE FROM notification_templates WHERE name = $1")
        .bind(&name)
        .execute(&state.db.pool)
        .await?
        .rows_affected();
    if deleted == 0 {
        return Err(ApiError::not_found(format!("no template named {name:?}")));
    }
    state
        .audit(
            &principal.actor(),
            "notify.template.delete",
            &name,
            "ok",
            "",
        )
        .await;
    Ok(StatusCode::NO_CONTENT)
}

/// A notification to send: a template with its variables, or a subject and body given inline
/// (which may use `{{var}}` placeholders too).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendNotification {
    /// The recipient (their preferences say where and whether).
    pub user_id: String,
    /// `email`, `sms` or `push`.
    pub channel: Channel,
    /// A stored template's name.
    #[serde(default)]
    pub template: Option<String>,
    /// Inline subject / push title (without a template).
    #[serde(default)]
    pub subject: Option<String>,
    /// Inline text (without a template).
    #[serde(default)]
    pub body: Option<String>,
    /// Values of the placeholders; each must be used, each placeholder needs one.
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
}

/// One recorded attempt.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Notification {
    /// Its id.
    pub id: String,
    /// The recipient.
    pub user_id: String,
    /// `email`, `sms` or `push`.
    pub channel: String,
    /// `sent`; `pending` (an attempt failed, another is scheduled); `failed` (every attempt
    /// failed); or `refused` (the user does not accept the channel).
    pub status: String,
    /// What the provider answered, why the last attempt failed or why it was refused.
    pub detail: String,
    /// Unix milliseconds of the last attempt.
    pub at: i64,
    /// Attempts made so far (0 when refused).
    #[serde(default)]
    pub attempts: i64,
    /// Unix milliseconds of the next attempt, while `pending`.
    #[serde(default)]
    pub next_attempt_at: Option<i64>,
}

async fn record(
    state: &AppState,
    n: &Notification,
    payload: Option<String>,
) -> Result<(), ApiError> {
    sqlx::query("INSERT INTO notifications (id, user_id, channel, status, detail, at, attempts, next_attempt_at, payload) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)")
        .bind(&n.id)
        .bind(&n.user_id)
        .bind(&n.channel)
        .bind(&n.status)
        .bind(&n.detail)
        .bind(n.at)
        .bind(n.attempts)
        .bind(n.next_attempt_at)
        .bind(payload)
        .execute(&state.db.pool)
        .await?;
    Ok(())
}

/// Send a notification. The user's preferences decide: a channel they do not accept is refused
/// (409, recorded as `refused`). The first attempt is made now: a delivery the provider rejects
/// answers 502 and is recorded as `pending` with a retry scheduled (exponential back-off, up to
/// `notify.max_attempts` attempts, then `failed`); the history shows its progress.
/// A channel this sidecar has no configuration for answers 409 `not_configured`, storing nothing.
#[utoipa::path(post, path = "/v1/notifications", tag = "notifications", security(("bearer" = [])),
    request_body = SendNotification,
    responses((status = 201, body = Notification), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody, description = "no such template, or no preferences for the user"),
        (status = 409, body = ErrorBody, description = "refused (opted out; recorded) or the channel is not configured"),
        (status = 502, body = ErrorBody, description = "the provider failed (recorded)")))]
async fn send_notification(
    State(state): State<AppState>,
    principal: Principal,
    Json(request): Json<SendNotification>,
) -> Result<(StatusCode, Json<Notification>), ApiError> {
    state.authorize(&principal, Permission::Notify).await?;
    check_name("user_id", &request.user_id)?;
    let (subject, body) = match &request.template {
        Some(name) => {
            if request.subject.is_some() || request.body.is_some() {
                return Err(ApiError::bad_request(
                    "give a template or an inline subject/body, not both",
                ));
            }
            check_name("template", name)?;
            let template = load_template(&state, name).await?;
            (template.subject, template.body)
        }
        None => (
            request.subject.clone().unwrap_or_default(),
            request
                .body
                .clone()
                .ok_or_else(|| ApiError::bad_request("body: required when no template is given"))?,
        ),
    };
    let rendered = render(&[&subject, &body], &request.variables)?;
    let (subject, body) = (&rendered[0], &rendered[1]);
    check_message(subject, body)?;
    if body.trim().is_empty() {
        return Err(ApiError::bad_request("body: must not be empty"));
    }
    let config = &state.notify.config;
    let configured = match request.channel {
        Channel::Email => config.smtp.is_some(),
        Channel::Sms => config.sms.is_some(),
        Channel::Push => config.push.is_some(),
    };
    if !configured {
        let section = match request.channel {
            Channel::Email => "smtp",
            Channel::Sms => "sms",
            Channel::Push => "push",
        };
        return Err(ApiError::not_configured(format!(
            "{} is not configured on this sidecar (set [platform.notify.{section}])",
            request.channel.as_str()
        )));
    }
    let preferences = load_preferences(&state, &request.user_id)
        .await?
        .ok_or_else(|| {
            ApiError::not_found(
                "the user has no notification preferences (PUT /v1/notifications/preferences/{user_id})",
            )
        })?
        .preferences;
    let mut notification = Notification {
        id: uuid::Uuid::now_v7().simple().to_string(),
        user_id: request.user_id.clone(),
        channel: request.channel.as_str().into(),
        status: String::new(),
        detail: String::new(),
        at: now_ms(),
        attempts: 0,
        next_attempt_at: None,
    };
    let address = preferences
        .address(request.channel)
        .filter(|_| preferences.channels.contains(&request.channel));
    let Some(to) = address else {
        notification.status = "refused".into();
        notification.detail = format!(
            "the user does not accept {} notifications",
            request.channel.as_str()
        );
        record(&state, &notification, None).await?;
        state
            .audit(
                &principal.actor(),
                "notify.send",
                &notification.id,
                "refused",
                &notification.channel,
            )
            .await;
        return Err(ApiError::conflict(format!(
            "refused: user {} does not accept {} notifications (opted out); recorded as notification {}",
            request.user_id,
            request.channel.as_str(),
            notification.id
        )));
    };
    let outbound = Outbound {
        id: &notification.id,
        user_id: &request.user_id,
        to,
        subject,
        body,
    };
    let outcome = deliver(&state, request.channel, &outbound).await;
    notification.at = now_ms();
    notification.attempts = 1;
    let sent = outcome.is_ok();
    let pending = Pending {
        to: to.to_string(),
        subject: subject.clone(),
        body: body.clone(),
    };
    let (status, next, keep) = after_attempt(&state, 1, &outcome, &pending);
    notification.status = status.into();
    notification.next_attempt_at = next;
    notification.detail = match outcome {
        Ok(detail) | Err(detail) => detail,
    };
    record(&state, &notification, keep).await?;
    state
        .audit(
            &principal.actor(),
            "notify.send",
            &notification.id,
            &notification.status,
            &notification.channel,
        )
        .await;
    let attempted = Attempted {
        id: &notification.id,
        user_id: &notification.user_id,
        channel: &notification.channel,
        attempts: notification.attempts,
        status: &notification.status,
        next_attempt_at: notification.next_attempt_at,
        detail: &notification.detail,
    };
    announce(&state, &attempted).await;
    if !sent {
        let retry = if notification.next_attempt_at.is_some() {
            "; it will be retried"
        } else {
            ""
        };
        return Err(ApiError::bad_gateway(format!(
            "{} delivery failed: {}; recorded as notification {}{retry}",
            notification.channel, notification.detail, notification.id
        )));
    }
    Ok((StatusCode::CREATED, Json(notification)))
}

/// Whose history to list.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListNotifications {
    /// The recipient.
    pub user_id: String,
    /// Most records, newest first (default 100, at most 1000).
    pub limit: Option<u32>,
}

/// A user's notification history, newest first.
#[utoipa::path(get, path = "/v1/notifications", tag = "notifications", security(("bearer" = [])),
    params(ListNotifications),
    responses((status = 200, body = Vec<Notification>), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn list_notifications(
    State(state): State<AppState>,
    principal: Principal,
    Query(query): Query<ListNotifications>,
) -> Result<Json<Vec<Notification>>, ApiError> {
    state.authorize(&principal, Permission::Notify).await?;
    check_name("user_id", &query.user_id)?;
    let limit = query.limit.unwrap_or(DEFAULT_HISTORY);
    if !(1..=MAX_HISTORY).contains(&limit) {
        return Err(ApiError::bad_request(format!("limit: 1-{MAX_HISTORY}")));
    }
    history(&state, &query.user_id, i64::from(limit))
        .await
        .map(Json)
}

/// The newest `limit` recorded attempts for `user_id`, newest first (also the GDPR export's).
pub(crate) async fn history(
    state: &AppState,
    user_id: &str,
    limit: i64,
) -> Result<Vec<Notification>, ApiError> {
    let rows = sqlx::query("SELECT id, user_id, channel, status, detail, at, attempts, next_attempt_at FROM notifications WHERE user_id = $1 ORDER BY id DESC LIMIT $2")
        .bind(user_id)
        .bind(limit)
        .fetch_all(&state.db.pool)
        .await?;
    rows.iter()
        .map(|r| {
            Ok(Notification {
                id: r.try_get(0)?,
                user_id: r.try_get(1)?,
                channel: r.try_get(2)?,
                status: r.try_get(3)?,
                detail: r.try_get(4)?,
                at: r.try_get(5)?,
                attempts: r.try_get(6)?,
                next_attempt_at: r.try_get(7)?,
            })
        })
        .collect::<Result<_, ApiError>>()
}
