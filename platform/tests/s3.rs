//! The S3-compatible storage backend against a real S3 API on loopback. Runs when
//! `S3_TEST_ENDPOINT` is set (e.g. `moto_server -H 127.0.0.1 -p 18500` from PyPI `moto[server]`,
//! then `S3_TEST_ENDPOINT=http://127.0.0.1:18500`); otherwise prints why it is skipped.

mod common;

use axum::http::{Method, StatusCode};
use common::{Backend, Env};
use dartmouth_platform::S3Config;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_round_trip_through_an_s3_bucket() {
    let Ok(endpoint) = std::env::var("S3_TEST_ENDPOINT") else {
        eprintln!("skipped: S3_TEST_ENDPOINT is not set, so the S3 storage test does not run");
        return;
    };
    let bucket = format!("dartmouth-test-{}", std::process::id());
    // Test servers such as moto accept an unsigned bucket creation.
    let created = reqwest::Client::new()
        .put(format!("{endpoint}/{bucket}"))
        .send()
        .await
        .expect("S3 endpoint reachable");
    assert!(
        created.status().is_success(),
        "create bucket: {}",
        created.status()
    );
    let s3 = S3Config {
        bucket: bucket.clone(),
        region: "us-east-1".into(),
        endpoint: Some(endpoint.clone()),
        access_key_id: Some("test".into()),
        secret_access_key: Some("test".into()),
        allow_http: true,
    };
    let env = Env::with(Backend::Sqlite, |c| c.s3 = Some(s3))
        .await
        .unwrap();
    let key = env.agent_key("pa", None).await;
    let path = "/v1/agents/pa/files/calls%2Fone.wav";
    let (status, info, _) = env
        .send(
            Method::PUT,
            path,
            Some(&key),
            Some("audio/wav"),
            vec![9; 1000],
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{info}");
    assert!(
        !env.config.data_dir.join("files/pa/calls/one.wav").exists(),
        "bytes went to the bucket"
    );
    let listed = reqwest::get(format!("{endpoint}/{bucket}?list-type=2"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(listed.contains("pa/calls/one.wav"), "{listed}");
    let (status, _, headers) = env
        .send(Method::GET, path, Some(&key), None, Vec::new())
        .await;
    assert_eq!(
        (status, headers["content-length"].to_str().unwrap()),
        (StatusCode::OK, "1000")
    );
    let (_, signed) = env
        .call(
            Method::POST,
            &format!("{path}/signed-url"),
            Some(&key),
            Some(json!({})),
        )
        .await;
    let (status, _, _) = env
        .send(
            Method::GET,
            signed["url"].as_str().unwrap(),
            None,
            None,
            Vec::new(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = env.call(Method::DELETE, path, Some(&key), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let listed = reqwest::get(format!("{endpoint}/{bucket}?list-type=2"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!listed.contains("pa/calls/one.wav"), "{listed}");
    let (status, _) = env.call(Method::GET, path, Some(&key), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
