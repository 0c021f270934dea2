//! The memory service's methods of the typed sidecar client.

use super::GrantAccess;
use super::facts::{Fact, FactSearch, NewFact, ScoredFact};
use super::grants::{MemoryGrant, NamespaceInfo, PutGrant};
use super::keys::{KeyPage, ListKeys, MemoryEntry, PutValue};
use crate::client::{PlatformClient, segment};
use crate::error::PlatformError;
use reqwest::Method;
use serde_json::Value;

impl PlatformClient {
    /// Stores `value` under `key` in `namespace`, expiring after `ttl_seconds` when given.
    pub async fn memory_put(
        &self,
        namespace: &str,
        key: &str,
        value: Value,
        ttl_seconds: Option<i64>,
    ) -> Result<MemoryEntry, PlatformError> {
        self.send(
            self.request(
                Method::PUT,
                &format!("/v1/memory/{}/keys/{}", segment(namespace), segment(key)),
            )
            .json(&PutValue { value, ttl_seconds }),
        )
        .await
    }

    /// The entry under `key` in `namespace` (404 once expired).
    pub async fn memory_get(
        &self,
        namespace: &str,
        key: &str,
    ) -> Result<MemoryEntry, PlatformError> {
        self.send(self.request(
            Method::GET,
            &format!("/v1/memory/{}/keys/{}", segment(namespace), segment(key)),
        ))
        .await
    }

    /// Removes `key` from `namespace`.
    pub async fn memory_delete(&self, namespace: &str, key: &str) -> Result<(), PlatformError> {
        self.send_empty(self.request(
            Method::DELETE,
            &format!("/v1/memory/{}/keys/{}", segment(namespace), segment(key)),
        ))
        .await
    }

    /// One page of the live keys of `namespace` (by prefix, after a key, at most a limit).
    pub async fn memory_list(
        &self,
        namespace: &str,
        query: &ListKeys,
    ) -> Result<KeyPage, PlatformError> {
        let mut params = Vec::new();
        if let Some(prefix) = &query.prefix {
            params.push(format!("prefix={}", segment(prefix)));
        }
        if let Some(after) = &query.after {
            params.push(format!("after={}", segment(after)));
        }
        if let Some(limit) = query.limit {
            params.push(format!("limit={limit}"));
        }
        let mut path = format!("/v1/memory/{}/keys", segment(namespace));
        if !params.is_empty() {
            path = format!("{path}?{}", params.join("&"));
        }
        self.send(self.request(Method::GET, &path)).await
    }

    /// Grants `principal` (`agent:<id>`, `user:<id>`, `key:<id>` or an agent id) `access` to
    /// `namespace` (the namespace's owner or an admin).
    pub async fn memory_grant(
        &self,
        namespace: &str,
        principal: &str,
        access: GrantAccess,
    ) -> Result<MemoryGrant, PlatformError> {
        self.send(
            self.request(
                Method::PUT,
                &format!(
                    "/v1/memory/{}/grants/{}",
                    segment(namespace),
                    segment(principal)
                ),
            )
            .json(&PutGrant { access }),
        )
        .await
    }

    /// Revokes `principal`'s grant on `namespace`.
    pub async fn memory_revoke(
        &self,
        namespace: &str,
        principal: &str,
    ) -> Result<(), PlatformError> {
        self.send_empty(self.request(
            Method::DELETE,
            &format!(
                "/v1/memory/{}/grants/{}",
                segment(namespace),
                segment(principal)
            ),
        ))
        .await
    }

    /// The owner, grants and sizes of `namespace` (its owner or an admin).
    pub async fn memory_namespace(&self, namespace: &str) -> Result<NamespaceInfo, PlatformError> {
        self.send(self.request(Method::GET, &format!("/v1/memory/{}", segment(namespace))))
            .await
    }

    /// Deletes `namespace` and everything in it (its owner or an admin).
    pub async fn memory_drop(&self, namespace: &str) -> Result<(), PlatformError> {
        self.send_empty(self.request(
            Method::DELETE,
            &format!("/v1/memory/{}", segment(namespace)),
        ))
        .await
    }

    /// Remembers a fact in `namespace`.
    pub async fn memory_add_fact(
        &self,
        namespace: &str,
        fact: &NewFact,
    ) -> Result<Fact, PlatformError> {
        self.post(&format!("/v1/memory/{}/facts", segment(namespace)), fact)
            .await
    }

    /// The facts of `namespace` closest in meaning to `query`, most similar first.
    pub async fn memory_search_facts(
        &self,
        namespace: &str,
        query: &str,
        k: usize,
        min_score: f32,
    ) -> Result<Vec<ScoredFact>, PlatformError> {
        self.post(
            &format!("/v1/memory/{}/facts/search", segment(namespace)),
            &FactSearch {
                query: query.into(),
                k: Some(k),
                min_score: Some(min_score),
            },
        )
        .await
    }

    /// Forgets fact `id` of `namespace`.
    pub async fn memory_delete_fact(&self, namespace: &str, id: &str) -> Result<(), PlatformError> {
        self.send_empty(self.request(
            Method::DELETE,
            &format!("/v1/memory/{}/facts/{}", segment(namespace), segment(id)),
        ))
        .await
    }
}
