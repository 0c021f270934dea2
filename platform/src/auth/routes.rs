//! HTTP routes of the auth service: register, login, refresh, logout, me, users, API keys, room tokens.

use super::roles::SCOPES;
use super::{Permission, Principal, PrincipalKind, Role, store};
use crate::error::{ApiError, ErrorBody};
use crate::http::{ClientIp, Json};
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// A user account (never includes the password hash).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UserInfo {
    /// User id.
    pub id: String,
    /// Login email (lowercased).
    pub email: String,
    /// Role.
    pub role: Role,
    /// Unix milliseconds.
    pub created_at: i64,
}

/// Email and password.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// Login email.
    pub email: String,
    /// Password (8–1024 characters).
    pub password: String,
}

/// Admin request to create a user with a role.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    /// Login email.
    pub email: String,
    /// Initial password.
    pub password: String,
    /// Role.
    pub role: Role,
}

/// Admin request to change a user's role.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    /// New role.
    pub role: Role,
}

/// Access token plus rotating refresh token.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenPair {
    /// JWT access token (HS256).
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Access-token lifetime in seconds.
    pub expires_in: u64,
    /// Opaque refresh token; single use.
    pub refresh_token: String,
    /// The user's id.
    pub user_id: String,
    /// The user's role.
    pub role: Role,
}

/// A refresh token to rotate.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    /// The refresh token from the last [`TokenPair`].
    pub refresh_token: String,
}

/// Who the caller is.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WhoAmI {
    /// `user` or `api_key`.
    pub kind: String,
    /// User or key id.
    pub id: String,
    /// Role.
    pub role: Role,
    /// Agent of an agent key.
    pub agent_id: Option<String>,
    /// Key scopes (empty for users, who hold all).
    pub scopes: Vec<String>,
}

/// Request for a new API key.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    /// Human-readable name.
    pub name: String,
    /// `agent` (default) or, for admins, `developer`/`admin`.
    #[serde(default = "default_key_role")]
    pub role: Role,
    /// The agent an agent key belongs to (required for `agent`).
    pub agent_id: Option<String>,
    /// Scopes, from `db:read db:write files:read files:write kb:read kb:write ai events registry`;
    /// default all of them.
    pub scopes: Option<Vec<String>>,
}

fn default_key_role() -> Role {
    Role::Agent
}

/// An API key's metadata.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApiKeyInfo {
    /// Key id (also embedded in the key).
    pub id: String,
    /// Name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Agent of an agent key.
    pub agent_id: Option<String>,
    /// Scopes.
    pub scopes: Vec<String>,
    /// Creating user.
    pub created_by: String,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Last use, unix milliseconds (updated at most once a minute).
    pub last_used_at: Option<i64>,
    /// Revocation time, unix milliseconds.
    pub revoked_at: Option<i64>,
}

/// A newly created key: the secret is shown only here.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApiKeyCreated {
    /// The full key, `dk_<id>_<secret>`; send as `Authorization: Bearer <key>`.
    pub key: String,
    /// Its metadata.
    pub info: ApiKeyInfo,
}

/// Request for a gateway room token.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoomTokenRequest {
    /// Room name (1–128 of letters, digits, `-`, `_`, `.`).
    pub room: String,
    /// Whether the holder may publish audio (default true).
    #[serde(default = "yes")]
    pub can_publish: bool,
}

fn yes() -> bool {
    true
}

/// A room token for the gateway.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RoomToken {
    /// JWT (HS256, audience `dartmouth-gateway`).
    pub token: String,
    /// Expiry, unix seconds.
    pub expires_at: u64,
}

/// The auth routes.
pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(login))
        .routes(routes!(refresh))
        .routes(routes!(logout))
        .routes(routes!(me))
        .routes(routes!(list_users, create_user))
        .routes(routes!(update_user))
        .routes(routes!(list_api_keys, create_api_key))
        .routes(routes!(revoke_api_key))
        .routes(routes!(mint_room_token))
}

