//! Persistence of users, sessions and API keys.

use super::routes::{ApiKeyCreated, ApiKeyInfo, TokenPair, UserInfo};
use super::tokens::{hash_secret, random_hex};
use super::{API_KEY_PREFIX, Principal, Role};
use crate::db::now_ms;
use crate::error::{ApiError, PlatformError};
use crate::state::AppState;
use sqlx::Row;

/// Normalises and sanity-checks an email address.
pub fn normalize_email(email: &str) -> Result<String, ApiError> {
    let email = email.trim().to_ascii_lowercase();
    let valid = email.len() <= 254
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !email.contains(char::is_whitespace)
        });
    if valid {
        Ok(email)
    } else {
        Err(ApiError::bad_request("email is not a valid address"))
    }
}

fn check_password(password: &str) -> Result<(), ApiError> {
    if (8..=1024).contains(&password.chars().count()) {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "password must be 8 to 1024 characters",
        ))
    }
}

async fn hash_password(state: &AppState, password: String) -> Result<String, ApiError> {
    state
        .passwords
        .hash_bounded(password)
        .await
        .map_err(hash_error)
}

/// A busy hasher is a 429 (retry in a second); a failed hash is internal.
fn hash_error(e: super::tokens::HashError) -> ApiError {
    match e {
        super::tokens::HashError::Busy => ApiError::rate_limited(1),
        super::tokens::HashError::Failed(e) => ApiError::from(e),
    }
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// Creates the configured admin when the users table is empty.
pub async fn bootstrap_admin(state: &AppState) -> Result<(), PlatformError> {
    let Some(admin) = state.config.bootstrap_admin.clone() else {
        return Ok(());
    };
    let count: i64 = sqlx::query("SELECT COUNT(*) FROM users")
        .fetch_one(&state.db.pool)
        .await?
        .try_get(0)?;
    if count > 0 {
        return Ok(());
    }
    let user = create_user(state, &admin.email, &admin.password, Role::Admin)
        .await
        .map_err(|e| PlatformError::Config(format!("bootstrap admin: {e:?}")))?;
    state
        .audit(
            "system",
            "admin.bootstrap",
            &format!("user:{}", user.id),
            "ok",
            "",
        )
        .await;
    Ok(())
}

/// Creates a user; 409 if the email is taken.
pub async fn create_user(
    state: &AppState,
    email: &str,
    password: &str,
    role: Role,
) -> Result<UserInfo, ApiError> {
    let email = normalize_email(email)?;
    check_password(password)?;
    let exists = sqlx::query("SELECT id FROM users WHERE email = $1")
        .bind(&email)
        .fetch_optional(&state.db.pool)
        .await?;
    if exists.is_some() {
        return Err(ApiError::conflict("a user with that email exists"));
    }
    let hash = hash_password(state, password.to_string()).await?;
    let user = UserInfo {
        id: uuid::Uuid::new_v4().simple().to_string(),
        email,
        role,
        created_at: now_ms(),
    };
    sqlx::query("INSERT INTO users (id, email, password_hash, role, created_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(&user.id)
        .bind(&user.email)
        .bind(hash)
        .bind(role.as_str())
        .bind(user.created_at)
        .execute(&state.db.pool)
        .await
        .map_err(|e| if is_unique_violation(&e) { ApiError::conflict("a user with that email exists") } else { e.into() })?;
    Ok(user)
}

fn row_to_user(r: &sqlx::any::AnyRow) -> Result<UserInfo, ApiError> {
    Ok(UserInfo {
        id: r.try_get(0)?,
        email: r.try_get(1)?,
        role: Role::parse(&r.try_get::<String, _>(2)?)
            .ok_or_else(|| ApiError::internal("stored role unknown"))?,
        created_at: r.try_get(3)?,
    })
}

/// Looks a user up by id.
pub async fn find_user(state: &AppState, id: &str) -> Result<Option<UserInfo>, ApiError> {
    sqlx::query("SELECT id, email, role, created_at FROM users WHERE id = $1")
        .bind(id)
        .fetch_optional(&state.db.pool)
        .await?
        .as_ref()
        .map(row_to_user)
        .transpose()
}

/// All users, oldest first.
pub async fn list_users(state: &AppState) -> Result<Vec<UserInfo>, ApiError> {
    sqlx::query("SELECT id, email, role, created_at FROM users ORDER BY created_at, id")
        .fetch_all(&state.db.pool)
        .await?
        .iter()
        .map(row_to_user)
        .collect()
}

/// Changes a user's role and revokes their sessions so the change takes effect at once.
pub async fn set_role(state: &AppState, id: &str, role: Role) -> Result<UserInfo, ApiError> {
    let done = sqlx::query("UPDATE users SET role = $1 WHERE id = $2")
        .bind(role.as_str())
        .bind(id)
        .execute(&state.db.pool)
        .await?;
    if done.rows_affected() == 0 {
        return Err(ApiError::not_found("no such user"));
    }
    revoke_user_sessions(state, id).await?;
    find_user(state, id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such user"))
}

async fn issue_pair(
    state: &AppState,
    user_id: &str,
    role: Role,
    family: &str,
) -> Result<TokenPair, ApiError> {
    let now = now_ms();
    let refresh = format!("rt_{}", random_hex(32));
    let expires = now + (state.config.refresh_token_ttl_secs as i64) * 1000;
    sqlx::query("INSERT INTO refresh_tokens (token_hash, family_id, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(hash_secret(&refresh))
        .bind(family)
        .bind(user_id)
        .bind(now)
        .bind(expires)
        .execute(&state.db.pool)
        .await?;
    Ok(TokenPair {
        access_token: state.tokens.issue_access(user_id, role, family)?,
        token_type: "Bearer".into(),
        expires_in: state.tokens.access_ttl_secs(),
        refresh_token: refresh,
        user_id: user_id.to_string(),
        role,
    })
}

/// Checks a password and opens a session.
pub async fn login(
    state: &AppState,
    email: &str,
    password: &str,
    client: &str,
) -> Result<TokenPair, ApiError> {
    let email = email.trim().to_ascii_lowercase();
    let row = sqlx::query("SELECT id, password_hash, role FROM users WHERE email = $1")
        .bind(&email)
        .fetch_optional(&state.db.pool)
        .await?;
    let (id, hash, role) = match &row {
        Some(r) => (
            r.try_get::<String, _>(0)?,
            Some(r.try_get::<String, _>(1)?),
            r.try_get::<String, _>(2)?,
        ),
        None => (String::new(), None, String::new()),
    };
    let ok = state
        .passwords
        .verify_bounded(password.to_string(), hash)
        .await
        .map_err(hash_error)?;
    if !ok {
        state
            .audit(
                client,
                "auth.login",
                &crate::redact::redact_pii(&email),
                "denied",
                "bad credentials",
            )
            .await;
        return Err(ApiError::unauthenticated("invalid email or password"));
    }
    let role = Role::parse(&role).ok_or_else(|| ApiError::internal("stored role unknown"))?;
    let family = uuid::Uuid::new_v4().simple().to_string();
    let now = now_ms();
    sqlx::query(
        "INSERT INTO token_families (id, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(&family)
    .bind(&id)
    .bind(now)
    .bind(now + (state.config.refresh_token_ttl_secs as i64) * 1000)
    .execute(&state.db.pool)
    .await?;
    state
        .audit(
            &format!("user:{id}"),
            "auth.login",
            &format!("user:{id}"),
            "ok",
            "",
        )
        .await;
    issue_pair(state, &id, role, &family).await
}

/// Revokes one session (refresh family).
pub async fn revoke_family(state: &AppState, family: &str) -> Result<(), ApiError> {
    sqlx::query("UPDATE token_families SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
        .bind(now_ms())
        .bind(family)
        .execute(&state.db.pool)
        .await?;
    state.mark_session_revoked(family);
    Ok(())
}

/// Revokes every session of a user.
pub async fn revoke_user_sessions(state: &AppState, user_id: &str) -> Result<(), ApiError> {
    let families: Vec<String> =
        sqlx::query("SELECT id FROM token_families WHERE user_id = $1 AND revoked_at IS NULL")
            .bind(user_id)
            .fetch_all(&state.db.pool)
            .await?
            .iter()
            .filter_map(|r| r.try_get(0).ok())
            .collect();
    for family in families {
        revoke_family(state, &family).await?;
    }
    Ok(())
}

/// Rotates a refresh token; presenting a used one revokes its whole family.
pub async fn refresh(state: &AppState, token: &str) -> Result<TokenPair, ApiError> {
    let invalid = || ApiError::unauthenticated("invalid or expired refresh token");
    let hash = hash_secret(token);
    let row = sqlx::query(
        "SELECT t.family_id, t.user_id, t.expires_at, t.used_at, f.revoked_at, u.role \
         FROM refresh_tokens t JOIN token_families f ON f.id = t.family_id JOIN users u ON u.id = t.user_id \
         WHERE t.token_hash = $1",
    )
    .bind(&hash)
    .fetch_optional(&state.db.pool)
    .await?
    .ok_or_else(invalid)?;
    let family: String = row.try_get(0)?;
    let user_id: String = row.try_get(1)?;
    let expires_at: i64 = row.try_get(2)?;
    let used_at: Option<i64> = row.try_get(3)?;
    let revoked_at: Option<i64> = row.try_get(4)?;
    let role = Role::parse(&row.try_get::<String, _>(5)?).ok_or_else(invalid)?;
    let actor = format!("user:{user_id}");
    if revoked_at.is_some() {
        return Err(ApiError::unauthenticated("session revoked"));
    }
    let now = now_ms();
    if expires_at <= now {
        return Err(invalid());
    }
    let claimed = if used_at.is_none() {
        sqlx::query(
            "UPDATE refresh_tokens SET used_at = $1 WHERE token_hash = $2 AND used_at IS NULL",
        )
        .bind(now)
        .bind(&hash)
        .execute(&state.db.pool)
        .await?
        .rows_affected()
            == 1
    } else {
        false
    };
    if !claimed {
        revoke_family(state, &family).await?;
        state
            .audit(
                &actor,
                "auth.refresh_reuse",
                &format!("session:{family}"),
                "denied",
                "family revoked",
            )
            .await;
        return Err(ApiError::unauthenticated(
            "refresh token reuse detected; session revoked",
        ));
    }
    issue_pair(state, &user_id, role, &family).await
}

/// Creates an API key; the secret is returned once and stored only as a hash.
pub async fn create_api_key(
    state: &AppState,
    creator: &Principal,
    name: &str,
    role: Role,
    agent_id: Option<String>,
    scopes: Vec<String>,
) -> Result<ApiKeyCreated, ApiError> {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let secret = random_hex(24);
    let info = ApiKeyInfo {
        id: id.clone(),
        name: name.to_string(),
        role,
        agent_id,
        scopes,
        created_by: creator.user_id().unwrap_or(&creator.id).to_string(),
        created_at: now_ms(),
        last_used_at: None,
        revoked_at: None,
    };
    sqlx::query(
        "INSERT INTO api_keys (id, name, secret_hash, role, agent_id, scopes, created_by, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&info.id)
    .bind(&info.name)
    .bind(hash_secret(&secret))
    .bind(role.as_str())
    .bind(info.agent_id.clone())
    .bind(info.scopes.join(","))
    .bind(&info.created_by)
    .bind(info.created_at)
    .execute(&state.db.pool)
    .await?;
    Ok(ApiKeyCreated {
        key: format!("{API_KEY_PREFIX}{id}_{secret}"),
        info,
    })
}

fn row_to_key(r: &sqlx::any::AnyRow) -> Result<ApiKeyInfo, ApiError> {
    let scopes: String = r.try_get(5)?;
    Ok(ApiKeyInfo {
        id: r.try_get(0)?,
        name: r.try_get(1)?,
        role: Role::parse(&r.try_get::<String, _>(2)?)
            .ok_or_else(|| ApiError::internal("stored role unknown"))?,
        agent_id: r.try_get(3)?,
        created_by: r.try_get(4)?,
        scopes: scopes
            .split(',')
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
        created_at: r.try_get(6)?,
        last_used_at: r.try_get(7)?,
        revoked_at: r.try_get(8)?,
    })
}

const KEY_COLUMNS: &str =
    "id, name, role, agent_id, created_by, scopes, created_at, last_used_at, revoked_at";

/// API keys visible to a principal: all for admins, own for others.
pub async fn list_api_keys(
    state: &AppState,
    creator: Option<&str>,
) -> Result<Vec<ApiKeyInfo>, ApiError> {
    let rows = match creator {
        None => {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_at"
            )))
            .fetch_all(&state.db.pool)
            .await?
        }
        Some(user) => {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {KEY_COLUMNS} FROM api_keys WHERE created_by = $1 ORDER BY created_at"
            )))
            .bind(user.to_string())
            .fetch_all(&state.db.pool)
            .await?
        }
    };
    rows.iter().map(row_to_key).collect()
}

/// One API key by id.
pub async fn find_api_key(state: &AppState, id: &str) -> Result<Option<ApiKeyInfo>, ApiError> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1"
    )))
    .bind(id.to_string())
    .fetch_optional(&state.db.pool)
    .await?
    .as_ref()
    .map(row_to_key)
    .transpose()
}

/// Marks a key revoked.
pub async fn revoke_api_key(state: &AppState, id: &str) -> Result<(), ApiError> {
    sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
        .bind(now_ms())
        .bind(id)
        .execute(&state.db.pool)
        .await?;
    Ok(())
}
