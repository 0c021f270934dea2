//! Agent documents, filters, bad input, encryption and redaction — on SQLite and on PostgreSQL.

mod common;

use axum::http::{Method, StatusCode};
use common::{Backend, Env, error_code};
use serde_json::{Value, json};

async fn documents_insert_get_query_update_delete(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let key = env.agent_key("pa", None).await;
    let base = "/v1/agents/pa/db/tasks";
    let mut ids = Vec::new();
    for (title, priority, done) in [
        ("call client", 1, false),
        ("write report", 2, true),
        ("book flight", 1, true),
    ] {
        let (status, doc) = env
            .call(
                Method::POST,
                base,
                Some(&key),
                Some(json!({"title": title, "priority": priority, "done": done, "tags": ["x"]})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{doc}");
        assert_eq!(doc["data"]["title"], title);
        assert_eq!(doc["agent_id"], "pa");
        ids.push(doc["id"].as_str().unwrap().to_string());
    }
    let query = |filter: Value| {
        let env = &env;
        let key = key.clone();
        async move {
            let (status, body) = env
                .call(
                    Method::POST,
                    "/v1/agents/pa/db/tasks/query",
                    Some(&key),
                    Some(json!({"filter": filter})),
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
            body["documents"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["data"]["title"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        query(json!({})).await,
        ["call client", "write report", "book flight"]
    );
    assert_eq!(
        query(json!({"priority": 1})).await,
        ["call client", "book flight"]
    );
    assert_eq!(
        query(json!({"done": true, "priority": 1})).await,
        ["book flight"]
    );
    assert_eq!(
        query(json!({"title": "write report"})).await,
        ["write report"]
    );
    assert_eq!(query(json!({"missing": null})).await.len(), 3);
    assert!(query(json!({"title": "nothing"})).await.is_empty());
    let (status, page) = env
        .call(
            Method::POST,
            "/v1/agents/pa/db/tasks/query",
            Some(&key),
            Some(json!({"limit": 1, "offset": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["documents"][0]["data"]["title"], "write report");
    let (status, updated) = env
        .call(
            Method::PATCH,
            &format!("{base}/{}", ids[0]),
            Some(&key),
            Some(json!({"done": true, "tags": null})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(
        updated["data"],
        json!({"title": "call client", "priority": 1, "done": true})
    );
    let (status, got) = env
        .call(Method::GET, &format!("{base}/{}", ids[0]), Some(&key), None)
        .await;
    assert_eq!(
        (status, &got["data"]["done"]),
        (StatusCode::OK, &json!(true))
    );
    let (status, _) = env
        .call(
            Method::DELETE,
            &format!("{base}/{}", ids[1]),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = env
        .call(Method::GET, &format!("{base}/{}", ids[1]), Some(&key), None)
        .await;
    assert_eq!(
        (status, error_code(&body).as_str()),
        (StatusCode::NOT_FOUND, "not_found")
    );
    let (status, _) = env
        .call(
            Method::DELETE,
            &format!("{base}/{}", ids[1]),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Collections are separate: the same id is not visible under another collection.
    let (status, _) = env
        .call(
            Method::GET,
            &format!("/v1/agents/pa/db/notes/{}", ids[0]),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

async fn sql_metacharacters_in_filters_and_names_are_refused_or_inert(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let key = env.agent_key("pa", None).await;
    env.call(
        Method::POST,
        "/v1/agents/pa/db/tasks",
        Some(&key),
        Some(json!({"title": "keep me"})),
    )
    .await;
    let before = common::count_documents(&env).await;
    let q = "/v1/agents/pa/db/tasks/query";
    for filter in [
        json!({"title') OR 1=1 --": "x"}),
        json!({"a; DROP TABLE documents": 1}),
        json!({"$.title": "x"}),
        json!({"ti\"tle": "x"}),
    ] {
        let (status, body) = env
            .call(Method::POST, q, Some(&key), Some(json!({"filter": filter})))
            .await;
        assert_eq!(
            (status, error_code(&body).as_str()),
            (StatusCode::BAD_REQUEST, "bad_request"),
            "{filter}"
        );
    }
    for value in ["' OR '1'='1", "x\"); DROP TABLE documents; --", "%", "*"] {
        let (status, body) = env
            .call(
                Method::POST,
                q,
                Some(&key),
                Some(json!({"filter": {"title": value}})),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            body["documents"].as_array().unwrap().is_empty(),
            "value {value:?} must match literally"
        );
    }
    let (status, _) = env
        .call(
            Method::POST,
            q,
            Some(&key),
            Some(json!({"filter": {"title": {"$ne": 1}}})),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "object filter values refused"
    );
    let (status, _) = env
        .call(
            Method::POST,
            "/v1/agents/pa/db/tasks%3B%20DROP/query",
            Some(&key),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = env
        .call(Method::POST, q, Some(&key), Some(json!({"limit": 100000})))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        common::count_documents(&env).await,
        before,
        "nothing dropped or added"
    );
}

async fn bad_input_gets_clear_4xx_and_stores_nothing(backend: Backend) {
    let Some(env) = Env::with(backend, |c| c.max_body_bytes = 16 * 1024).await else {
        return;
    };
    let key = env.agent_key("pa", None).await;
    let path = "/v1/agents/pa/db/tasks";
    let before = common::count_documents(&env).await;
    let (status, body, _) = env
        .send(
            Method::POST,
            path,
            Some(&key),
            Some("application/json"),
            b"{\"title\": \"unterminated".to_vec(),
        )
        .await;
    assert_eq!(
        (status, error_code(&body).as_str()),
        (StatusCode::BAD_REQUEST, "bad_request"),
        "{body}"
    );
    let (status, body, _) = env
        .send(
            Method::POST,
            path,
            Some(&key),
            Some("text/plain"),
            b"{}".to_vec(),
        )
        .await;
    assert_eq!(
        (status, error_code(&body).as_str()),
        (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
    );
    let (status, body) = env
        .call(
            Method::POST,
            path,
            Some(&key),
            Some(json!(["not", "an", "object"])),
        )
        .await;
    assert_eq!(
        (status, error_code(&body).as_str()),
        (StatusCode::BAD_REQUEST, "bad_request")
    );
    let huge = json!({"blob": "x".repeat(64 * 1024)});
    let (status, body) = env.call(Method::POST, path, Some(&key), Some(huge)).await;
    assert_eq!(
        (status, error_code(&body).as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
        "{body}"
    );
    // Wrong types in typed bodies.
    let (status, body) = env
        .call(
            Method::POST,
            "/v1/auth/login",
            None,
            Some(json!({"email": 5, "password": true})),
        )
        .await;
    assert_eq!(
        (status, error_code(&body).as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_body")
    );
    let (status, _) = env
        .call(
            Method::POST,
            "/v1/agents/pa/db/tasks/query",
            Some(&key),
            Some(json!({"filter": "title=x"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = env
        .call(
            Method::POST,
            "/v1/agents/pa/db/tasks/query",
            Some(&key),
            Some(json!({"unknown": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = env
        .call(
            Method::POST,
            "/v1/users",
            Some(&env.admin_token),
            Some(json!({"email": "a@b.co", "password": "password-1", "role": "root"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = env
        .call(
            Method::POST,
            "/v1/auth/register",
            None,
            Some(json!({"email": "not-an-email", "password": "password-1"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = env
        .call(
            Method::POST,
            "/v1/auth/register",
            None,
            Some(json!({"email": "short@example.com", "password": "short"})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = env
        .call(
            Method::POST,
            path,
            Some(&key),
            Some(json!({"bad field": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = env
        .call(
            Method::POST,
            "/v1/agents/pa/db/tasks?encrypt=a'b",
            Some(&key),
            Some(json!({"a": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        common::count_documents(&env).await,
        before,
        "nothing stored half-way"
    );
}

async fn sensitive_fields_are_encrypted_at_rest_and_survive_rotation(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let key = env.agent_key("pa", None).await;
    let (status, doc) = env
        .call(
            Method::POST,
            "/v1/agents/pa/db/patients?encrypt=ssn,notes",
            Some(&key),
            Some(json!({"name": "Pat", "ssn": "123-45-6789", "notes": {"allergy": "penicillin"}})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{doc}");
    assert_eq!(doc["data"]["ssn"], "123-45-6789");
    assert_eq!(doc["data"]["notes"]["allergy"], "penicillin");
    let db = env.db().await;
    let raw: String = sqlx::Row::get(
        &sqlx::query("SELECT body FROM documents")
            .fetch_one(&db.pool)
            .await
            .unwrap(),
        0,
    );
    assert!(
        !raw.contains("123-45-6789") && !raw.contains("penicillin"),
        "plaintext at rest: {raw}"
    );
    assert!(raw.contains("enc1.") && raw.contains("Pat"));
    let (status, rotated) = env
        .call(
            Method::POST,
            "/v1/admin/keys/rotate",
            Some(&env.admin_token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    assert_eq!(rotated["rewrapped_fields"], 2);
    let new_kid = rotated["active_key_id"].as_str().unwrap();
    let raw: String = sqlx::Row::get(
        &sqlx::query("SELECT body FROM documents")
            .fetch_one(&db.pool)
            .await
            .unwrap(),
        0,
    );
    assert!(raw.contains(&format!("enc1.{new_kid}.")));
    let (_, got) = env
        .call(
            Method::GET,
            &format!("/v1/agents/pa/db/patients/{}", doc["id"].as_str().unwrap()),
            Some(&key),
            None,
        )
        .await;
    assert_eq!(got["data"]["ssn"], "123-45-6789");
    let (status, _) = env
        .call(Method::POST, "/v1/admin/keys/rotate", Some(&key), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

async fn transcripts_are_stored_with_pii_redacted(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let key = env.agent_key("pa", None).await;
    let text = "My email is jo@example.com and my card is 4111 1111 1111 1111, call 555-123-4567";
    let (_, doc) = env
        .call(
            Method::POST,
            "/v1/agents/pa/db/transcripts",
            Some(&key),
            Some(json!({"text": text, "turns": [{"text": text}]})),
        )
        .await;
    let expected = "My email is [email] and my card is [card], call [phone]";
    assert_eq!(doc["data"]["text"], expected);
    assert_eq!(doc["data"]["turns"][0]["text"], expected);
    let (_, other) = env
        .call(
            Method::POST,
            "/v1/agents/pa/db/tasks",
            Some(&key),
            Some(json!({"text": text})),
        )
        .await;
    assert_eq!(other["data"]["text"], text, "other collections untouched");
    let (status, redacted) = env
        .call(
            Method::POST,
            "/v1/pii/redact",
            Some(&key),
            Some(json!({"text": text})),
        )
        .await;
    assert_eq!(
        (status, redacted["text"].as_str()),
        (StatusCode::OK, Some(expected))
    );
}

on_both_backends!(
    documents_insert_get_query_update_delete,
    sql_metacharacters_in_filters_and_names_are_refused_or_inert,
    bad_input_gets_clear_4xx_and_stores_nothing,
    sensitive_fields_are_encrypted_at_rest_and_survive_rotation,
    transcripts_are_stored_with_pii_redacted,
);
