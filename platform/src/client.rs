//! Typed HTTP client of the sidecar, used by the gateway (which reaches the platform only this way).
//!
//! ```no_run
//! # async fn run() -> Result<(), dartmouth_platform::PlatformError> {
//! use dartmouth_platform::client::PlatformClient;
//! let platform = PlatformClient::new("http://127.0.0.1:8081")?;
//! let session = platform.login("user@example.com", "password123").await?;
//! let me = platform.with_credential(&session.access_token).me().await?;
//! # let _ = me; Ok(()) }
//! ```

use crate::admin::{RedactRequest, RedactResponse, RotationResult};
use crate::audit::AuditVerification;
use crate::auth::routes::{
    ApiKeyCreated, ApiKeyInfo, CreateApiKey, Credentials, RefreshRequest, RoomToken,
    RoomTokenRequest, TokenPair, UserInfo, WhoAmI,
};
use crate::documents::{Document, QueryRequest, QueryResult};
use crate::error::{ErrorBody, PlatformError};
use crate::events::Event;
use crate::events::routes::{EventPage, PublishRequest};
use crate::events::transcripts::Transcript;
use crate::files::{FileInfo, SignRequest, SignedUrl};
use crate::gdpr::{DeletionReport, UserExport};
use crate::grants::Grant;
use crate::http::Health;
use crate::intel::{Analysis, AnalyzeRequest};
use crate::rag::routes::{SearchRequest, SearchResult};
use crate::rag::{KbDocument, Passage};
use crate::webhooks::routes::{CreateWebhook, Delivery, Webhook};
use reqwest::{Method, RequestBuilder, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::time::Duration;

pub(crate) fn segment(s: &str) -> String {
    crate::files::encode_segment(s)
}

/// A client bound to one sidecar base URL and, optionally, one credential (access token or API key).
#[derive(Debug, Clone)]
pub struct PlatformClient {
    base: String,
    http: reqwest::Client,
    credential: Option<String>,
}

impl PlatformClient {
    /// A client for `base_url` (e.g. `http://127.0.0.1:8081`), 30 s request timeout.
    pub fn new(base_url: impl Into<String>) -> Result<PlatformClient, PlatformError> {
        // Several dependencies may enable both rustls providers; pick one explicitly.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(64)
            .build()
            .map_err(|e| PlatformError::Transport(e.to_string()))?;
        Ok(PlatformClient {
            base: base_url.into().trim_end_matches('/').to_string(),
            http,
            credential: None,
        })
    }

    /// The same client sending `Authorization: Bearer <credential>`.
    pub fn with_credential(&self, credential: &str) -> PlatformClient {
        PlatformClient {
            credential: Some(credential.to_string()),
            ..self.clone()
        }
    }

    /// The base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    pub(crate) fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let builder = self.http.request(method, format!("{}{path}", self.base));
        match &self.credential {
            Some(c) => builder.bearer_auth(c),
            None => builder,
        }
    }

    async fn check(response: Response) -> Result<Response, PlatformError> {
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        Err(match serde_json::from_str::<ErrorBody>(&text) {
            Ok(body) => PlatformError::Api {
                status,
                code: body.error.code,
                message: body.error.message,
                request_id: body.error.request_id,
            },
            Err(_) => PlatformError::Api {
                status,
                code: "unknown".into(),
                message: text,
                request_id: String::new(),
            },
        })
    }

    pub(crate) async fn send<T: DeserializeOwned>(
        &self,
        builder: RequestBuilder,
    ) -> Result<T, PlatformError> {
        let response = builder
            .send()
            .await
            .map_err(|e| PlatformError::Transport(e.to_string()))?;
        Self::check(response)
            .await?
            .json()
            .await
            .map_err(|e| PlatformError::Transport(e.to_string()))
    }

    pub(crate) async fn send_empty(&self, builder: RequestBuilder) -> Result<(), PlatformError> {
        let response = builder
            .send()
            .await
            .map_err(|e| PlatformError::Transport(e.to_string()))?;
        Self::check(response).await.map(drop)
    }

    pub(crate) async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, PlatformError> {
        self.send(self.request(Method::POST, path).json(body)).await
    }

    /// `GET /healthz`.
    pub async fn health(&self) -> Result<Health, PlatformError> {
        self.send(self.request(Method::GET, "/healthz")).await
    }

    /// Open registration of a `user` account.
    pub async fn register(&self, email: &str, password: &str) -> Result<UserInfo, PlatformError> {
        self.post(
            "/v1/auth/register",
            &Credentials {
                email: email.into(),
                password: password.into(),
            },
        )
        .await
    }

    /// Log in; returns access and refresh tokens.
    pub async fn login(&self, email: &str, password: &str) -> Result<TokenPair, PlatformError> {
        self.post(
            "/v1/auth/login",
            &Credentials {
                email: email.into(),
                password: password.into(),
            },
        )
        .await
    }

    /// Rotate a refresh token.
    pub async fn refresh(&self, refresh_token: &str) -> Result<TokenPair, PlatformError> {
        self.post(
            "/v1/auth/refresh",
            &RefreshRequest {
                refresh_token: refresh_token.into(),
            },
        )
        .await
    }

    /// End the current session.
    pub async fn logout(&self) -> Result<(), PlatformError> {
        self.send_empty(self.request(Method::POST, "/v1/auth/logout"))
            .await
    }

    /// Verify the current credential and describe it.
    pub async fn me(&self) -> Result<WhoAmI, PlatformError> {
        self.send(self.request(Method::GET, "/v1/auth/me")).await
    }

    /// Mint a gateway room token for the current user.
    pub async fn mint_room_token(
        &self,
        room: &str,
        can_publish: bool,
    ) -> Result<RoomToken, PlatformError> {
        self.post(
            "/v1/room-tokens",
            &RoomTokenRequest {
                room: room.into(),
                can_publish,
            },
        )
        .await
    }

    /// Create an API key.
    pub async fn create_api_key(
        &self,
        request: &CreateApiKey,
    ) -> Result<ApiKeyCreated, PlatformError> {
        self.post("/v1/api-keys", request).await
    }

    /// List API keys.
    pub async fn list_api_keys(&self) -> Result<Vec<ApiKeyInfo>, PlatformError> {
        self.send(self.request(Method::GET, "/v1/api-keys")).await
    }

    /// Revoke an API key.
    pub async fn revoke_api_key(&self, key_id: &str) -> Result<(), PlatformError> {
        self.send_empty(self.request(Method::DELETE, &format!("/v1/api-keys/{}", segment(key_id))))
            .await
    }

    /// The document API of one agent.
    pub fn db(&self, agent_id: &str) -> AgentDb<'_> {
        AgentDb {
            client: self,
            agent: segment(agent_id),
        }
    }

    /// Upload a file for an agent.
    pub async fn upload(
        &self,
        agent_id: &str,
        key: &str,
        content_type: &str,
        bytes: Vec<u8>,
    ) -> Result<FileInfo, PlatformError> {
        let path = format!("/v1/agents/{}/files/{}", segment(agent_id), segment(key));
        self.send(
            self.request(Method::PUT, &path)
                .header("content-type", content_type)
                .body(bytes),
        )
        .await
    }

    /// Download a file: content type and bytes.
    pub async fn download(
        &self,
        agent_id: &str,
        key: &str,
    ) -> Result<(String, Vec<u8>), PlatformError> {
        let path = format!("/v1/agents/{}/files/{}", segment(agent_id), segment(key));
        let response = self
            .request(Method::GET, &path)
            .send()
            .await
            .map_err(|e| PlatformError::Transport(e.to_string()))?;
        let response = Self::check(response).await?;
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| PlatformError::Transport(e.to_string()))?;
        Ok((content_type, bytes.to_vec()))
    }

    /// A signed download URL (absolute) for a file.
    pub async fn sign_url(
        &self,
        agent_id: &str,
        key: &str,
        expires_in: Option<u64>,
    ) -> Result<SignedUrl, PlatformError> {
        let path = format!(
            "/v1/agents/{}/files/{}/signed-url",
            segment(agent_id),
            segment(key)
        );
        let mut signed: SignedUrl = self.post(&path, &SignRequest { expires_in }).await?;
        signed.url = format!("{}{}", self.base, signed.url);
        Ok(signed)
    }

    /// Redact PII from text.
    pub async fn redact(&self, text: &str) -> Result<String, PlatformError> {
        let r: RedactResponse = self
            .post("/v1/pii/redact", &RedactRequest { text: text.into() })
            .await?;
        Ok(r.text)
    }

    /// Verify the audit chain (admin).
    pub async fn verify_audit(&self) -> Result<AuditVerification, PlatformError> {
        self.send(self.request(Method::POST, "/v1/audit/verify"))
            .await
    }

    /// Rotate the encryption key (admin).
    pub async fn rotate_keys(&self) -> Result<RotationResult, PlatformError> {
        self.send(self.request(Method::POST, "/v1/admin/keys/rotate"))
            .await
    }

    /// Export everything of a user.
    pub async fn export_user(&self, user_id: &str) -> Result<UserExport, PlatformError> {
        self.send(self.request(
            Method::GET,
            &format!("/v1/users/{}/export", segment(user_id)),
        ))
        .await
    }

    /// Delete a user and everything theirs.
    pub async fn delete_user(&self, user_id: &str) -> Result<DeletionReport, PlatformError> {
        self.send(self.request(Method::DELETE, &format!("/v1/users/{}", segment(user_id))))
            .await
    }
}

