//! `dartmouth bench rag`: the RAG engine on a generated corpus of ≥ 10 000 chunks. Indexing
//! throughput (documents uploaded over HTTP: extraction, chunking, embedding, one transaction,
//! the keyword index), retrieval latency in the engine and through the gateway's HTTP client
//! (`platform::client`, which is what retrieval adds to a voice turn: the agent waits for the
//! passages before it asks the model), and the latency of an answer served from the AI response
//! cache. The sidecar runs in-process on a loopback port with its own temporary data directory.
//!
//! The corpus is generated deterministically from a fixed seed: documents about invented places,
//! each with facts the questions ask about in other words, so no question is a sentence of the
//! corpus.

use crate::stats::{header, percentile, row};
use dartmouth_platform::ai::cache::{CachedAnswer, key as cache_key};
use dartmouth_platform::ai::{ChatRequest, Message, Usage};
use dartmouth_platform::auth::Role;
use dartmouth_platform::auth::routes::CreateApiKey;
use dartmouth_platform::client::PlatformClient;
use dartmouth_platform::rag::RagConfig;
use dartmouth_platform::{
    AppState, BootstrapAdmin, PlatformConfig, PlatformError, RateLimitConfig,
};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The agent whose knowledge base the benchmark fills.
const AGENT: &str = "bench-agent";
/// Its knowledge base.
const KB: &str = "corpus";
/// Passages asked for per query (what the voice agent asks for).
const PASSAGES: usize = 3;
/// Model name of the cached chat answer.
const CACHED_MODEL: &str = "bench-cached-model";
/// Uploads in flight at once while indexing (one: SQLite takes one writer at a time).
const UPLOAD_CONCURRENCY: usize = 1;
const ADMIN_EMAIL: &str = "bench@example.com";
const ADMIN_PASSWORD: &str = "bench-password";

/// What to run.
#[derive(Debug, Clone)]
pub struct RagBenchOptions {
    /// Chunks the corpus must make at least. Default 10 000.
    pub chunks: usize,
    /// Documents the corpus is split into (more are added if they make too few chunks).
    /// Default 100.
    pub documents: usize,
    /// Questions asked (each timed in the engine and over HTTP). Default 300.
    pub queries: usize,
    /// Requests answered from the response cache. Default 300.
    pub cache_hits: usize,
    /// Target chunk length in characters. Default 400.
    pub chunk_chars: usize,
    /// Characters shared by consecutive chunks. Default 80.
    pub overlap_chars: usize,
    /// Load MiniLM for hybrid retrieval (keyword-only when off or when the model is missing).
    /// Default true.
    pub embeddings: bool,
    /// Seed of the generated corpus and questions.
    pub seed: u64,
    /// Directory of the embedded models (`None`: `$DARTMOUTH_HOME/models`).
    pub models_dir: Option<PathBuf>,
}

impl Default for RagBenchOptions {
    fn default() -> Self {
        Self {
            chunks: 10_000,
            documents: 100,
            queries: 300,
            cache_hits: 300,
            chunk_chars: 400,
            overlap_chars: 80,
            embeddings: true,
            seed: 0x5eed_0fda_2700,
            models_dir: None,
        }
    }
}

impl RagBenchOptions {
    /// A small run for smoke tests: a few hundred chunks, 40 questions, keyword-only.
    pub fn quick() -> Self {
        Self {
            chunks: 300,
            documents: 6,
            queries: 40,
            cache_hits: 40,
            embeddings: false,
            ..Self::default()
        }
    }
}

/// What the benchmark measured; `Display` prints the table.
#[derive(Debug, Clone, Default)]
pub struct RagReport {
    /// Documents uploaded.
    pub documents: usize,
    /// Chunks they made.
    pub chunks: usize,
    /// Characters of generated text.
    pub corpus_chars: usize,
    /// Wall time of all uploads.
    pub indexing: Duration,
    /// Whether retrieval was hybrid (MiniLM loaded) or keyword-only.
    pub hybrid: bool,
    /// Retrieval in the engine (`rag::search` in-process), per question.
    pub engine: Vec<Duration>,
    /// Retrieval through `platform::client` over loopback HTTP, per question.
    pub over_http: Vec<Duration>,
    /// Chat completions answered from the response cache over HTTP.
    pub cache_hit_http: Vec<Duration>,
    /// The cache lookup alone (in memory).
    pub cache_lookup: Vec<Duration>,
    /// Questions whose source document was among the passages returned.
    pub found_in_top: usize,
    /// Questions asked.
    pub questions: usize,
    /// Questions that appear verbatim in the corpus (must be 0).
    pub verbatim_questions: usize,
    /// Remarks.
    pub notes: Vec<String>,
}