/// Open self-registration (role `user`).
#[utoipa::path(post, path = "/v1/auth/register", tag = "auth", request_body = Credentials,
    responses((status = 201, body = UserInfo), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn register(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Json(body): Json<Credentials>,
) -> Result<(StatusCode, Json<UserInfo>), ApiError> {
    if !state.config.allow_registration {
        return Err(ApiError::forbidden("registration is closed"));
    }
    state
        .limits
        .check_account(&ip, &body.email)
        .map_err(ApiError::rate_limited)?;
    let user = store::create_user(&state, &body.email, &body.password, Role::User).await?;
    state
        .audit(&ip, "user.register", &format!("user:{}", user.id), "ok", "")
        .await;
    Ok((StatusCode::CREATED, Json(user)))
}

/// Log in with email and password.
#[utoipa::path(post, path = "/v1/auth/login", tag = "auth", request_body = Credentials,
    responses((status = 200, body = TokenPair), (status = 401, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Json(body): Json<Credentials>,
) -> Result<Json<TokenPair>, ApiError> {
    // Backed-off accounts and addresses are refused before any password is hashed.
    state
        .limits
        .check_account(&ip, &body.email)
        .map_err(ApiError::rate_limited)?;
    let result = store::login(&state, &body.email, &body.password, &ip).await;
    match &result {
        Ok(_) => state.limits.login_succeeded(&body.email),
        Err(e) if e.status() == StatusCode::UNAUTHORIZED => {
            state.limits.login_failed(&ip, &body.email)
        }
        Err(_) => {}
    }
    Ok(Json(result?))
}

/// Rotate a refresh token; reuse of a rotated token revokes the whole session.
#[utoipa::path(post, path = "/v1/auth/refresh", tag = "auth", request_body = RefreshRequest,
    responses((status = 200, body = TokenPair), (status = 401, body = ErrorBody)))]
async fn refresh(
    State(state): State<AppState>,
    Json(body): Json<RefreshRequest>,
) -> Result<Json<TokenPair>, ApiError> {
    Ok(Json(store::refresh(&state, &body.refresh_token).await?))
}

/// End the caller's session: its access and refresh tokens stop working.
#[utoipa::path(post, path = "/v1/auth/logout", tag = "auth", security(("bearer" = [])),
    responses((status = 204), (status = 401, body = ErrorBody)))]
async fn logout(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<StatusCode, ApiError> {
    state.authorize(&principal, Permission::SelfService).await?;
    if let Some(session) = &principal.session {
        store::revoke_family(&state, session).await?;
        state
            .audit(
                &principal.actor(),
                "auth.logout",
                &format!("session:{session}"),
                "ok",
                "",
            )
            .await;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Verify the caller's credential and describe it (the gateway's token check).
#[utoipa::path(get, path = "/v1/auth/me", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = WhoAmI), (status = 401, body = ErrorBody)))]
async fn me(State(state): State<AppState>, principal: Principal) -> Result<Json<WhoAmI>, ApiError> {
    state.authorize(&principal, Permission::SelfService).await?;
    Ok(Json(WhoAmI {
        kind: match principal.kind {
            PrincipalKind::User => "user".into(),
            PrincipalKind::ApiKey => "api_key".into(),
        },
        id: principal.id,
        role: principal.role,
        agent_id: principal.agent_id,
        scopes: principal.scopes,
    }))
}

/// List users (admin).
#[utoipa::path(get, path = "/v1/users", tag = "users", security(("bearer" = [])),
    responses((status = 200, body = Vec<UserInfo>), (status = 403, body = ErrorBody)))]
