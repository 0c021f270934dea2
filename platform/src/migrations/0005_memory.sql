-- Cross-agent memory (portable: TEXT, BIGINT; times in unix milliseconds).
-- A namespace belongs to whoever first wrote to it (owner: `agent:<id>`, `user:<id>` or
-- `key:<id>`); owner_user_id is set when a user (not a key) created it, for GDPR export and
-- deletion. Others reach it only through a grant (read or write).
CREATE TABLE IF NOT EXISTS memory_namespaces (
    name TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    owner_user_id TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS memory_namespaces_user ON memory_namespaces (owner_user_id);

CREATE TABLE IF NOT EXISTS memory_grants (
    namespace TEXT NOT NULL,
    principal TEXT NOT NULL,
    access TEXT NOT NULL,
    granted_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (namespace, principal)
);

-- Key-value entries: value is JSON text; expires_at NULL never expires. Expired rows are
-- invisible to reads and purged lazily and by a periodic pass.
CREATE TABLE IF NOT EXISTS memory_entries (
    namespace TEXT NOT NULL,
    mkey TEXT NOT NULL,
    value TEXT NOT NULL,
    size BIGINT NOT NULL,
    expires_at BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    updated_by TEXT NOT NULL,
    PRIMARY KEY (namespace, mkey)
);
CREATE INDEX IF NOT EXISTS memory_entries_expiry ON memory_entries (expires_at);

-- Semantic memory: facts with their MiniLM embedding (base64 of little-endian f32).
CREATE TABLE IF NOT EXISTS memory_facts (
    id TEXT PRIMARY KEY,
    namespace TEXT NOT NULL,
    text TEXT NOT NULL,
    metadata TEXT NOT NULL,
    embedding TEXT NOT NULL,
    expires_at BIGINT,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS memory_facts_namespace ON memory_facts (namespace, id);
CREATE INDEX IF NOT EXISTS memory_facts_expiry ON memory_facts (expires_at);
