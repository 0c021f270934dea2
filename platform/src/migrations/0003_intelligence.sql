-- Platform intelligence and integration (portable: TEXT, BIGINT; times in unix milliseconds).
CREATE TABLE IF NOT EXISTS events (
    id TEXT PRIMARY KEY,
    topic TEXT NOT NULL,
    at BIGINT NOT NULL,
    source TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_topic_at ON events (topic, at);
CREATE INDEX IF NOT EXISTS events_at ON events (at);

CREATE TABLE IF NOT EXISTS transcripts (
    id TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    user_id TEXT,
    turn BIGINT NOT NULL,
    role TEXT NOT NULL,
    text TEXT NOT NULL,
    sentiment TEXT,
    intent TEXT,
    at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS transcripts_conversation ON transcripts (conversation_id, at);
CREATE INDEX IF NOT EXISTS transcripts_user ON transcripts (user_id);

CREATE TABLE IF NOT EXISTS webhook_subscriptions (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    url TEXT NOT NULL,
    topics TEXT NOT NULL,
    secret TEXT NOT NULL,
    description TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS webhook_outbox (
    id TEXT PRIMARY KEY,
    subscription_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    last_error TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    delivered_at BIGINT
);
CREATE INDEX IF NOT EXISTS webhook_outbox_due ON webhook_outbox (status, next_attempt_at);

CREATE TABLE IF NOT EXISTS kb_documents (
    id TEXT PRIMARY KEY,
    agent_id TEXT NOT NULL,
    kb TEXT NOT NULL,
    name TEXT NOT NULL,
    content_type TEXT NOT NULL,
    bytes BIGINT NOT NULL,
    chunks BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS kb_documents_scope ON kb_documents (agent_id, kb);

CREATE TABLE IF NOT EXISTS kb_chunks (
    id TEXT PRIMARY KEY,
    document_id TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    kb TEXT NOT NULL,
    ordinal BIGINT NOT NULL,
    text TEXT NOT NULL,
    start_offset BIGINT NOT NULL,
    end_offset BIGINT NOT NULL,
    page BIGINT,
    embedding TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS kb_chunks_scope ON kb_chunks (agent_id, kb);
CREATE INDEX IF NOT EXISTS kb_chunks_document ON kb_chunks (document_id);

CREATE TABLE IF NOT EXISTS ai_usage (
    id TEXT PRIMARY KEY,
    at BIGINT NOT NULL,
    agent_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    prompt_tokens BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    cost_micros BIGINT NOT NULL,
    cached BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS ai_usage_agent_at ON ai_usage (agent_id, at);

CREATE TABLE IF NOT EXISTS ai_budgets (
    agent_id TEXT PRIMARY KEY,
    limit_micros BIGINT NOT NULL,
    period TEXT NOT NULL,
    alert_percents TEXT NOT NULL,
    alerted TEXT NOT NULL,
    period_start BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS agent_intents (
    agent_id TEXT PRIMARY KEY,
    body TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS notification_templates (
    name TEXT PRIMARY KEY,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS notification_preferences (
    user_id TEXT PRIMARY KEY,
    body TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS notifications (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    channel TEXT NOT NULL,
    status TEXT NOT NULL,
    detail TEXT NOT NULL,
    at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS notifications_user ON notifications (user_id);

CREATE TABLE IF NOT EXISTS integrations (
    name TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    base_url TEXT NOT NULL,
    auth_header TEXT NOT NULL,
    credential TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