impl RagReport {
    /// Chunks indexed per second.
    pub fn chunks_per_second(&self) -> f64 {
        self.chunks as f64 / self.indexing.as_secs_f64().max(1e-9)
    }
}

impl fmt::Display for RagReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "command: dartmouth bench rag")?;
        writeln!(
            f,
            "corpus: {} documents, {} chunks, {:.1} MB of generated text; retrieval {}",
            self.documents,
            self.chunks,
            self.corpus_chars as f64 / 1e6,
            if self.hybrid {
                "hybrid (BM25 + MiniLM, reciprocal-rank fusion)"
            } else {
                "keyword-only (BM25; MiniLM not loaded)"
            }
        )?;
        writeln!(
            f,
            "indexing: {:.0} chunks/s ({} chunks in {:.1} s, uploads over HTTP: extract, chunk, embed, store, index)",
            self.chunks_per_second(),
            self.chunks,
            self.indexing.as_secs_f64()
        )?;
        writeln!(f, "\n{}", header("latency (ms)"))?;
        let rows: [(&str, &[Duration]); 4] = [
            ("retrieval, in the engine", &self.engine),
            ("retrieval via platform::client (turn)", &self.over_http),
            ("cached chat answer via HTTP", &self.cache_hit_http),
            ("cache lookup alone (in memory)", &self.cache_lookup),
        ];
        for (label, samples) in rows {
            writeln!(f, "{}", row(label, samples))?;
        }
        writeln!(
            f,
            "\nRAG adds to a voice turn: p50 {} ms, p99 {} ms (the agent waits for the passages before asking the model)",
            ms(percentile(&self.over_http, 50.0)),
            ms(percentile(&self.over_http, 99.0))
        )?;
        writeln!(
            f,
            "questions: {} (none verbatim from the corpus: {} found verbatim); the source document was in the top {PASSAGES} for {} ({:.0}%)",
            self.questions,
            self.verbatim_questions,
            self.found_in_top,
            100.0 * self.found_in_top as f64 / self.questions.max(1) as f64
        )?;
        for note in &self.notes {
            writeln!(f, "note: {note}")?;
        }
        Ok(())
    }
}

fn ms(d: Option<Duration>) -> String {
    d.map_or("-".into(), |d| format!("{:.1}", d.as_secs_f64() * 1e3))
}

/// A small deterministic generator (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn pick<'a>(&mut self, words: &[&'a str]) -> &'a str {
        words[self.below(words.len())]
    }
}

