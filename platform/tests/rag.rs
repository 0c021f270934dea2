//! The RAG engine: a fixture knowledge base of five documents (Markdown, HTML, text, PDF),
//! recall@3 over 28 questions, citations, replacement, deletion, index rebuild, and bad input
//! that stores nothing — on SQLite and PostgreSQL.

mod common;

use axum::http::{Method, StatusCode};
use common::{Backend, Env, error_code};
use serde_json::{Value, json};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/kb");

/// (question, expected document, a fact the passage must contain)
const QUESTIONS: &[(&str, &str, &str)] = &[
    (
        "How long does the boat to Wrenfield take?",
        "ferry-schedule.md",
        "55 minutes",
    ),
    (
        "What time is the first Sunday sailing on the Northern route?",
        "ferry-schedule.md",
        "08:15",
    ),
    (
        "Which crossing can take lorries?",
        "ferry-schedule.md",
        "heavy goods",
    ),
    (
        "How old is the lighthouse at Cormorant Point?",
        "ferry-schedule.md",
        "1871",
    ),
    (
        "What is the price of a one-way adult ticket to Wrenfield?",
        "ferry-schedule.md",
        "14 euros",
    ),
    (
        "Do toddlers need a ticket?",
        "ferry-schedule.md",
        "under four travel free",
    ),
    (
        "Is it cheaper to book on the internet?",
        "ferry-schedule.md",
        "10 percent",
    ),
    (
        "When does the winter schedule begin?",
        "ferry-schedule.md",
        "first Monday of November",
    ),
    (
        "How many suitcases can I take without paying?",
        "baggage-policy.html",
        "two pieces",
    ),
    (
        "Can my dog come with me into the cafe?",
        "baggage-policy.html",
        "not in the main passenger lounge",
    ),
    (
        "What does it cost to take a bike on the ferry?",
        "baggage-policy.html",
        "3 euros per crossing",
    ),
    (
        "May I recharge my electric bike during the trip?",
        "baggage-policy.html",
        "must not be charged",
    ),
    (
        "How long do you keep things passengers left behind?",
        "baggage-policy.html",
        "30 days",
    ),
    ("Can I bring fireworks?", "baggage-policy.html", "Fireworks"),
    (
        "How many loyalty points do I get for each euro?",
        "loyalty-program.txt",
        "one point for every euro",
    ),
    (
        "How many trips are needed to reach the Breaker tier?",
        "loyalty-program.txt",
        "120 crossings",
    ),
    (
        "What can I get for 100 points?",
        "loyalty-program.txt",
        "5 euro voucher",
    ),
    (
        "What does the monthly commuter ticket cost?",
        "loyalty-program.txt",
        "95 euros",
    ),
    ("Do my points run out?", "loyalty-program.txt", "18 months"),
    (
        "Who started the ferry company?",
        "company-history.md",
        "Margit Sellanes",
    ),
    (
        "How many people fit on the flagship Margit?",
        "company-history.md",
        "600 passengers",
    ),
    (
        "Which vessel does the sightseeing cruise use?",
        "company-history.md",
        "restored wooden motor yacht",
    ),
    (
        "By when will all the boats be electric?",
        "company-history.md",
        "2032",
    ),
    (
        "Where can I find a life vest?",
        "safety-manual.pdf",
        "under the seats",
    ),
    (
        "What does the alarm signal sound like?",
        "safety-manual.pdf",
        "seven short blasts",
    ),
    (
        "When is a crossing called off because of the weather?",
        "safety-manual.pdf",
        "45 knots",
    ),
    (
        "Where is the first aid room?",
        "safety-manual.pdf",
        "deck 4",
    ),
    (
        "How early must wheelchair users let the company know?",
        "safety-manual.pdf",
        "48 hours before travel",
    ),
];

