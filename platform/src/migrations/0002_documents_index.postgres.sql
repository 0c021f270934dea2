-- PostgreSQL only: documents stay TEXT (portable), indexed as JSONB for containment filters.
CREATE INDEX IF NOT EXISTS documents_body_gin ON documents USING GIN ((body::jsonb) jsonb_path_ops);
