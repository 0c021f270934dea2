-- Workflows (portable: TEXT, BIGINT; times in unix milliseconds; JSON as TEXT).
-- A definition version never changes once stored; POSTing the same name again adds version+1.
-- owner is the identity that created version 1 (`agent:<id>`, `user:<id>` or `key:<id>`).
CREATE TABLE IF NOT EXISTS workflow_definitions (
    name TEXT NOT NULL,
    version BIGINT NOT NULL,
    owner TEXT NOT NULL,
    owner_user_id TEXT,
    definition TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (name, version)
);

-- The schedule triggers of each workflow's latest version: the next tick due (claimed by
-- moving next_at forward with a compare-and-set, so one sidecar fires each tick).
CREATE TABLE IF NOT EXISTS workflow_schedules (
    workflow TEXT NOT NULL,
    cron TEXT NOT NULL,
    next_at BIGINT NOT NULL,
    PRIMARY KEY (workflow, cron)
);

-- Runs pin the version they started with. status: running, compensating, succeeded, failed,
-- cancelled. dedup_key (per workflow, unique) makes event, schedule and API starts happen once.
-- lease_owner/lease_until: the sidecar driving the run and until when its claim holds.
CREATE TABLE IF NOT EXISTS workflow_runs (
    id TEXT PRIMARY KEY,
    workflow TEXT NOT NULL,
    version BIGINT NOT NULL,
    owner TEXT NOT NULL,
    status TEXT NOT NULL,
    trigger_kind TEXT NOT NULL,
    dedup_key TEXT,
    input TEXT NOT NULL,
    output TEXT,
    error TEXT,
    lease_owner TEXT,
    lease_until BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    finished_at BIGINT
);
CREATE UNIQUE INDEX IF NOT EXISTS workflow_runs_dedup ON workflow_runs (workflow, dedup_key);
CREATE INDEX IF NOT EXISTS workflow_runs_workflow ON workflow_runs (workflow, created_at);
CREATE INDEX IF NOT EXISTS workflow_runs_status ON workflow_runs (status, lease_until);

-- One row per step of a run (step = the step id), plus `compensate:<id>` rows once a run
-- compensates (seq orders them). status: pending, running, succeeded, failed, skipped,
-- cancelled. attempts counts every attempt started; interruptions those a stopped sidecar cut
-- short. seq orders completions (compensation runs in reverse).
CREATE TABLE IF NOT EXISTS workflow_steps (
    run_id TEXT NOT NULL,
    step TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    interruptions BIGINT NOT NULL,
    idempotency_key TEXT NOT NULL,
    output TEXT,
    error TEXT,
    next_attempt_at BIGINT,
    started_at BIGINT,
    finished_at BIGINT,
    seq BIGINT NOT NULL,
    PRIMARY KEY (run_id, step)
);