async fn list_users(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<Vec<UserInfo>>, ApiError> {
    state.authorize(&principal, Permission::ManageUsers).await?;
    Ok(Json(store::list_users(&state).await?))
}

/// Create a user with any role (admin).
#[utoipa::path(post, path = "/v1/users", tag = "users", security(("bearer" = [])), request_body = CreateUser,
    responses((status = 201, body = UserInfo), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn create_user(
    State(state): State<AppState>,
    principal: Principal,
    Json(body): Json<CreateUser>,
) -> Result<(StatusCode, Json<UserInfo>), ApiError> {
    state.authorize(&principal, Permission::ManageUsers).await?;
    let user = store::create_user(&state, &body.email, &body.password, body.role).await?;
    state
        .audit(
            &principal.actor(),
            "admin.user_create",
            &format!("user:{}", user.id),
            "ok",
            body.role.as_str(),
        )
        .await;
    Ok((StatusCode::CREATED, Json(user)))
}

/// Change a user's role (admin); the user's sessions are revoked.
#[utoipa::path(patch, path = "/v1/users/{user_id}", tag = "users", security(("bearer" = [])), request_body = UpdateUser,
    params(("user_id" = String, Path, description = "user id")),
    responses((status = 200, body = UserInfo), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn update_user(
    State(state): State<AppState>,
    principal: Principal,
    Path(user_id): Path<String>,
    Json(body): Json<UpdateUser>,
) -> Result<Json<UserInfo>, ApiError> {
    state.authorize(&principal, Permission::ManageUsers).await?;
    let user = store::set_role(&state, &user_id, body.role).await?;
    state
        .audit(
            &principal.actor(),
            "admin.role_change",
            &format!("user:{user_id}"),
            "ok",
            body.role.as_str(),
        )
        .await;
    Ok(Json(user))
}

/// Create an API key (developers: agent keys only).
#[utoipa::path(post, path = "/v1/api-keys", tag = "api-keys", security(("bearer" = [])), request_body = CreateApiKey,
    responses((status = 201, body = ApiKeyCreated), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn create_api_key(
    State(state): State<AppState>,
    principal: Principal,
    Json(body): Json<CreateApiKey>,
) -> Result<(StatusCode, Json<ApiKeyCreated>), ApiError> {
    state
        .authorize(&principal, Permission::ManageApiKeys)
        .await?;
    if principal.role != Role::Admin && body.role != Role::Agent {
        state
            .audit(
                &principal.actor(),
                "access.denied",
                "api_key.create",
                "denied",
                body.role.as_str(),
            )
            .await;
        return Err(ApiError::forbidden("only admins may create non-agent keys"));
    }
    if body.role == Role::User {
        return Err(ApiError::bad_request("API keys cannot have the user role"));
    }
    let name = body.name.trim();
    if name.is_empty() || name.len() > 128 {
        return Err(ApiError::bad_request("name must be 1 to 128 characters"));
    }
    if body.role == Role::Agent {
        let agent = body
            .agent_id
            .as_deref()
            .ok_or_else(|| ApiError::bad_request("agent keys need agent_id"))?;
        crate::documents::check_name("agent_id", agent)?;
    }
    let scopes = body
        .scopes
        .unwrap_or_else(|| SCOPES.map(String::from).to_vec());
    if let Some(bad) = scopes.iter().find(|s| !SCOPES.contains(&s.as_str())) {
        return Err(ApiError::bad_request(format!("unknown scope {bad:?}")));
    }
    let created =
        store::create_api_key(&state, &principal, name, body.role, body.agent_id, scopes).await?;
    state
        .audit(
            &principal.actor(),
            "api_key.create",
            &format!("key:{}", created.info.id),
            "ok",
            body.role.as_str(),
        )
        .await;
    Ok((StatusCode::CREATED, Json(created)))
}

/// List API keys (admins: all; developers: their own).
#[utoipa::path(get, path = "/v1/api-keys", tag = "api-keys", security(("bearer" = [])),
    responses((status = 200, body = Vec<ApiKeyInfo>), (status = 403, body = ErrorBody)))]
async fn list_api_keys(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<Vec<ApiKeyInfo>>, ApiError> {
    state
        .authorize(&principal, Permission::ManageApiKeys)
        .await?;
    let only = (principal.role != Role::Admin)
        .then(|| principal.user_id().unwrap_or_default().to_string());
    Ok(Json(store::list_api_keys(&state, only.as_deref()).await?))
}

/// Revoke an API key (admins: any; developers: their own).
#[utoipa::path(delete, path = "/v1/api-keys/{key_id}", tag = "api-keys", security(("bearer" = [])),
    params(("key_id" = String, Path, description = "key id")),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn revoke_api_key(
    State(state): State<AppState>,
    principal: Principal,
    Path(key_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state
        .authorize(&principal, Permission::ManageApiKeys)
        .await?;
    let key = store::find_api_key(&state, &key_id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such API key"))?;
    if principal.role != Role::Admin && Some(key.created_by.as_str()) != principal.user_id() {
        return Err(ApiError::not_found("no such API key"));
    }
    store::revoke_api_key(&state, &key_id).await?;
    state
        .audit(
            &principal.actor(),
            "api_key.revoke",
            &format!("key:{key_id}"),
            "ok",
            "",
        )
        .await;
    Ok(StatusCode::NO_CONTENT)
}

/// Mint a gateway room token for the authenticated user.
#[utoipa::path(post, path = "/v1/room-tokens", tag = "auth", security(("bearer" = [])), request_body = RoomTokenRequest,
    responses((status = 200, body = RoomToken), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn mint_room_token(
    State(state): State<AppState>,
    principal: Principal,
    Json(body): Json<RoomTokenRequest>,
) -> Result<Json<RoomToken>, ApiError> {
    state
        .authorize(&principal, Permission::MintRoomToken)
        .await?;
    let valid = !body.room.is_empty()
        && body.room.len() <= 128
        && body
            .room
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !valid {
        return Err(ApiError::bad_request(
            "room must be 1-128 of letters, digits, -, _ or .",
        ));
    }
    let (token, expires_at) =
        state
            .tokens
            .issue_room(&principal.id, &body.room, body.can_publish)?;
    Ok(Json(RoomToken { token, expires_at }))
}
