//! Database layer: one [`Db`] over SQLite (embedded default, WAL) or PostgreSQL via sqlx's `Any`
//! driver, with embedded migrations. SQL is written once with `$n` placeholders, which both accept.

use crate::config::PlatformConfig;
use crate::error::PlatformError;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, ConnectOptions, Connection, Executor, SqlSafeStr};
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

/// Which SQL dialect the pool speaks; only JSON filter expressions differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// Embedded SQLite.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// A connection pool plus the dialect it speaks.
#[derive(Debug, Clone)]
pub struct Db {
    /// The pool.
    pub pool: AnyPool,
    /// The dialect.
    pub dialect: Dialect,
}

/// Milliseconds since the unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn migrator(dialect: Dialect) -> Migrator {
    let document_index = match dialect {
        // Equality filters become one `@>` containment, served by this index.
        Dialect::Postgres => include_str!("migrations/0002_documents_index.postgres.sql"),
        Dialect::Sqlite => "SELECT 1",
    };
    Migrator::with_migrations(vec![
        Migration::new(
            1,
            "init".into(),
            MigrationType::Simple,
            include_str!("migrations/0001_init.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            2,
            "documents index".into(),
            MigrationType::Simple,
            document_index.into_sql_str(),
            false,
        ),
        Migration::new(
            3,
            "intelligence and integration".into(),
            MigrationType::Simple,
            include_str!("migrations/0003_intelligence.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            4,
            "agent registry, messages and SLAs".into(),
            MigrationType::Simple,
            include_str!("migrations/0004_orchestration.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            5,
            "cross-agent memory".into(),
            MigrationType::Simple,
            include_str!("migrations/0005_memory.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            6,
            "notification retries".into(),
            MigrationType::Simple,
            include_str!("migrations/0006_notify_retry.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            7,
            "workflows".into(),
            MigrationType::Simple,
            include_str!("migrations/0007_workflows.sql").into_sql_str(),
            false,
        ),
    ])
}

fn valid_schema_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 48
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit())
}

impl Db {
    /// Connects (creating the SQLite file or the PostgreSQL schema if needed) and migrates.
    pub async fn connect(config: &PlatformConfig) -> Result<Db, PlatformError> {
        sqlx::any::install_default_drivers();
        let url = match &config.database_url {
            Some(url) => url.clone(),
            None => {
                std::fs::create_dir_all(&config.data_dir)?;
                let path = config.data_dir.join("platform.db");
                format!("sqlite://{}?mode=rwc", path.display())
            }
        };
        let dialect = if url.starts_with("postgres") {
            Dialect::Postgres
        } else if url.starts_with("sqlite") {
            Dialect::Sqlite
        } else {
            return Err(PlatformError::Config(
                "database_url must start with postgres:// or sqlite://".into(),
            ));
        };
        let options = AnyConnectOptions::from_str(&url)?.disable_statement_logging();
        let schema = match (&config.database_schema, dialect) {
            (Some(schema), Dialect::Postgres) => {
                if !valid_schema_name(schema) {
                    return Err(PlatformError::Config(format!(
                        "database_schema {schema:?}: use lowercase letters, digits and _"
                    )));
                }
                let mut conn = sqlx::AnyConnection::connect_with(&options).await?;
                conn.execute(sqlx::AssertSqlSafe(format!(
                    "CREATE SCHEMA IF NOT EXISTS {schema}"
                )))
                .await?;
                conn.close().await?;
                Some(schema.clone())
            }
            _ => None,
        };
        let pool = AnyPoolOptions::new()
            .max_connections(config.database_max_connections.max(1))
            .after_connect(move |conn, _meta| {
                let schema = schema.clone();
                Box::pin(async move {
                    match dialect {
                        Dialect::Sqlite => {
                            conn.execute("PRAGMA journal_mode = WAL").await?;
                            conn.execute("PRAGMA busy_timeout = 5000").await?;
                            conn.execute("PRAGMA synchronous = NORMAL").await?;
                        }
                        Dialect::Postgres => {
                            if let Some(schema) = schema {
                                conn.execute(sqlx::AssertSqlSafe(format!(
                                    "SET search_path TO {schema}"
                                )))
                                .await?;
                            }
                        }
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        migrator(dialect).run(&pool).await?;
        Ok(Db { pool, dialect })
    }

    /// The SQL expression for the JSON text of top-level field `$n` of column `body`.
    pub(crate) fn json_field_text(&self, param: usize) -> String {
        match self.dialect {
            Dialect::Sqlite => format!("(body -> ${param})"),
            Dialect::Postgres => format!("((body::jsonb -> ${param})::text)"),
        }
    }
}