const SYLLABLES: &[&str] = &[
    "bar", "cor", "dun", "el", "fen", "gal", "hol", "ind", "jor", "kel", "lum", "mar", "nor",
    "ost", "pel", "quen", "ros", "sel", "tor", "ul", "vin", "wes", "yar", "zan", "bri", "cal",
    "dra", "mir", "tal", "ven",
];
const NOUNS: &[&str] = &[
    "harbour",
    "market",
    "library",
    "bridge",
    "orchard",
    "mill",
    "council",
    "festival",
    "school",
    "lighthouse",
    "quarry",
    "garden",
    "station",
    "museum",
    "brewery",
    "chapel",
    "theatre",
    "archive",
    "workshop",
    "ferry",
    "observatory",
    "bakery",
    "forge",
    "vineyard",
    "tannery",
    "granary",
    "canal",
    "clinic",
    "courthouse",
    "stadium",
];
const ADJECTIVES: &[&str] = &[
    "old",
    "quiet",
    "crowded",
    "northern",
    "restored",
    "wooden",
    "famous",
    "narrow",
    "tidal",
    "painted",
    "ancient",
    "busy",
    "sheltered",
    "modest",
    "windy",
    "grand",
    "hidden",
    "sunny",
    "stone",
    "humble",
];
const VERBS: &[&str] = &[
    "repaired",
    "sold",
    "stored",
    "painted",
    "measured",
    "welcomed",
    "counted",
    "carried",
    "printed",
    "built",
    "cleaned",
    "guarded",
    "planted",
    "traded",
    "recorded",
    "baked",
    "shipped",
    "weighed",
    "mended",
    "displayed",
];
const THINGS: &[&str] = &[
    "barrels of cider",
    "fishing nets",
    "maps of the coast",
    "copper bells",
    "wool blankets",
    "clay pots",
    "sacks of grain",
    "lanterns",
    "ledgers",
    "oak beams",
    "bicycles",
    "telescopes",
    "loaves of rye bread",
    "woven baskets",
    "iron keys",
    "paper kites",
    "glass bottles",
    "sailcloth",
    "wheels of cheese",
    "candles",
];
const WEATHER: &[&str] = &[
    "fog rolls in from the sea",
    "the river floods",
    "snow closes the pass",
    "the wind turns",
    "the tide is low",
    "rain lasts for days",
    "the frost comes early",
    "the ice breaks",
];
const ATTRIBUTES: &[(&str, &str)] = &[
    ("harbour master", "Who is the harbour master at {e}?"),
    ("oldest bell", "Which bell is the oldest one in {e}?"),
    ("market day", "On what day does {e} hold its market?"),
    ("twin town", "Which town is {e} twinned with?"),
    ("founding year", "In what year was {e} founded?"),
    ("signature dish", "What dish is {e} known for?"),
    ("river", "Which river runs through {e}?"),
    ("patron", "Who is the patron of {e}?"),
];
const FIRST_NAMES: &[&str] = &[
    "Ilsa", "Marten", "Odile", "Teodor", "Runa", "Casimir", "Wenna", "Bertil", "Anouk", "Pieter",
    "Saskia", "Lorcan",
];

fn name(rng: &mut Rng, parts: usize) -> String {
    let syllables: Vec<&str> = (0..parts).map(|_| rng.pick(SYLLABLES)).collect();
    name_of(&syllables)
}

