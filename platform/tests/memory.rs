//! Cross-agent memory on both databases: agent A writes, agent B without a grant gets 403 and
//! reads once granted; TTLs expire entries; semantic search finds the relevant fact first for
//! paraphrased questions that share no words with it; bad input gets a 4xx each and stores
//! nothing; limits answer 409; a user's memory goes with their GDPR export and deletion.

mod common;

use axum::http::{Method, StatusCode};
use common::{Backend, Env, error_code};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const NS: &str = "orders-memory";

async fn put(env: &Env, token: &str, ns: &str, key: &str, body: Value) -> (StatusCode, Value) {
    env.call(
        Method::PUT,
        &format!("/v1/memory/{ns}/keys/{key}"),
        Some(token),
        Some(body),
    )
    .await
}

async fn get(env: &Env, token: &str, ns: &str, key: &str) -> (StatusCode, Value) {
    env.call(
        Method::GET,
        &format!("/v1/memory/{ns}/keys/{key}"),
        Some(token),
        None,
    )
    .await
}

async fn grant(env: &Env, token: &str, ns: &str, who: &str, access: &str) -> (StatusCode, Value) {
    env.call(
        Method::PUT,
        &format!("/v1/memory/{ns}/grants/{who}"),
        Some(token),
        Some(json!({"access": access})),
    )
    .await
}

async fn search(env: &Env, token: &str, ns: &str, query: &str) -> (StatusCode, Value) {
    env.call(
        Method::POST,
        &format!("/v1/memory/{ns}/facts/search"),
        Some(token),
        Some(json!({"query": query, "k": 3})),
    )
    .await
}

/// Rows in the memory tables, read directly from the database.
async fn stored_rows(env: &Env) -> i64 {
    let db = env.db().await;
    let mut total = 0;
    for table in [
        "memory_namespaces",
        "memory_entries",
        "memory_facts",
        "memory_grants",
    ] {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
            .fetch_one(&db.pool)
            .await
            .unwrap();
        total += sqlx::Row::get::<i64, _>(&row, 0);
    }
    total
}

