//! The notification service's methods of the typed sidecar client.

use super::preferences::{Preferences, UserPreferences};
use super::routes::{Notification, SendNotification, Template, TemplateBody};
use crate::client::{PlatformClient, segment};
use crate::error::PlatformError;
use reqwest::Method;

impl PlatformClient {
    /// Sets (replaces) `user_id`'s notification preferences: accepted channels and addresses.
    pub async fn put_notification_preferences(
        &self,
        user_id: &str,
        preferences: &Preferences,
    ) -> Result<UserPreferences, PlatformError> {
        self.send(
            self.request(
                Method::PUT,
                &format!("/v1/notifications/preferences/{}", segment(user_id)),
            )
            .json(preferences),
        )
        .await
    }

    /// `user_id`'s notification preferences (404 when none are set).
    pub async fn notification_preferences(
        &self,
        user_id: &str,
    ) -> Result<UserPreferences, PlatformError> {
        self.send(self.request(
            Method::GET,
            &format!("/v1/notifications/preferences/{}", segment(user_id)),
        ))
        .await
    }

    /// Stores (or replaces) template `name`.
    pub async fn put_notification_template(
        &self,
        name: &str,
        template: &TemplateBody,
    ) -> Result<Template, PlatformError> {
        self.send(
            self.request(
                Method::PUT,
                &format!("/v1/notifications/templates/{}", segment(name)),
            )
            .json(template),
        )
        .await
    }

    /// Every stored template.
    pub async fn notification_templates(&self) -> Result<Vec<Template>, PlatformError> {
        self.send(self.request(Method::GET, "/v1/notifications/templates"))
            .await
    }

    /// Removes template `name`.
    pub async fn delete_notification_template(&self, name: &str) -> Result<(), PlatformError> {
        self.send_empty(self.request(
            Method::DELETE,
            &format!("/v1/notifications/templates/{}", segment(name)),
        ))
        .await
    }

    /// Sends a notification. Refused (opted out) and not-configured channels are 409, a failed
    /// provider 502 — all as [`PlatformError::Api`]; refusals and failures are recorded.
    pub async fn send_notification(
        &self,
        request: &SendNotification,
    ) -> Result<Notification, PlatformError> {
        self.post("/v1/notifications", request).await
    }

    /// The newest `limit` recorded attempts for `user_id`, newest first.
    pub async fn notifications(
        &self,
        user_id: &str,
        limit: u32,
    ) -> Result<Vec<Notification>, PlatformError> {
        self.send(self.request(
            Method::GET,
            &format!(
                "/v1/notifications?user_id={}&limit={limit}",
                segment(user_id)
            ),
        ))
        .await
    }
}