impl PlatformClient {
    /// Publish an event (`id`: the publisher's own id, so a retry does not duplicate it).
    pub async fn publish_event(
        &self,
        topic: &str,
        data: Value,
        id: Option<&str>,
    ) -> Result<Event, PlatformError> {
        self.post(
            "/v1/events",
            &PublishRequest {
                topic: topic.into(),
                data,
                id: id.map(String::from),
            },
        )
        .await
    }

    /// Stored events matching `pattern`, after event id `after`.
    pub async fn list_events(
        &self,
        pattern: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Event>, PlatformError> {
        let mut path = format!("/v1/events?topic={}&limit={limit}", segment(pattern));
        if let Some(after) = after {
            path.push_str(&format!("&after={}", segment(after)));
        }
        let page: EventPage = self.send(self.request(Method::GET, &path)).await?;
        Ok(page.events)
    }

    /// A conversation's transcript.
    pub async fn transcript(&self, conversation_id: &str) -> Result<Transcript, PlatformError> {
        self.send(self.request(
            Method::GET,
            &format!("/v1/conversations/{}/transcript", segment(conversation_id)),
        ))
        .await
    }

    /// Register an outgoing webhook; the answer carries its signing secret.
    pub async fn create_webhook(&self, request: &CreateWebhook) -> Result<Webhook, PlatformError> {
        self.post("/v1/webhooks", request).await
    }

    /// Deliveries with `status` (`pending`, `delivered`, `dead`).
    pub async fn webhook_deliveries(&self, status: &str) -> Result<Vec<Delivery>, PlatformError> {
        self.send(self.request(
            Method::GET,
            &format!("/v1/webhooks/deliveries?status={}", segment(status)),
        ))
        .await
    }

    /// Queue a dead delivery again.
    pub async fn replay_delivery(&self, delivery_id: &str) -> Result<(), PlatformError> {
        self.send_empty(self.request(
            Method::POST,
            &format!("/v1/webhooks/deliveries/{}/replay", segment(delivery_id)),
        ))
        .await
    }

    /// Add a document to an agent's knowledge base (`content_type`: text/plain, text/markdown,
    /// text/html or application/pdf).
    pub async fn upload_knowledge(
        &self,
        agent_id: &str,
        kb: &str,
        name: &str,
        content_type: &str,
        bytes: Vec<u8>,
    ) -> Result<KbDocument, PlatformError> {
        let path = format!(
            "/v1/agents/{}/knowledge/{}/documents?name={}",
            segment(agent_id),
            segment(kb),
            segment(name)
        );
        self.send(
            self.request(Method::POST, &path)
                .header("content-type", content_type)
                .body(bytes),
        )
        .await
    }

    /// Hybrid retrieval over an agent's knowledge: the `limit` best passages with citations.
    pub async fn search_knowledge(
        &self,
        agent_id: &str,
        query: &str,
        limit: usize,
    ) -> Result<Vec<Passage>, PlatformError> {
        let result: SearchResult = self
            .post(
                &format!("/v1/agents/{}/knowledge/search", segment(agent_id)),
                &SearchRequest {
                    query: query.into(),
                    limit: Some(limit),
                    kb: None,
                },
            )
            .await?;
        Ok(result.passages)
    }

    /// Sentiment and intent of an utterance.
    pub async fn analyze(
        &self,
        text: &str,
        agent_id: Option<&str>,
    ) -> Result<Analysis, PlatformError> {
        self.post(
            "/v1/intel/analyze",
            &AnalyzeRequest {
                text: text.into(),
                agent_id: agent_id.map(String::from),
            },
        )
        .await
    }
}

/// One agent's documents, reached through [`PlatformClient::db`].
#[derive(Debug)]
pub struct AgentDb<'a> {
    client: &'a PlatformClient,
    agent: String,
}