/// The syllables joined, capitalised.
fn name_of(syllables: &[&str]) -> String {
    let joined = syllables.concat();
    let mut chars = joined.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// One generated document: its file name, text and the facts questions ask about.
struct Document {
    name: String,
    text: String,
    facts: Vec<(usize, String)>,
}

fn fact_value(rng: &mut Rng, attribute: usize) -> String {
    match ATTRIBUTES[attribute].0 {
        "founding year" => format!("{}", 1100 + rng.below(800)),
        "market day" => rng
            .pick(&[
                "Monday",
                "Tuesday",
                "Wednesday",
                "Thursday",
                "Friday",
                "Saturday",
            ])
            .to_string(),
        "harbour master" | "patron" => format!("{} {}", rng.pick(FIRST_NAMES), name(rng, 2)),
        "oldest bell" => format!("the {} bell", name(rng, 2)),
        "signature dish" => format!("{} {}", rng.pick(ADJECTIVES), rng.pick(THINGS)),
        _ => name(rng, 3),
    }
}

fn sentence(rng: &mut Rng, entity: &str) -> String {
    match rng.below(5) {
        0 => format!(
            "The {} {} of {entity} {} {} {} near the {} {}.",
            rng.pick(ADJECTIVES),
            rng.pick(NOUNS),
            rng.pick(VERBS),
            2 + rng.below(400),
            rng.pick(THINGS),
            rng.pick(ADJECTIVES),
            rng.pick(NOUNS)
        ),
        1 => format!(
            "In {}, workers at the {} {} {} for the people of {}.",
            1500 + rng.below(520),
            rng.pick(NOUNS),
            rng.pick(VERBS),
            rng.pick(THINGS),
            name(rng, 2)
        ),
        2 => format!(
            "When {}, the {} of {entity} stays {} and the {} is {}.",
            rng.pick(WEATHER),
            rng.pick(NOUNS),
            rng.pick(ADJECTIVES),
            rng.pick(NOUNS),
            rng.pick(ADJECTIVES)
        ),
        3 => format!(
            "{} {} keeps {} {} in the {} {}.",
            rng.pick(FIRST_NAMES),
            name(rng, 2),
            3 + rng.below(90),
            rng.pick(THINGS),
            rng.pick(ADJECTIVES),
            rng.pick(NOUNS)
        ),
        _ => format!(
            "Travellers say the {} {} {} once {} {} here.",
            rng.pick(ADJECTIVES),
            rng.pick(NOUNS),
            rng.pick(&[
                "by the square",
                "on the hill",
                "at the quay",
                "past the gate"
            ]),
            rng.pick(VERBS),
            rng.pick(THINGS)
        ),
    }
}

/// A document of about `chars` characters about a place called `entity`, in Markdown.
fn document(rng: &mut Rng, index: usize, chars: usize) -> Document {
    // Unique per document (two syllables from the index), then one at random.
    let n = SYLLABLES.len();
    let entity = name_of(&[
        SYLLABLES[index % n],
        SYLLABLES[(index / n) % n],
        rng.pick(SYLLABLES),
    ]);
    let facts: Vec<(usize, String)> = (0..ATTRIBUTES.len())
        .map(|a| (a, fact_value(rng, a)))
        .collect();
    let mut text = format!("# {entity}\n\n");
    let mut next_fact = 0;
    while text.len() < chars {
        text.push_str(&format!(
            "## {} {}\n\n",
            rng.pick(ADJECTIVES),
            rng.pick(NOUNS)
        ));
        for _ in 0..4 + rng.below(4) {
            text.push_str(&sentence(rng, &entity));
            text.push(' ');
        }
        if next_fact < facts.len() && rng.below(3) == 0 {
            let (a, value) = &facts[next_fact];
            text.push_str(&format!("The {} of {entity} is {value}.", ATTRIBUTES[*a].0));
            next_fact += 1;
        }
        text.push_str("\n\n");
    }
    for (a, value) in &facts[next_fact..] {
        text.push_str(&format!(
            "The {} of {entity} is {value}.\n",
            ATTRIBUTES[*a].0
        ));
    }
    Document {
        name: format!("{}-{index}.md", entity.to_lowercase()),
        facts: facts
            .into_iter()
            .map(|(a, _)| (a, entity.clone()))
            .collect(),
        text,
    }
}

/// Questions about the documents' facts, worded as a caller would ask (never a corpus
/// sentence): (question, the document that answers it).
fn questions(rng: &mut Rng, documents: &[Document], count: usize) -> Vec<(String, String)> {
    (0..count)
        .map(|_| {
            let document = &documents[rng.below(documents.len())];
            let (attribute, entity) = &document.facts[rng.below(document.facts.len())];
            let question = ATTRIBUTES[*attribute].1.replace("{e}", entity);
            (question, document.name.clone())
        })
        .collect()
}

/// A sidecar on a loopback port over `state`; stops when the returned sender is dropped or sent.
async fn serve(
    state: AppState,
) -> Result<
    (
        String,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    ),
    PlatformError,
> {
    let router = dartmouth_platform::router(state)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let service = router.into_make_service_with_connect_info::<SocketAddr>();
        let _ = axum::serve(listener, service)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await;
    });
    Ok((base, stop, server))
}

/// Runs the benchmark.
pub async fn run(options: &RagBenchOptions) -> Result<RagReport, PlatformError> {
    let tag = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
    );
    let data_dir: PathBuf = std::env::temp_dir().join(format!("dartmouth-bench-rag-{tag}"));
    let config = PlatformConfig {
        data_dir: data_dir.clone(),
        embeddings: options.embeddings,
        models_dir: options.models_dir.clone(),
        bootstrap_admin: Some(BootstrapAdmin {
            email: ADMIN_EMAIL.into(),
            password: ADMIN_PASSWORD.into(),
        }),
        rate_limits: RateLimitConfig {
            enabled: false,
            ..RateLimitConfig::default()
        },
        rag: RagConfig {
            chunk_chars: options.chunk_chars,
            overlap_chars: options.overlap_chars,
            max_chunks_per_document: options.chunks.max(5000),
            ..RagConfig::default()
        },
        ..PlatformConfig::default()
    };
    let result = async {
        let state = AppState::build(config).await?;
        let (base, stop, server) = serve(state.clone()).await?;
        let measured = measure(&state, &base, options).await;
        let _ = stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
        measured
    }
    .await;
    let _ = std::fs::remove_dir_all(&data_dir);
    result
}

