//! Exact-match response cache for chat completions: the key is a hash of the normalised request
//! (model, messages with whitespace collapsed, tools, limits, stop; not `stream` or `user`), an
//! entry lives `ttl`, the oldest entries go first when full. Only deterministic requests
//! (temperature unset or 0) are cached: replaying a sampled answer would change its meaning.

use super::{ChatRequest, ToolCall, Usage};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A cached answer.
#[derive(Debug, Clone, PartialEq)]
pub struct CachedAnswer {
    /// The text.
    pub text: String,
    /// Tool calls.
    pub tool_calls: Vec<ToolCall>,
    /// Finish reason.
    pub finish_reason: String,
    /// Usage of the original answer.
    pub usage: Usage,
    /// Who answered.
    pub provider: String,
    /// With which model.
    pub model: String,
}

/// Entries by key, and keys in insertion order (for eviction).
type Entries = (HashMap<String, (Instant, CachedAnswer)>, VecDeque<String>);

/// The cache, with hit and miss counters.
#[derive(Debug)]
pub struct ResponseCache {
    capacity: usize,
    entries: Mutex<Entries>,
    hits: AtomicU64,
    misses: AtomicU64,
}

fn normalise(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The cache key of a request, or `None` when it must not be cached.
pub fn key(request: &ChatRequest, requested_model: &str) -> Option<String> {
    if request.temperature.is_some_and(|t| t != 0.0) {
        return None;
    }
    let messages: Vec<serde_json::Value> = request
        .messages
        .iter()
        .map(|m| {
            serde_json::json!([
                m.role,
                normalise(&m.content),
                m.images,
                m.tool_calls,
                m.tool_call_id
            ])
        })
        .collect();
    let canonical = serde_json::json!({
        "model": requested_model,
        "messages": messages,
        "tools": request.tools,
        "max_tokens": request.max_tokens,
        "stop": request.stop,
    });
    Some(hex::encode(Sha256::digest(
        canonical.to_string().as_bytes(),
    )))
}

impl ResponseCache {
    /// An empty cache holding at most `capacity` answers.
    pub fn new(capacity: usize) -> ResponseCache {
        ResponseCache {
            capacity,
            entries: Mutex::new((HashMap::new(), VecDeque::new())),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// A fresh answer for `key`, counting a hit or a miss.
    pub fn get(&self, key: &str, now: Instant) -> Option<CachedAnswer> {
        let mut guard = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let found = match guard.0.get(key) {
            Some((expires, answer)) if *expires > now => Some(answer.clone()),
            Some(_) => {
                guard.0.remove(key);
                None
            }
            None => None,
        };
        drop(guard);
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Stores an answer for `ttl`.
    pub fn put(&self, key: String, answer: CachedAnswer, ttl: Duration, now: Instant) {
        if self.capacity == 0 || ttl.is_zero() {
            return;
        }
        let mut guard = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let (map, order) = &mut *guard;
        if map.insert(key.clone(), (now + ttl, answer)).is_none() {
            order.push_back(key);
        }
        while map.len() > self.capacity {
            match order.pop_front() {
                Some(oldest) => {
                    map.remove(&oldest);
                }
                None => break,
            }
        }
        // Keys replaced or expired linger in `order`; keep it bounded too.
        if order.len() > self.capacity * 2 {
            order.retain(|k| map.contains_key(k));
        }
    }

    /// (hits, misses, entries).
    pub fn stats(&self) -> (u64, u64, usize) {
        let entries = self.entries.lock().map(|g| g.0.len()).unwrap_or(0);
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
            entries,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::Message;
    use super::*;

    fn request(text: &str, temperature: Option<f64>) -> ChatRequest {
        ChatRequest {
            messages: vec![Message {
                role: "user".into(),
                content: text.into(),
                images: vec![],
                tool_calls: vec![],
                tool_call_id: None,
            }],
            max_tokens: 10,
            temperature,
            ..Default::default()
        }
    }

    #[test]
    fn keys_ignore_whitespace_and_skip_sampled_requests() {
        assert_eq!(
            key(&request("hi  there", None), "m"),
            key(&request(" hi there", Some(0.0)), "m")
        );
        assert_ne!(
            key(&request("hi", None), "m"),
            key(&request("hi", None), "other")
        );
        assert!(key(&request("hi", Some(0.7)), "m").is_none());
    }

    #[test]
    fn entries_expire_and_the_oldest_is_evicted() {
        let cache = ResponseCache::new(2);
        let now = Instant::now();
        let answer = CachedAnswer {
            text: "a".into(),
            tool_calls: vec![],
            finish_reason: "stop".into(),
            usage: Usage::default(),
            provider: "p".into(),
            model: "m".into(),
        };
        cache.put("k1".into(), answer.clone(), Duration::from_secs(10), now);
        cache.put("k2".into(), answer.clone(), Duration::from_secs(10), now);
        cache.put("k3".into(), answer.clone(), Duration::from_secs(10), now);
        assert!(cache.get("k1", now).is_none());
        assert!(cache.get("k3", now).is_some());
        assert!(cache.get("k3", now + Duration::from_secs(11)).is_none());
        assert_eq!(cache.stats().0, 1);
        assert_eq!(cache.stats().1, 2);
    }
}