impl AgentDb<'_> {
    fn path(&self, collection: &str) -> String {
        format!("/v1/agents/{}/db/{}", self.agent, segment(collection))
    }

    /// Insert a document (a JSON object).
    pub async fn insert(
        &self,
        collection: &str,
        document: &Value,
    ) -> Result<Document, PlatformError> {
        self.client.post(&self.path(collection), document).await
    }

    /// Insert a document, storing `encrypted_fields` encrypted at rest.
    pub async fn insert_encrypted(
        &self,
        collection: &str,
        document: &Value,
        encrypted_fields: &[&str],
    ) -> Result<Document, PlatformError> {
        let path = format!(
            "{}?encrypt={}",
            self.path(collection),
            segment(&encrypted_fields.join(","))
        );
        self.client.post(&path, document).await
    }

    /// Get a document by id.
    pub async fn get(&self, collection: &str, id: &str) -> Result<Document, PlatformError> {
        self.client
            .send(self.client.request(
                Method::GET,
                &format!("{}/{}", self.path(collection), segment(id)),
            ))
            .await
    }

    /// Query with equality filters.
    pub async fn query(
        &self,
        collection: &str,
        query: &QueryRequest,
    ) -> Result<Vec<Document>, PlatformError> {
        let result: QueryResult = self
            .client
            .post(&format!("{}/query", self.path(collection)), query)
            .await?;
        Ok(result.documents)
    }

    /// Merge fields into a document.
    pub async fn update(
        &self,
        collection: &str,
        id: &str,
        patch: &Value,
    ) -> Result<Document, PlatformError> {
        self.client
            .send(
                self.client
                    .request(
                        Method::PATCH,
                        &format!("{}/{}", self.path(collection), segment(id)),
                    )
                    .json(patch),
            )
            .await
    }

    /// Delete a document.
    pub async fn delete(&self, collection: &str, id: &str) -> Result<(), PlatformError> {
        self.client
            .send_empty(self.client.request(
                Method::DELETE,
                &format!("{}/{}", self.path(collection), segment(id)),
            ))
            .await
    }

    /// Grant another agent access to one of this agent's collections.
    pub async fn grant(&self, grant: &Grant) -> Result<(), PlatformError> {
        self.client
            .send_empty(
                self.client
                    .request(Method::PUT, &format!("/v1/agents/{}/grants", self.agent))
                    .json(grant),
            )
            .await
    }
}
