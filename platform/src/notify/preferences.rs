//! Per-user notification preferences: which channels a user accepts and where to reach them.

use super::Channel;
use super::channels;
use crate::auth::{Permission, Principal};
use crate::db::now_ms;
use crate::documents::check_name;
use crate::error::{ApiError, ErrorBody};
use crate::http::Json;
use crate::state::AppState;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Longest push device token.
const MAX_PUSH_TOKEN: usize = 512;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_preferences, put_preferences))
}

/// What a user accepts and where to reach them. Every accepted channel needs its address.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Preferences {
    /// The channels the user accepts; any other is refused (opted out).
    pub channels: Vec<Channel>,
    /// Email address.
    #[serde(default)]
    pub email: Option<String>,
    /// Phone number for SMS, E.164 (`+15551234567`).
    #[serde(default)]
    pub phone: Option<String>,
    /// Device token for push.
    #[serde(default)]
    pub push_token: Option<String>,
}

impl Preferences {
    pub(crate) fn address(&self, channel: Channel) -> Option<&str> {
        match channel {
            Channel::Email => self.email.as_deref(),
            Channel::Sms => self.phone.as_deref(),
            Channel::Push => self.push_token.as_deref(),
        }
    }

    fn check(&self) -> Result<(), ApiError> {
        let mut seen = std::collections::HashSet::new();
        if !self.channels.iter().all(|c| seen.insert(*c)) {
            return Err(ApiError::bad_request("channels: each channel at most once"));
        }
        if let Some(email) = &self.email
            && !channels::valid_email(email)
        {
            return Err(ApiError::bad_request(
                "email: not a valid email address (e.g. ann@example.com)",
            ));
        }
        if let Some(phone) = &self.phone {
            let digits = phone.strip_prefix('+').unwrap_or_default();
            let ok = (7..=15).contains(&digits.len())
                && digits.bytes().all(|b| b.is_ascii_digit())
                && !digits.starts_with('0');
            if !ok {
                return Err(ApiError::bad_request(
                    "phone: an E.164 number, + and 7-15 digits (e.g. +15551234567)",
                ));
            }
        }
        if let Some(token) = &self.push_token
            && (token.is_empty()
                || token.len() > MAX_PUSH_TOKEN
                || token.chars().any(char::is_control))
        {
            return Err(ApiError::bad_request(format!(
                "push_token: 1-{MAX_PUSH_TOKEN} characters, no control characters"
            )));
        }
        for channel in &self.channels {
            if self.address(*channel).is_none() {
                let field = match channel {
                    Channel::Email => "email",
                    Channel::Sms => "phone",
                    Channel::Push => "push_token",
                };
                return Err(ApiError::bad_request(format!(
                    "channels: {} is accepted but {field} is not given",
                    channel.as_str()
                )));
            }
        }
        Ok(())
    }
}

/// A user's stored preferences.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UserPreferences {
    /// The user.
    pub user_id: String,
    /// The preferences.
    pub preferences: Preferences,
    /// Unix milliseconds.
    pub updated_at: i64,
}

pub(crate) async fn load_preferences(
    state: &AppState,
    user_id: &str,
) -> Result<Option<UserPreferences>, ApiError> {
    let row =
        sqlx::query("SELECT body, updated_at FROM notification_preferences WHERE user_id = $1")
            .bind(user_id)
            .fetch_optional(&state.db.pool)
            .await?;
    let Some(row) = row else { return Ok(None) };
    Ok(Some(UserPreferences {
        user_id: user_id.to_string(),
        preferences: serde_json::from_str(&row.try_get::<String, _>(0)?)
            .map_err(ApiError::internal)?,
        updated_at: row.try_get(1)?,
    }))
}

/// A user's notification preferences.
#[utoipa::path(get, path = "/v1/notifications/preferences/{user_id}", tag = "notifications", security(("bearer" = [])),
    params(("user_id" = String, Path)),
    responses((status = 200, body = UserPreferences), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_preferences(
    State(state): State<AppState>,
    principal: Principal,
    Path(user_id): Path<String>,
) -> Result<Json<UserPreferences>, ApiError> {
    state.authorize(&principal, Permission::Notify).await?;
    check_name("user_id", &user_id)?;
    load_preferences(&state, &user_id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("no notification preferences for this user"))
}

/// Set (replace) a user's notification preferences.
#[utoipa::path(put, path = "/v1/notifications/preferences/{user_id}", tag = "notifications", security(("bearer" = [])),
    params(("user_id" = String, Path)), request_body = Preferences,
    responses((status = 200, body = UserPreferences), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn put_preferences(
    State(state): State<AppState>,
    principal: Principal,
    Path(user_id): Path<String>,
    Json(preferences): Json<Preferences>,
) -> Result<Json<UserPreferences>, ApiError> {
    state.authorize(&principal, Permission::Notify).await?;
    check_name("user_id", &user_id)?;
    preferences.check()?;
    let body = serde_json::to_string(&preferences).map_err(ApiError::internal)?;
    let updated_at = now_ms();
    let mut tx = state.db.pool.begin().await?;
    sqlx::query("DELETE FROM notification_preferences WHERE user_id = $1")
        .bind(&user_id)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO notification_preferences (user_id, body, updated_at) VALUES ($1, $2, $3)",
    )
    .bind(&user_id)
    .bind(body)
    .bind(updated_at)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    state
        .audit(
            &principal.actor(),
            "notify.preferences.put",
            &user_id,
            "ok",
            "",
        )
        .await;
    Ok(Json(UserPreferences {
        user_id,
        preferences,
        updated_at,
    }))
}