/// A PDF with one text line per `Tj`, `lines_per_page` lines to a page (made with lopdf).
pub fn make_pdf(lines: &[&str], lines_per_page: usize) -> Vec<u8> {
    use lopdf::content::{Content, Operation};
    use lopdf::{Document, Object, Stream, dictionary};
    let mut doc = Document::with_version("1.5");
    let pages_id = doc.new_object_id();
    let font_id = doc.add_object(dictionary! {
        "Type" => "Font", "Subtype" => "Type1", "BaseFont" => "Helvetica",
    });
    let resources_id = doc.add_object(dictionary! { "Font" => dictionary! { "F1" => font_id } });
    let mut kids = Vec::new();
    for page_lines in lines.chunks(lines_per_page.max(1)) {
        let mut operations = vec![
            Operation::new("BT", vec![]),
            Operation::new("Tf", vec!["F1".into(), 10.into()]),
            Operation::new("Td", vec![40.into(), 800.into()]),
        ];
        for line in page_lines {
            operations.push(Operation::new("Tj", vec![Object::string_literal(*line)]));
            operations.push(Operation::new("Td", vec![0.into(), (-14).into()]));
        }
        operations.push(Operation::new("ET", vec![]));
        let content = Content { operations };
        let content_id = doc.add_object(Stream::new(dictionary! {}, content.encode().unwrap()));
        let page_id = doc.add_object(dictionary! {
            "Type" => "Page", "Parent" => pages_id, "Contents" => content_id,
        });
        kids.push(page_id.into());
    }
    let count = kids.len() as i64;
    doc.objects.insert(
        pages_id,
        Object::Dictionary(dictionary! {
            "Type" => "Pages", "Kids" => kids, "Count" => count,
            "Resources" => resources_id,
            "MediaBox" => vec![0.into(), 0.into(), 595.into(), 842.into()],
        }),
    );
    let catalog_id = doc.add_object(dictionary! { "Type" => "Catalog", "Pages" => pages_id });
    doc.trailer.set("Root", catalog_id);
    let mut out = Vec::new();
    doc.save_to(&mut out).unwrap();
    out
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}/{name}")).unwrap()
}

