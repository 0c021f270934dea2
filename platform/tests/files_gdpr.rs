//! Storage (uploads, signed URLs, traversal, limits) and GDPR export/delete — on SQLite and PostgreSQL.

mod common;

use axum::http::{Method, StatusCode};
use common::{Backend, Env, error_code};
use serde_json::{Value, json};

async fn storage_round_trip_signed_urls_and_path_traversal(backend: Backend) {
    let Some(env) = Env::with(backend, |c| c.max_upload_bytes = 4096).await else {
        return;
    };
    let key = env.agent_key("pa", None).await;
    let audio = vec![7u8; 3000];
    let file = "/v1/agents/pa/files/greetings%2Fhello.wav";
    let (status, info, _) = env
        .send(
            Method::PUT,
            file,
            Some(&key),
            Some("audio/wav"),
            audio.clone(),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{info}");
    assert_eq!(
        (info["key"].as_str(), info["size"].as_i64()),
        (Some("greetings/hello.wav"), Some(3000))
    );
    let (status, body, headers) = env
        .send(Method::GET, file, Some(&key), None, Vec::new())
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "audio/wav");
    assert!(
        matches!(body, Value::String(_))
            || body.is_array()
            || body.is_number()
            || body.is_null()
            || body.is_object()
    );
    let (_, list) = env
        .call(Method::GET, "/v1/agents/pa/files", Some(&key), None)
        .await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    // Signed URL: works without a credential, fails when tampered or expired.
    let (status, signed) = env
        .call(
            Method::POST,
            &format!("{file}/signed-url"),
            Some(&key),
            Some(json!({"expires_in": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{signed}");
    let url = signed["url"].as_str().unwrap().to_string();
    let (status, _, headers) = env.send(Method::GET, &url, None, None, Vec::new()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-length"], "3000");
    let tampered = url.replace("hello.wav", "other.wav");
    assert_eq!(
        env.call(Method::GET, &tampered, None, None).await.0,
        StatusCode::FORBIDDEN
    );
    let flipped = if url.ends_with('0') { '1' } else { '0' };
    let bad_sig = format!("{}{flipped}", &url[..url.len() - 1]);
    assert_eq!(
        env.call(Method::GET, &bad_sig, None, None).await.0,
        StatusCode::FORBIDDEN
    );
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert_eq!(
        env.call(Method::GET, &url, None, None).await.0,
        StatusCode::FORBIDDEN,
        "expired"
    );
    // Path traversal and odd keys.
    for bad in [
        "..%2F..%2Fsecrets.json",
        "..",
        "a%2F..%2F..%2Fb",
        "%2Fetc%2Fpasswd",
        "a%5Cb",
        "a%00b",
    ] {
        let (status, body, _) = env
            .send(
                Method::PUT,
                &format!("/v1/agents/pa/files/{bad}"),
                Some(&key),
                Some("audio/wav"),
                vec![1],
            )
            .await;
        assert_eq!(
            (status, error_code(&body).as_str()),
            (StatusCode::BAD_REQUEST, "bad_request"),
            "{bad}"
        );
        assert_eq!(
            env.send(
                Method::GET,
                &format!("/v1/agents/pa/files/{bad}"),
                Some(&key),
                None,
                Vec::new()
            )
            .await
            .0,
            StatusCode::BAD_REQUEST
        );
    }
    assert_eq!(
        env.send(
            Method::PUT,
            "/v1/agents/..%2F..%2Fx/files/a.wav",
            Some(&key),
            Some("audio/wav"),
            vec![1]
        )
        .await
        .0,
        StatusCode::BAD_REQUEST
    );
    assert!(!env.config.data_dir.join("secrets.json.wav").exists());
    // Content type and size limits; nothing stored when refused.
    let (status, body, _) = env
        .send(
            Method::PUT,
            "/v1/agents/pa/files/x.exe",
            Some(&key),
            Some("application/x-msdownload"),
            vec![1],
        )
        .await;
    assert_eq!(
        (status, error_code(&body).as_str()),
        (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
    );
    let (status, body, _) = env
        .send(
            Method::PUT,
            "/v1/agents/pa/files/big.wav",
            Some(&key),
            Some("audio/wav"),
            vec![0; 5000],
        )
        .await;
    assert_eq!(
        (status, error_code(&body).as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
    );
    let (_, list) = env
        .call(Method::GET, "/v1/agents/pa/files", Some(&key), None)
        .await;
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert!(!env.config.data_dir.join("files/pa/big.wav").exists());
    assert!(
        env.config
            .data_dir
            .join("files/pa/greetings/hello.wav")
            .exists()
    );
    let (status, _) = env.call(Method::DELETE, file, Some(&key), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(
        !env.config
            .data_dir
            .join("files/pa/greetings/hello.wav")
            .exists()
    );
}

async fn gdpr_export_then_delete_removes_everything_of_a_user(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let key = env.agent_key("pa", None).await;
    env.call(
        Method::POST,
        "/v1/auth/register",
        None,
        Some(json!({"email": "dana@example.com", "password": "dana-password"})),
    )
    .await;
    let session = env.login("dana@example.com", "dana-password").await;
    let (user_id, token) = (
        session["user_id"].as_str().unwrap().to_string(),
        session["access_token"].as_str().unwrap().to_string(),
    );
    for title in ["a", "b"] {
        env.call(
            Method::POST,
            "/v1/agents/pa/db/tasks",
            Some(&key),
            Some(json!({"userId": user_id, "title": title})),
        )
        .await;
    }
    env.call(
        Method::POST,
        "/v1/agents/pa/db/tasks",
        Some(&key),
        Some(json!({"userId": "someone-else", "title": "c"})),
    )
    .await;
    let (status, _, _) = env
        .send(
            Method::PUT,
            &format!("/v1/agents/pa/files/dana.wav?user_id={user_id}"),
            Some(&key),
            Some("audio/wav"),
            vec![1, 2, 3],
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, other_user) = env.user("user").await;
    let (status, _) = env
        .call(
            Method::GET,
            &format!("/v1/users/{user_id}/export"),
            Some(&other_user),
            None,
        )
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "users export only themselves"
    );
    let (status, export, headers) = env
        .send(
            Method::GET,
            &format!("/v1/users/{user_id}/export"),
            Some(&token),
            None,
            Vec::new(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{export}");
    assert!(
        headers["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment")
    );
    assert_eq!(export["user"]["email"], "dana@example.com");
    assert_eq!(export["documents"].as_array().unwrap().len(), 2);
    assert_eq!(export["files"][0]["content_base64"], "AQID");
    assert!(
        export["audit"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "auth.login")
    );
    assert!(
        !export.to_string().contains("password_hash") && !export.to_string().contains("argon2")
    );
    let (status, report) = env
        .call(
            Method::DELETE,
            &format!("/v1/users/{user_id}"),
            Some(&env.admin_token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(
        (report["documents"].as_u64(), report["files"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(
        common::count_documents(&env).await,
        1,
        "only the other user's document remains"
    );
    assert!(!env.config.data_dir.join("files/pa/dana.wav").exists());
    assert_eq!(
        env.call(Method::GET, "/v1/auth/me", Some(&token), None)
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    let (status, _) = env
        .call(
            Method::POST,
            "/v1/auth/login",
            None,
            Some(json!({"email": "dana@example.com", "password": "dana-password"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (_, audit) = env
        .call(Method::GET, "/v1/audit", Some(&env.admin_token), None)
        .await;
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert!(
        actions.contains(&"gdpr.delete") && actions.contains(&"gdpr.export"),
        "{actions:?}"
    );
    assert_eq!(
        env.call(
            Method::DELETE,
            &format!("/v1/users/{user_id}"),
            Some(&env.admin_token),
            None
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
}

on_both_backends!(
    storage_round_trip_signed_urls_and_path_traversal,
    gdpr_export_then_delete_removes_everything_of_a_user,
);
