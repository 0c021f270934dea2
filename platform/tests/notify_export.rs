//! GDPR and notifications, on both databases: a user's export holds their notification
//! preferences and history; deleting the user removes both.

mod common;

use axum::http::{Method, StatusCode};
use common::{Backend, Env};
use dartmouth_platform::notify::SmsConfig;
use serde_json::json;

async fn export_and_deletion_cover_notifications(backend: Backend) {
    let Some(env) = Env::with(backend, |config| {
        config.embeddings = false;
        // Never contacted: the user does not accept SMS, so the send is refused and recorded.
        config.notify.sms = Some(SmsConfig {
            base_url: "http://127.0.0.1:9".into(),
            account_sid: "AC1".into(),
            auth_token: "token".into(),
            from: "+15557654321".into(),
        });
    })
    .await
    else {
        return;
    };
    let (user_id, token) = env.user("user").await;
    let admin = Some(env.admin_token.as_str());
    let (status, body) = env
        .call(
            Method::PUT,
            &format!("/v1/notifications/preferences/{user_id}"),
            admin,
            Some(json!({"channels": ["email"], "email": "ann@example.com"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = env
        .call(
            Method::POST,
            "/v1/notifications",
            admin,
            Some(json!({"user_id": user_id, "channel": "sms", "body": "promo"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");

    let (status, export) = env
        .call(
            Method::GET,
            &format!("/v1/users/{user_id}/export"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{export}");
    let preferences = &export["notification_preferences"]["preferences"];
    assert_eq!(preferences["email"], "ann@example.com", "{export}");
    assert_eq!(preferences["channels"], json!(["email"]));
    let history = export["notifications"].as_array().unwrap();
    assert_eq!(history.len(), 1, "{export}");
    assert_eq!(history[0]["status"], "refused");
    assert_eq!(history[0]["channel"], "sms");

    let (status, _) = env
        .call(Method::DELETE, &format!("/v1/users/{user_id}"), admin, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = env
        .call(
            Method::GET,
            &format!("/v1/notifications/preferences/{user_id}"),
            admin,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, list) = env
        .call(
            Method::GET,
            &format!("/v1/notifications?user_id={user_id}"),
            admin,
            None,
        )
        .await;
    assert_eq!(list, json!([]));
}

on_both_backends!(export_and_deletion_cover_notifications);