fn safety_pdf() -> Vec<u8> {
    let text = String::from_utf8(fixture("safety-manual.txt")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    make_pdf(&lines, 4)
}

async fn upload(
    env: &Env,
    agent: &str,
    kb: &str,
    name: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (StatusCode, Value) {
    let (status, value, _) = env
        .send(
            Method::POST,
            &format!("/v1/agents/{agent}/knowledge/{kb}/documents?name={name}"),
            Some(&env.admin_token),
            Some(content_type),
            body,
        )
        .await;
    (status, value)
}

async fn search(env: &Env, agent: &str, query: &str, limit: usize) -> Vec<Value> {
    let (status, body) = env
        .call(
            Method::POST,
            &format!("/v1/agents/{agent}/knowledge/search"),
            Some(&env.admin_token),
            Some(json!({"query": query, "limit": limit})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["passages"].as_array().unwrap().clone()
}

async fn load_fixture_kb(env: &Env, agent: &str) {
    for (name, content_type, body) in [
        (
            "ferry-schedule.md",
            "text/markdown",
            fixture("ferry-schedule.md"),
        ),
        (
            "baggage-policy.html",
            "text/html; charset=utf-8",
            fixture("baggage-policy.html"),
        ),
        (
            "loyalty-program.txt",
            "text/plain",
            fixture("loyalty-program.txt"),
        ),
        (
            "company-history.md",
            "text/markdown",
            fixture("company-history.md"),
        ),
        ("safety-manual.pdf", "application/pdf", safety_pdf()),
    ] {
        let (status, body) = upload(env, agent, "ferries", name, content_type, body).await;
        assert_eq!(status, StatusCode::CREATED, "{name}: {body}");
        assert!(body["chunks"].as_i64().unwrap() >= 1);
    }
}

fn small_chunks(config: &mut dartmouth_platform::PlatformConfig) {
    config.rag.chunk_chars = 600;
    config.rag.overlap_chars = 150;
}

async fn recall_at_3_over_the_fixture_knowledge_base(backend: Backend) {
    let Some(env) = Env::with(backend, small_chunks).await else {
        return;
    };
    load_fixture_kb(&env, "ferrybot").await;
    let mut hits = 0;
    let mut misses = Vec::new();
    for (question, document, fact) in QUESTIONS {
        let passages = search(&env, "ferrybot", question, 3).await;
        let found = passages
            .iter()
            .any(|p| p["document_name"] == *document && p["text"].as_str().unwrap().contains(fact));
        if found {
            hits += 1;
        } else {
            misses.push(format!(
                "{question} → {:?}",
                passages
                    .iter()
                    .map(|p| format!(
                        "{} (bm25 {}, vector {})",
                        p["citation"], p["keyword_rank"], p["vector_rank"]
                    ))
                    .collect::<Vec<_>>()
            ));
        }
        for p in &passages {
            assert!(
                p["citation"]
                    .as_str()
                    .unwrap()
                    .contains(p["document_name"].as_str().unwrap())
            );
        }
    }
    let recall = hits as f64 / QUESTIONS.len() as f64;
    println!(
        "RAG recall@3 = {hits}/{} = {recall:.3} ({backend:?}); misses: {misses:#?}",
        QUESTIONS.len()
    );
    assert!(recall >= 0.75, "recall@3 {recall:.3}; misses: {misses:#?}");
    // PDF passages carry their page.
    let life = search(&env, "ferrybot", "Where can I find a life vest?", 3).await;
    let pdf = life
        .iter()
        .find(|p| p["document_name"] == "safety-manual.pdf")
        .expect("pdf passage");
    assert_eq!(pdf["page"], 1);
    // Another agent sees nothing of it.
    assert!(search(&env, "otherbot", "life vest", 3).await.is_empty());
}

async fn replace_delete_and_rebuild_keep_search_consistent(backend: Backend) {
    let Some(env) = Env::with(backend, small_chunks).await else {
        return;
    };
    let (status, first) = upload(
        &env,
        "a1",
        "kb",
        "note.txt",
        "text/plain",
        b"The secret door code is 4711.".to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let (_, second) = upload(
        &env,
        "a1",
        "kb",
        "note.txt",
        "text/plain",
        b"The secret door code is 9090 since March.".to_vec(),
    )
    .await;
    let hits = search(&env, "a1", "door code", 3).await;
    assert_eq!(
        hits.len(),
        1,
        "re-upload replaced the old document: {hits:?}"
    );
    assert!(hits[0]["text"].as_str().unwrap().contains("9090"));
    let (status, list) = env
        .call(
            Method::GET,
            "/v1/agents/a1/knowledge/kb/documents",
            Some(&env.admin_token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_ne!(first["id"], second["id"]);
    // Reindex keeps results.
    let (status, reindexed) = env
        .call(
            Method::POST,
            "/v1/agents/a1/knowledge/reindex",
            Some(&env.admin_token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{reindexed}");
    assert_eq!(reindexed["chunks"], 1);
    assert_eq!(search(&env, "a1", "door code", 3).await.len(), 1);
    let id = second["id"].as_str().unwrap();
    let (status, _) = env
        .call(
            Method::DELETE,
            &format!("/v1/agents/a1/knowledge/kb/documents/{id}"),
            Some(&env.admin_token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(search(&env, "a1", "door code", 3).await.is_empty());
    let (status, body) = env
        .call(
            Method::DELETE,
            &format!("/v1/agents/a1/knowledge/kb/documents/{id}"),
            Some(&env.admin_token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&body), "not_found");
}

async fn chunk_count(env: &Env) -> i64 {
    let db = env.db().await;
    sqlx::Row::get(
        &sqlx::query("SELECT COUNT(*) FROM kb_chunks")
            .fetch_one(&db.pool)
            .await
            .unwrap(),
        0,
    )
}

async fn bad_documents_get_clear_errors_and_store_nothing(backend: Backend) {
    let Some(env) = Env::with(backend, |c| {
        c.rag.max_document_bytes = 64 * 1024;
        c.rag.max_chunks_per_document = 20;
        c.rag.chunk_chars = 200;
    })
    .await
    else {
        return;
    };
    let cases: Vec<(&str, &str, Vec<u8>, StatusCode, &str)> = vec![
        (
            "a.png",
            "image/png",
            vec![0x89, b'P', b'N', b'G'],
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "not supported",
        ),
        (
            "none",
            "",
            b"text".to_vec(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "not supported",
        ),
        (
            "scan.pdf",
            "application/pdf",
            make_pdf(&[], 1),
            StatusCode::UNPROCESSABLE_ENTITY,
            "no extractable text",
        ),
        (
            "junk.pdf",
            "application/pdf",
            b"%PDF-1.4 this is not really a pdf".to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "PDF",
        ),
        (
            "empty.txt",
            "text/plain",
            b"   \n\n  ".to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "no text",
        ),
        (
            "giant.txt",
            "text/plain",
            "word ".repeat(20_000).into_bytes(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "larger than",
        ),
        (
            "many.txt",
            "text/plain",
            "Short sentence here. ".repeat(400).into_bytes(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "chunks",
        ),
    ];
    for (name, content_type, body, status, message) in cases {
        let (got, value) = upload(&env, "a1", "kb", name, content_type, body).await;
        assert_eq!(got, status, "{name}: {value}");
        assert!(
            value["error"]["message"]
                .as_str()
                .unwrap()
                .contains(message),
            "{name}: {value}"
        );
    }
    let (status, value) = upload(
        &env,
        "a1",
        "bad%20kb!",
        "x.txt",
        "text/plain",
        b"hello".to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{value}");
    assert_eq!(chunk_count(&env).await, 0, "nothing half-stored");
    let (_, list) = env
        .call(
            Method::GET,
            "/v1/agents/a1/knowledge/kb/documents",
            Some(&env.admin_token),
            None,
        )
        .await;
    assert!(list.as_array().unwrap().is_empty());
    let (status, value) = env
        .call(
            Method::POST,
            "/v1/agents/a1/knowledge/search",
            Some(&env.admin_token),
            Some(json!({"query": "  "})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{value}");
    // An agent key may not write another agent's knowledge.
    let key = env.agent_key("a2", None).await;
    let (status, _, _) = env
        .send(
            Method::POST,
            "/v1/agents/a1/knowledge/kb/documents?name=x",
            Some(&key),
            Some("text/plain"),
            b"x".to_vec(),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

on_both_backends!(
    recall_at_3_over_the_fixture_knowledge_base,
    replace_delete_and_rebuild_keep_search_consistent,
    bad_documents_get_clear_errors_and_store_nothing,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_keyword_index_is_rebuilt_from_the_database_after_loss() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::test_config(Backend::Sqlite, dir.path()).unwrap();
    {
        let env = Env::with(Backend::Sqlite, |c| *c = config.clone())
            .await
            .unwrap();
        let (status, _) = upload(
            &env,
            "a1",
            "kb",
            "n.txt",
            "text/plain",
            b"Quokkas live on Rottnest Island.".to_vec(),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    std::fs::remove_dir_all(dir.path().join("rag-index")).unwrap();
    let env = Env::with(Backend::Sqlite, |c| *c = config.clone())
        .await
        .unwrap();
    let hits = search(&env, "a1", "quokkas", 3).await;
    assert_eq!(hits.len(), 1);
    assert!(
        hits[0]["keyword_rank"].is_number(),
        "keyword side rebuilt: {hits:?}"
    );
}