async fn grants_gate_every_access(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let a = env.agent_key("planner", None).await;
    let b = env.agent_key("support", None).await;
    let (status, entry) = put(&env, &a, NS, "cart:42", json!({"value": {"items": 3}})).await;
    assert_eq!(status, StatusCode::OK, "{entry}");
    assert_eq!(entry["updated_by"], "agent:planner");
    assert_eq!(entry["expires_at"], Value::Null);
    // A second key of the same agent is the same owner.
    let a2 = env.agent_key("planner", None).await;
    assert_eq!(get(&env, &a2, NS, "cart:42").await.0, StatusCode::OK);

    // B has no grant: every read, write and management call is refused.
    let denied = [
        get(&env, &b, NS, "cart:42").await,
        put(&env, &b, NS, "cart:42", json!({"value": 1})).await,
        env.call(
            Method::GET,
            &format!("/v1/memory/{NS}/keys"),
            Some(&b),
            None,
        )
        .await,
        env.call(
            Method::DELETE,
            &format!("/v1/memory/{NS}/keys/cart:42"),
            Some(&b),
            None,
        )
        .await,
        grant(&env, &b, NS, "support", "write").await,
        env.call(Method::GET, &format!("/v1/memory/{NS}"), Some(&b), None)
            .await,
    ];
    for (status, body) in denied {
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert_eq!(error_code(&body), "forbidden");
    }
    // An end user is not an agent-data principal at all.
    let (_, user) = env.user("user").await;
    assert_eq!(
        get(&env, &user, NS, "cart:42").await.0,
        StatusCode::FORBIDDEN
    );

    // Read grant: B reads and lists, still may not write.
    let (status, body) = grant(&env, &a, NS, "support", "read").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["principal"], "agent:support");
    let (status, body) = get(&env, &b, NS, "cart:42").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["value"], json!({"items": 3}));
    let (status, page) = env
        .call(
            Method::GET,
            &format!("/v1/memory/{NS}/keys?prefix=cart:"),
            Some(&b),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["keys"][0]["key"], "cart:42");
    let (status, _) = put(&env, &b, NS, "cart:42", json!({"value": 0})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Write grant (upgrading the read one): B writes; A sees it.
    assert_eq!(
        grant(&env, &a, NS, "agent:support", "write").await.0,
        StatusCode::OK
    );
    let (status, body) = put(&env, &b, NS, "cart:42", json!({"value": {"items": 4}})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["updated_by"], "agent:support");
    assert_eq!(get(&env, &a, NS, "cart:42").await.1["value"]["items"], 4);
    let (status, info) = env
        .call(Method::GET, &format!("/v1/memory/{NS}"), Some(&a), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{info}");
    assert_eq!(info["owner"], "agent:planner");
    assert_eq!(info["grants"][0]["access"], "write");
    assert_eq!(info["keys"], 1);

    // Revoked: B is out again. Admins always get in.
    let (status, _) = env
        .call(
            Method::DELETE,
            &format!("/v1/memory/{NS}/grants/support"),
            Some(&a),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(get(&env, &b, NS, "cart:42").await.0, StatusCode::FORBIDDEN);
    assert_eq!(
        get(&env, &env.admin_token, NS, "cart:42").await.0,
        StatusCode::OK
    );
    // Reading a namespace nobody created is 404, not an implicit creation.
    assert_eq!(
        get(&env, &b, "nobody-wrote-here", "k").await.0,
        StatusCode::NOT_FOUND
    );

    // Writes are on the event bus (names, never values) and in the audit log.
    let (status, page) = env
        .call(
            Method::GET,
            "/v1/events?topic=memory.%3E",
            Some(&env.admin_token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let events = page["events"].as_array().unwrap();
    assert!(
        events
            .iter()
            .any(|e| e["topic"] == "memory.key.put" && e["data"]["by"] == "agent:support"),
        "{page}"
    );
    assert!(events.iter().all(|e| e["data"].get("value").is_none()));

    // Deleting a key, then the namespace.
    let (status, _) = env
        .call(
            Method::DELETE,
            &format!("/v1/memory/{NS}/keys/cart:42"),
            Some(&a),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(get(&env, &a, NS, "cart:42").await.0, StatusCode::NOT_FOUND);
    let (status, _) = env
        .call(Method::DELETE, &format!("/v1/memory/{NS}"), Some(&a), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(stored_rows(&env).await, 0);
}

async fn entries_expire_after_their_ttl(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let a = env.agent_key("planner", None).await;
    let (status, body) = put(
        &env,
        &a,
        NS,
        "session",
        json!({"value": "short", "ttl_seconds": 1}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["expires_at"].as_i64().unwrap() > body["created_at"].as_i64().unwrap());
    assert_eq!(
        put(&env, &a, NS, "profile", json!({"value": "long"}))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(get(&env, &a, NS, "session").await.0, StatusCode::OK);
    let started = Instant::now();
    loop {
        let (status, _) = get(&env, &a, NS, "session").await;
        if status == StatusCode::NOT_FOUND {
            break;
        }
        assert_eq!(status, StatusCode::OK);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "a 1 s TTL still readable after 5 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, page) = env
        .call(
            Method::GET,
            &format!("/v1/memory/{NS}/keys"),
            Some(&a),
            None,
        )
        .await;
    let keys: Vec<&str> = page["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["profile"]);
    // Writing again revives the key with a new TTL (or none).
    assert_eq!(
        put(&env, &a, NS, "session", json!({"value": "again"}))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(get(&env, &a, NS, "session").await.1["value"], "again");
}

async fn semantic_search_finds_paraphrased_facts(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let a = env.agent_key("planner", None).await;
    let b = env.agent_key("support", None).await;
    let facts = [
        "The order ships from the Denver warehouse on Tuesdays",
        "The customer prefers to be contacted by email, never by phone",
        "Refunds are credited to the original card within five business days",
        "The support line is staffed from nine to five on weekdays",
    ];
    let mut ids = Vec::new();
    for (i, text) in facts.iter().enumerate() {
        let (status, body) = env
            .call(
                Method::POST,
                &format!("/v1/memory/{NS}/facts"),
                Some(&a),
                Some(json!({"text": text, "metadata": {"n": i}})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        ids.push(body["id"].as_str().unwrap().to_string());
    }
    assert_eq!(
        search(&env, &b, NS, "when does my package leave the depot")
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        grant(&env, &a, NS, "support", "read").await.0,
        StatusCode::OK
    );
    for (query, expected) in [
        ("when does my package leave the depot", 0),
        ("how should we reach this shopper", 1),
        ("how long until I get my money back", 2),
        ("what hours can I call for help", 3),
    ] {
        let (status, found) = search(&env, &b, NS, query).await;
        assert_eq!(status, StatusCode::OK, "{found}");
        let found = found.as_array().unwrap();
        assert_eq!(found.len(), 3, "k bounds the answer");
        assert_eq!(
            found[0]["fact"]["text"], facts[expected],
            "{query}: {found:?}"
        );
        assert_eq!(found[0]["fact"]["metadata"]["n"], expected);
        let scores: Vec<f64> = found.iter().map(|f| f["score"].as_f64().unwrap()).collect();
        assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    }
    // min_score filters out the unrelated facts.
    let (_, found) = env
        .call(
            Method::POST,
            &format!("/v1/memory/{NS}/facts/search"),
            Some(&b),
            Some(json!({"query": "when does my package leave the depot", "k": 10, "min_score": 0.99})),
        )
        .await;
    assert_eq!(found, json!([]));
    // A read grant does not delete; the owner does, and the fact is gone from searches.
    let path = format!("/v1/memory/{NS}/facts/{}", ids[0]);
    assert_eq!(
        env.call(Method::DELETE, &path, Some(&b), None).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        env.call(Method::DELETE, &path, Some(&a), None).await.0,
        StatusCode::NO_CONTENT
    );
    let (_, found) = search(&env, &b, NS, "when does my package leave the depot").await;
    assert!(
        found
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["fact"]["id"] != ids[0].as_str())
    );
    let (status, listed) = env
        .call(
            Method::GET,
            &format!("/v1/memory/{NS}/facts"),
            Some(&b),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed.as_array().unwrap().len(), 3);
}

async fn bad_input_is_refused_and_stores_nothing(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let a = env.agent_key("planner", None).await;
    let long_key = "k".repeat(257);
    let big = "x".repeat(64 * 1024 + 1);
    let long_text = "word ".repeat(401);
    let keys = format!("/v1/memory/{NS}/keys/k");
    let facts = format!("/v1/memory/{NS}/facts");
    let cases: Vec<(Method, String, Option<Value>, u16)> = vec![
        (
            Method::PUT,
            "/v1/memory/bad%20name/keys/k".into(),
            Some(json!({"value": 1})),
            400,
        ),
        (
            Method::PUT,
            format!("/v1/memory/{}/keys/k", "n".repeat(65)),
            Some(json!({"value": 1})),
            400,
        ),
        (
            Method::PUT,
            format!("/v1/memory/{NS}/keys/{long_key}"),
            Some(json!({"value": 1})),
            400,
        ),
        (
            Method::PUT,
            format!("/v1/memory/{NS}/keys/a%2Fb"),
            Some(json!({"value": 1})),
            400,
        ),
        (
            Method::PUT,
            format!("/v1/memory/{NS}/keys/caf%C3%A9"),
            Some(json!({"value": 1})),
            400,
        ),
        (Method::PUT, keys.clone(), Some(json!({"value": null})), 400),
        (Method::PUT, keys.clone(), Some(json!({})), 422),
        (Method::PUT, keys.clone(), Some(json!({"value": big})), 400),
        (
            Method::PUT,
            keys.clone(),
            Some(json!({"value": 1, "ttl_seconds": 0})),
            400,
        ),
        (
            Method::PUT,
            keys.clone(),
            Some(json!({"value": 1, "ttl_seconds": -1})),
            400,
        ),
        (
            Method::PUT,
            keys.clone(),
            Some(json!({"value": 1, "ttl_seconds": 31_536_001})),
            400,
        ),
        (
            Method::PUT,
            keys.clone(),
            Some(json!({"value": 1, "ttl_seconds": "soon"})),
            422,
        ),
        (
            Method::PUT,
            keys.clone(),
            Some(json!({"value": 1, "owner": "me"})),
            422,
        ),
        (Method::POST, facts.clone(), Some(json!({"text": ""})), 400),
        (
            Method::POST,
            facts.clone(),
            Some(json!({"text": "   "})),
            400,
        ),
        (
            Method::POST,
            facts.clone(),
            Some(json!({"text": long_text})),
            400,
        ),
        (
            Method::POST,
            facts.clone(),
            Some(json!({"text": "a fact", "metadata": [1]})),
            422,
        ),
        (
            Method::POST,
            facts.clone(),
            Some(json!({"text": "a fact", "metadata": {"x": "y".repeat(9000)}})),
            400,
        ),
        (
            Method::POST,
            facts.clone(),
            Some(json!({"text": "a fact", "ttl_seconds": 0})),
            400,
        ),
        (
            Method::POST,
            format!("{facts}/search"),
            Some(json!({"query": "q", "k": 0})),
            400,
        ),
        (
            Method::POST,
            format!("{facts}/search"),
            Some(json!({"query": "q", "k": 51})),
            400,
        ),
        (
            Method::POST,
            format!("{facts}/search"),
            Some(json!({"query": "q", "min_score": 2})),
            400,
        ),
        (
            Method::POST,
            format!("{facts}/search"),
            Some(json!({"query": ""})),
            400,
        ),
        (
            Method::PUT,
            format!("/v1/memory/{NS}/grants/root:x"),
            Some(json!({"access": "read"})),
            400,
        ),
        (
            Method::PUT,
            format!("/v1/memory/{NS}/grants/support"),
            Some(json!({"access": "admin"})),
            422,
        ),
        (
            Method::GET,
            format!("/v1/memory/{NS}/keys?limit=0"),
            None,
            400,
        ),
        (
            Method::GET,
            format!("/v1/memory/{NS}/keys?limit=abc"),
            None,
            400,
        ),
        (
            Method::GET,
            format!("/v1/memory/{NS}/keys?prefix=a%2Fb"),
            None,
            400,
        ),
        // Nothing exists yet: reads, deletes and grants on it are 404.
        (Method::GET, keys.clone(), None, 404),
        (Method::DELETE, keys.clone(), None, 404),
        (
            Method::PUT,
            format!("/v1/memory/{NS}/grants/support"),
            Some(json!({"access": "read"})),
            404,
        ),
        (
            Method::POST,
            format!("{facts}/search"),
            Some(json!({"query": "q"})),
            404,
        ),
    ];
    for (method, path, body, expected) in cases {
        let (status, answer) = env
            .call(method.clone(), &path, Some(&a), body.clone())
            .await;
        assert_eq!(
            status.as_u16(),
            expected,
            "{method} {path} {body:?}: {answer}"
        );
        error_code(&answer);
    }
    // Not JSON at all.
    let (status, answer, _) = env
        .send(
            Method::PUT,
            &keys,
            Some(&a),
            Some("application/json"),
            b"{nope".to_vec(),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    let (status, _, _) = env
        .send(
            Method::PUT,
            &keys,
            Some(&a),
            Some("text/plain"),
            b"1".to_vec(),
        )
        .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(stored_rows(&env).await, 0, "bad input stored something");
}

async fn limits_answer_conflict(backend: Backend) {
    let Some(env) = Env::with(backend, |c| {
        c.memory.max_keys_per_namespace = 2;
        c.memory.max_facts_per_namespace = 1;
    })
    .await
    else {
        return;
    };
    let a = env.agent_key("planner", None).await;
    for key in ["one", "two"] {
        assert_eq!(
            put(&env, &a, NS, key, json!({"value": 1})).await.0,
            StatusCode::OK
        );
    }
    let (status, body) = put(&env, &a, NS, "three", json!({"value": 1})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(error_code(&body), "conflict");
    // Overwriting an existing key is not a new one.
    assert_eq!(
        put(&env, &a, NS, "two", json!({"value": 2})).await.0,
        StatusCode::OK
    );
    let facts = format!("/v1/memory/{NS}/facts");
    let (status, _) = env
        .call(
            Method::POST,
            &facts,
            Some(&a),
            Some(json!({"text": "first fact"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = env
        .call(
            Method::POST,
            &facts,
            Some(&a),
            Some(json!({"text": "second fact"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (_, page) = env
        .call(
            Method::GET,
            &format!("/v1/memory/{NS}/keys"),
            Some(&a),
            None,
        )
        .await;
    assert_eq!(page["keys"].as_array().unwrap().len(), 2);
    // Pagination walks the keys in order.
    let (_, first) = env
        .call(
            Method::GET,
            &format!("/v1/memory/{NS}/keys?limit=1"),
            Some(&a),
            None,
        )
        .await;
    assert_eq!(first["keys"][0]["key"], "one");
    assert_eq!(first["next_after"], "one");
    let (_, second) = env
        .call(
            Method::GET,
            &format!("/v1/memory/{NS}/keys?limit=1&after=one"),
            Some(&a),
            None,
        )
        .await;
    assert_eq!(second["keys"][0]["key"], "two");
    assert_eq!(second["next_after"], Value::Null);
}

async fn a_users_memory_goes_with_gdpr_export_and_deletion(backend: Backend) {
    let Some(env) = Env::new(backend).await else {
        return;
    };
    let (user_id, token) = env.user("developer").await;
    assert_eq!(
        put(
            &env,
            &token,
            "my-notes",
            "todo",
            json!({"value": ["call Ann"]})
        )
        .await
        .0,
        StatusCode::OK
    );
    // Someone else's grant to the user is revoked with the account.
    let a = env.agent_key("planner", None).await;
    put(&env, &a, NS, "k", json!({"value": 1})).await;
    assert_eq!(
        grant(&env, &a, NS, &format!("user:{user_id}"), "read")
            .await
            .0,
        StatusCode::OK
    );
    let (status, export) = env
        .call(
            Method::GET,
            &format!("/v1/users/{user_id}/export"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{export}");
    assert_eq!(export["memory"][0]["name"], "my-notes");
    assert_eq!(
        export["memory"][0]["entries"][0]["value"],
        json!(["call Ann"])
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
    assert_eq!(report["memory_namespaces"], 1);
    assert_eq!(
        get(&env, &env.admin_token, "my-notes", "todo").await.0,
        StatusCode::NOT_FOUND
    );
    let (_, info) = env
        .call(Method::GET, &format!("/v1/memory/{NS}"), Some(&a), None)
        .await;
    assert_eq!(info["grants"], json!([]));
}

async fn the_typed_client_reaches_memory_over_http(backend: Backend) {
    use dartmouth_platform::PlatformError;
    use dartmouth_platform::auth::Role;
    use dartmouth_platform::auth::routes::CreateApiKey;
    use dartmouth_platform::client::PlatformClient;
    use dartmouth_platform::memory::GrantAccess;
    use dartmouth_platform::memory::facts::NewFact;
    use dartmouth_platform::memory::keys::ListKeys;
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
    let mut session = None;
    for _ in 0..100 {
        if let Ok(s) = client
            .login(common::ADMIN_EMAIL, common::ADMIN_PASSWORD)
            .await
        {
            session = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let admin = client.with_credential(&session.expect("server up").access_token);
    let mut keys = Vec::new();
    for agent in ["planner", "support"] {
        let created = admin
            .create_api_key(&CreateApiKey {
                name: agent.into(),
                role: Role::Agent,
                agent_id: Some(agent.into()),
                scopes: None,
            })
            .await
            .unwrap();
        keys.push(client.with_credential(&created.key));
    }
    let (a, b) = (&keys[0], &keys[1]);
    let entry = a
        .memory_put(NS, "cart:42", json!({"items": 3}), Some(3600))
        .await
        .unwrap();
    assert!(entry.expires_at.is_some());
    let err = b.memory_get(NS, "cart:42").await.unwrap_err();
    assert!(
        matches!(&err, PlatformError::Api { status: 403, code, .. } if code == "forbidden"),
        "{err}"
    );
    a.memory_grant(NS, "support", GrantAccess::Read)
        .await
        .unwrap();
    assert_eq!(b.memory_get(NS, "cart:42").await.unwrap().value["items"], 3);
    let page = b
        .memory_list(
            NS,
            &ListKeys {
                prefix: Some("cart:".into()),
                ..ListKeys::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(page.keys.len(), 1);
    let fact = a
        .memory_add_fact(
            NS,
            &NewFact {
                text: "The order ships from the Denver warehouse on Tuesdays".into(),
                metadata: Default::default(),
                ttl_seconds: None,
            },
        )
        .await
        .unwrap();
    let found = b
        .memory_search_facts(NS, "when does my package leave the depot", 3, 0.0)
        .await
        .unwrap();
    assert_eq!(found[0].fact.id, fact.id);
    assert_eq!(a.memory_namespace(NS).await.unwrap().facts, 1);
    a.memory_revoke(NS, "support").await.unwrap();
    assert!(b.memory_get(NS, "cart:42").await.is_err());
    a.memory_delete_fact(NS, &fact.id).await.unwrap();
    a.memory_delete(NS, "cart:42").await.unwrap();
    a.memory_drop(NS).await.unwrap();
    assert!(a.memory_namespace(NS).await.is_err());
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    common::drop_test_schema(&config);
}

on_both_backends!(
    grants_gate_every_access,
    entries_expire_after_their_ttl,
    semantic_search_finds_paraphrased_facts,
    bad_input_is_refused_and_stores_nothing,
    limits_answer_conflict,
    a_users_memory_goes_with_gdpr_export_and_deletion,
    the_typed_client_reaches_memory_over_http,
);
