-- Orchestration and monitoring: the agent registry, agent-to-agent messages, SLAs (portable:
-- TEXT, BIGINT, DOUBLE PRECISION; times in unix milliseconds).
-- capabilities are comma-wrapped (",orders,voice,") so one matches with LIKE.
-- status is the health last announced as an event; the health served is computed from
-- last_heartbeat, heartbeat_interval_ms, reported, active and capacity.
CREATE TABLE IF NOT EXISTS registry_agents (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    owner TEXT NOT NULL,
    capabilities TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    version TEXT NOT NULL,
    heartbeat_interval_ms BIGINT NOT NULL,
    capacity BIGINT NOT NULL,
    active BIGINT NOT NULL,
    reported TEXT NOT NULL,
    status TEXT NOT NULL,
    registered_at BIGINT NOT NULL,
    last_heartbeat BIGINT NOT NULL,
    last_routed_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS registry_agents_owner_name ON registry_agents (owner, name);

-- Agent-to-agent messages: sender is the agent (or actor) that sent it, sender_actor the
-- credential; reply stays NULL until the recipient answers (once).
CREATE TABLE IF NOT EXISTS agent_messages (
    id TEXT PRIMARY KEY,
    sender TEXT NOT NULL,
    sender_actor TEXT NOT NULL,
    recipient TEXT NOT NULL,
    body TEXT NOT NULL,
    reply TEXT,
    created_at BIGINT NOT NULL,
    replied_at BIGINT
);
CREATE INDEX IF NOT EXISTS agent_messages_recipient ON agent_messages (recipient, created_at);

-- SLAs on an agent's turn events and the state of their alerts (firing 0/1; last_value the
-- objective over the window at the last evaluation).
CREATE TABLE IF NOT EXISTS slas (
    id TEXT PRIMARY KEY,
    agent TEXT NOT NULL,
    objective TEXT NOT NULL,
    target DOUBLE PRECISION NOT NULL,
    window_secs BIGINT NOT NULL,
    min_turns BIGINT NOT NULL,
    firing BIGINT NOT NULL,
    last_value DOUBLE PRECISION,
    since BIGINT NOT NULL,
    owner TEXT NOT NULL
);
