//! A real listening server on 127.0.0.1:0 driven by the typed Rust client — on SQLite and PostgreSQL.

mod common;

use common::Backend;
use dartmouth_platform::PlatformError;
use dartmouth_platform::client::PlatformClient;
use dartmouth_platform::documents::QueryRequest;
use serde_json::{Value, json};

async fn real_server_with_the_typed_client(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let Some(config) = common::test_config(backend, dir.path()) else {
        return;
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(dartmouth_platform::serve(
        config.clone(),
        listener,
        async move {
            let _ = stopped.await;
        },
    ));
    let client = PlatformClient::new(format!("http://{addr}")).unwrap();
    let mut health = None;
    for _ in 0..100 {
        if let Ok(h) = client.health().await {
            health = Some(h);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(health.expect("server up").status, "ok");
    let err = client
        .login(common::ADMIN_EMAIL, "wrong-password")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, PlatformError::Api { status: 401, code, request_id, .. } if code == "unauthenticated" && !request_id.is_empty()),
        "{err}"
    );
    let session = client
        .login(common::ADMIN_EMAIL, common::ADMIN_PASSWORD)
        .await
        .unwrap();
    let admin = client.with_credential(&session.access_token);
    assert_eq!(
        admin.me().await.unwrap().role,
        dartmouth_platform::auth::Role::Admin
    );
    let key = admin
        .create_api_key(&dartmouth_platform::auth::routes::CreateApiKey {
            name: "pa".into(),
            role: dartmouth_platform::auth::Role::Agent,
            agent_id: Some("pa".into()),
            scopes: None,
        })
        .await
        .unwrap();
    let agent = client.with_credential(&key.key);
    let db = agent.db("pa");
    let doc = db
        .insert(
            "tasks",
            &json!({"title": "Follow up with client", "dueDate": 1}),
        )
        .await
        .unwrap();
    let secret = db
        .insert_encrypted("tasks", &json!({"title": "s", "pin": "1234"}), &["pin"])
        .await
        .unwrap();
    assert_eq!(
        db.get("tasks", &secret.id).await.unwrap().data["pin"],
        "1234"
    );
    let mut filter = serde_json::Map::new();
    filter.insert("title".into(), json!("Follow up with client"));
    let found = db
        .query(
            "tasks",
            &QueryRequest {
                filter,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    let updated = db
        .update("tasks", &doc.id, &json!({"done": true}))
        .await
        .unwrap();
    assert_eq!(updated.data["done"], true);
    db.delete("tasks", &doc.id).await.unwrap();
    assert!(matches!(
        db.get("tasks", &doc.id).await,
        Err(PlatformError::Api { status: 404, .. })
    ));
    agent
        .upload("pa", "voice/hi.wav", "audio/wav", vec![1, 2, 3, 4])
        .await
        .unwrap();
    assert_eq!(
        agent.download("pa", "voice/hi.wav").await.unwrap(),
        ("audio/wav".to_string(), vec![1, 2, 3, 4])
    );
    let signed = agent
        .sign_url("pa", "voice/hi.wav", Some(60))
        .await
        .unwrap();
    let fetched = reqwest::get(&signed.url).await.unwrap();
    assert_eq!(fetched.status(), 200);
    assert_eq!(fetched.bytes().await.unwrap().as_ref(), &[1, 2, 3, 4]);
    assert_eq!(agent.redact("mail a@b.com").await.unwrap(), "mail [email]");
    // A user mints a gateway room token, verifiable with the room secret and audience.
    client
        .register("rita@example.com", "rita-password")
        .await
        .unwrap();
    let rita = client
        .login("rita@example.com", "rita-password")
        .await
        .unwrap();
    let room = client
        .with_credential(&rita.access_token)
        .mint_room_token("lobby", true)
        .await
        .unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_audience(&["dartmouth-gateway"]);
    let claims = jsonwebtoken::decode::<Value>(
        &room.token,
        &jsonwebtoken::DecodingKey::from_secret(common::ROOM_SECRET.as_bytes()),
        &validation,
    )
    .unwrap()
    .claims;
    assert_eq!(
        (claims["room"].as_str(), claims["sub"].as_str()),
        (Some("lobby"), Some(rita.user_id.as_str()))
    );
    let refreshed = client.refresh(&rita.refresh_token).await.unwrap();
    assert!(client.refresh(&rita.refresh_token).await.is_err());
    assert!(
        client
            .with_credential(&refreshed.access_token)
            .me()
            .await
            .is_err(),
        "family revoked on reuse"
    );
    assert!(admin.verify_audit().await.unwrap().valid);
    let export = admin.export_user(&rita.user_id).await.unwrap();
    assert_eq!(export.user.email, "rita@example.com");
    assert_eq!(
        admin.delete_user(&rita.user_id).await.unwrap().user_id,
        rita.user_id
    );
    // CORS preflight over the wire.
    let preflight = reqwest::Client::new()
        .request(
            reqwest::Method::OPTIONS,
            format!("http://{addr}/v1/auth/login"),
        )
        .header("origin", "http://127.0.0.1:8080")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "http://127.0.0.1:8080"
    );
    stop.send(()).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(10), server)
        .await
        .expect("graceful shutdown")
        .unwrap()
        .unwrap();
    common::drop_test_schema(&config);
}

on_both_backends!(real_server_with_the_typed_client);