async fn measure(
    state: &AppState,
    base: &str,
    options: &RagBenchOptions,
) -> Result<RagReport, PlatformError> {
    let client = PlatformClient::new(base)?;
    let session = client.login(ADMIN_EMAIL, ADMIN_PASSWORD).await?;
    let admin = client.with_credential(&session.access_token);
    // The gateway's kind of credential: a developer key.
    let gateway_key = admin
        .create_api_key(&CreateApiKey {
            name: "bench-gateway".into(),
            role: Role::Developer,
            agent_id: None,
            scopes: None,
        })
        .await?
        .key;
    let gateway = client.with_credential(&gateway_key);
    let mut report = RagReport {
        hybrid: state.embedder.is_some(),
        ..RagReport::default()
    };
    if options.embeddings && state.embedder.is_none() {
        report.notes.push(
            "MiniLM is not loaded (run `dartmouth models fetch`): retrieval is keyword-only".into(),
        );
    }

    // Indexing: generate, then upload with a little concurrency, timing only the uploads.
    let mut rng = Rng(options.seed);
    let new_chars = options
        .chunk_chars
        .saturating_sub(options.overlap_chars)
        .max(1);
    let per_document = options.chunks.div_ceil(options.documents.max(1)) * new_chars * 11 / 10;
    let mut documents: Vec<Document> = Vec::new();
    let started = Instant::now();
    let mut indexing = Duration::ZERO;
    while report.chunks < options.chunks {
        let batch: Vec<Document> = (0..UPLOAD_CONCURRENCY)
            .map(|i| document(&mut rng, documents.len() + i, per_document))
            .collect();
        let t = Instant::now();
        let uploads = batch.iter().map(|d| {
            admin.upload_knowledge(
                AGENT,
                KB,
                &d.name,
                "text/markdown",
                d.text.as_bytes().to_vec(),
            )
        });
        for stored in futures_util::future::join_all(uploads).await {
            report.chunks += stored?.chunks as usize;
            report.documents += 1;
        }
        indexing += t.elapsed();
        report.corpus_chars += batch.iter().map(|d| d.text.len()).sum::<usize>();
        documents.extend(batch);
    }
    report.indexing = indexing;
    report.notes.push(format!(
        "corpus generated and uploaded in {:.1} s; chunks of {} characters with {} overlapping",
        started.elapsed().as_secs_f64(),
        options.chunk_chars,
        options.overlap_chars
    ));

    // Retrieval: the same questions in the engine and over HTTP.
    let asked = questions(&mut rng, &documents, options.queries);
    report.questions = asked.len();
    report.verbatim_questions = asked
        .iter()
        .filter(|(q, _)| documents.iter().any(|d| d.text.contains(q.as_str())))
        .count();
    // One warm-up each (index reader, vector cache, connection).
    let _ = dartmouth_platform::rag::search(state, AGENT, None, &asked[0].0, PASSAGES).await;
    let _ = gateway
        .search_knowledge(AGENT, &asked[0].0, PASSAGES)
        .await?;
    for (question, source) in &asked {
        let t = Instant::now();
        let passages = dartmouth_platform::rag::search(state, AGENT, None, question, PASSAGES)
            .await
            .map_err(|e| PlatformError::Transport(format!("search failed ({})", e.status())))?;
        report.engine.push(t.elapsed());
        if passages.iter().any(|p| &p.document_name == source) {
            report.found_in_top += 1;
        }
        let t = Instant::now();
        gateway.search_knowledge(AGENT, question, PASSAGES).await?;
        report.over_http.push(t.elapsed());
    }

    // The response cache: one answer stored, then asked for again and again.
    let prompt = "Summarise the opening hours of the harbour market in one sentence.";
    let request = ChatRequest {
        model: CACHED_MODEL.into(),
        messages: vec![Message {
            role: "user".into(),
            content: prompt.into(),
            images: Vec::new(),
            tool_calls: Vec::new(),
            tool_call_id: None,
        }],
        tools: Vec::new(),
        max_tokens: state.config.ai.default_max_tokens,
        temperature: None,
        stop: Vec::new(),
    };
    let key = cache_key(&request, CACHED_MODEL)
        .ok_or_else(|| PlatformError::Config("the cache request is not cacheable".into()))?;
    state.ai.cache.put(
        key.clone(),
        CachedAnswer {
            text: "The market opens at eight and closes at noon.".into(),
            tool_calls: Vec::new(),
            finish_reason: "stop".into(),
            usage: Usage {
                prompt_tokens: 20,
                completion_tokens: 12,
            },
            provider: "bench".into(),
            model: CACHED_MODEL.into(),
        },
        Duration::from_secs(3600),
        Instant::now(),
    );
    let http = reqwest::Client::new();
    let body = serde_json::json!({"model": CACHED_MODEL, "messages": [{"role": "user", "content": prompt}]});
    for i in 0..=options.cache_hits {
        let t = Instant::now();
        let response = http
            .post(format!("{base}/v1/chat/completions"))
            .bearer_auth(&gateway_key)
            .json(&body)
            .send()
            .await
            .map_err(|e| PlatformError::Transport(e.to_string()))?;
        let status = response.status();
        let answer: serde_json::Value = response
            .json()
            .await
            .map_err(|e| PlatformError::Transport(e.to_string()))?;
        if !status.is_success()
            || answer["choices"][0]["message"]["content"]
                .as_str()
                .is_none()
        {
            return Err(PlatformError::Transport(format!(
                "the cached answer was not served ({status}): {answer}"
            )));
        }
        if i > 0 {
            report.cache_hit_http.push(t.elapsed());
        }
    }
    for _ in 0..options.cache_hits.max(1) * 10 {
        let t = Instant::now();
        let hit = state.ai.cache.get(&key, Instant::now());
        report.cache_lookup.push(t.elapsed());
        if hit.is_none() {
            return Err(PlatformError::Config("the cached answer vanished".into()));
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn the_corpus_varies_and_no_question_is_a_corpus_sentence() {
        let mut rng = Rng(7);
        let documents: Vec<Document> = (0..4).map(|i| document(&mut rng, i, 6000)).collect();
        let sentences: Vec<&str> = documents
            .iter()
            .flat_map(|d| d.text.split(['.', '\n']))
            .map(str::trim)
            .filter(|s| s.len() > 20)
            .collect();
        let distinct: HashSet<&str> = sentences.iter().copied().collect();
        assert!(
            distinct.len() * 10 >= sentences.len() * 9,
            "{} distinct of {} sentences",
            distinct.len(),
            sentences.len()
        );
        let names: HashSet<&str> = documents.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names.len(), documents.len(), "one name per document");
        for (question, source) in questions(&mut rng, &documents, 100) {
            assert!(question.ends_with('?'), "{question}");
            assert!(names.contains(source.as_str()));
            assert!(
                documents.iter().all(|d| !d.text.contains(&question)),
                "asked verbatim: {question}"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_quick_run_reports_every_row() {
        let options = RagBenchOptions::quick();
        let report = run(&options).await.expect("the benchmark runs");
        println!("{report}");
        assert!(report.chunks >= options.chunks, "{report}");
        assert_eq!(report.engine.len(), options.queries);
        assert_eq!(report.over_http.len(), options.queries);
        assert_eq!(report.cache_hit_http.len(), options.cache_hits);
        assert_eq!(report.verbatim_questions, 0);
        assert!(report.chunks_per_second() > 0.0);
        for samples in [
            &report.engine,
            &report.over_http,
            &report.cache_hit_http,
            &report.cache_lookup,
        ] {
            let [p50, p95, p99] = [50.0, 95.0, 99.0].map(|p| percentile(samples, p).unwrap());
            assert!(p50 <= p95 && p95 <= p99, "{report}");
        }
        // An in-memory lookup is orders of magnitude below the HTTP request that performs it.
        assert!(
            percentile(&report.cache_lookup, 50.0) < percentile(&report.cache_hit_http, 50.0),
            "{report}"
        );
        // Keyword retrieval finds the document that states the fact asked about.
        assert!(
            report.found_in_top * 10 >= report.questions * 8,
            "found {} of {}: {report}",
            report.found_in_top,
            report.questions
        );
        let text = report.to_string();
        for label in [
            "command: dartmouth bench rag",
            "chunks/s",
            "retrieval, in the engine",
            "retrieval via platform::client",
            "cached chat answer via HTTP",
            "RAG adds to a voice turn",
        ] {
            assert!(text.contains(label), "{label} missing: {text}");
        }
    }
}
