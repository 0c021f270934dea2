//! The rooms REST API under `/api/rooms`, authorised by a room token with the `admin` grant
//! (`Authorization: Bearer …`; a token for room `*` manages every room):
//!
//! | method and path | what |
//! |---|---|
//! | `GET /api/rooms` | every room (token for `*`) |
//! | `POST /api/rooms` `{"name", "max_participants"?, "max_duration_secs"?, "empty_timeout_secs"?, "metadata"?}` | create a room with options (token for `*`) → `201` |
//! | `GET /api/rooms/{room}` | one room |
//! | `DELETE /api/rooms/{room}` | close it: every participant is removed → `204` |
//! | `GET /api/rooms/{room}/participants` | its participants |
//! | `POST /api/rooms/{room}/participants/{identity}/mute` `{"muted": bool}` | server-side mute |
//! | `DELETE /api/rooms/{room}/participants/{identity}` | kick → `204` |
//! | `POST /api/rooms/{room}/recordings` `{"participant"?}` | record the room (mixed) or one participant to Ogg/Opus → `201 {id, file}` |
//! | `DELETE /api/rooms/{room}/recordings/{id}` | stop it → `{id, file, seconds, stored?, store_error?}` (`stored`: moved to the platform's file storage) |

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::Deserialize;
use serde_json::json;

use crate::gateway::{Gateway, error_response};
use crate::rooms::{RoomError, RoomOptions};
use crate::token::{ALL_ROOMS, validate_name};

/// The routes (state: the gateway).
pub(crate) fn routes() -> Router<Arc<Gateway>> {
    Router::new()
        .route("/api/rooms", get(list).post(create))
        .route("/api/rooms/{room}", get(show).delete(close))
        .route("/api/rooms/{room}/participants", get(participants))
        .route("/api/rooms/{room}/participants/{identity}", delete(kick))
        .route("/api/rooms/{room}/participants/{identity}/mute", post(mute))
        .route("/api/rooms/{room}/recordings", post(start_recording))
        .route("/api/rooms/{room}/recordings/{id}", delete(stop_recording))
}

/// Most recordings running at once.
const MAX_RECORDINGS: usize = 32;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StartRecording {
    participant: Option<String>,
}

async fn start_recording(
    State(gateway): State<Arc<Gateway>>,
    Path(room): Path<String>,
    headers: HeaderMap,
    body: Option<Json<StartRecording>>,
) -> Response {
    if let Some(e) = refusal(&gateway, &headers, &room) {
        return e;
    }
    let request = body.map(|Json(b)| b).unwrap_or_default();
    if gateway.rooms.get(&room).is_none() {
        return room_error(RoomError::NoRoom);
    }
    let participant = match request.participant {
        Some(identity) => match gateway.rooms.peer_of(&room, &identity) {
            Some(peer) => Some((identity, peer)),
            None => return room_error(RoomError::NoParticipant(identity)),
        },
        None => None,
    };
    if gateway.recordings.lock().await.len() >= MAX_RECORDINGS {
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{MAX_RECORDINGS} recordings are already running"),
        );
    }
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let id = format!(
        "{room}-{}-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let dir = gateway.recordings_dir();
    match crate::recording::Recording::start(&gateway.media, &dir, id.clone(), &room, participant)
        .await
    {
        Ok(recording) => {
            let info = recording.info().clone();
            gateway.recordings.lock().await.insert(id, recording);
            (StatusCode::CREATED, Json(info)).into_response()
        }
        Err(e) => error_response(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

async fn stop_recording(
    State(gateway): State<Arc<Gateway>>,
    Path((room, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Some(e) = refusal(&gateway, &headers, &room) {
        return e;
    }
    let recording = {
        let mut recordings = gateway.recordings.lock().await;
        match recordings.get(&id) {
            Some(r) if r.info().room == room => recordings.remove(&id),
            _ => None,
        }
    };
    let Some(recording) = recording else {
        return error_response(StatusCode::NOT_FOUND, "no such recording");
    };
    match recording.stop(&gateway.media).await {
        Ok(info) => {
            Json(crate::recording::hand_over(info, gateway.recording_store()).await).into_response()
        }
        Err(e) => error_response(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// Checks the bearer token (the `admin` grant, for `room` or for every room): the refusal, if any.
fn refusal(gateway: &Gateway, headers: &HeaderMap, room: &str) -> Option<Response> {
    authorise(gateway, headers, room).err().map(|e| *e)
}

fn authorise(gateway: &Gateway, headers: &HeaderMap, room: &str) -> Result<(), Box<Response>> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let claims = gateway
        .keys
        .verify_any_room(token)
        .map_err(|e| Box::new(error_response(StatusCode::UNAUTHORIZED, e.to_string())))?;
    if !claims.grants().admin {
        return Err(Box::new(error_response(
            StatusCode::FORBIDDEN,
            "the token does not grant managing rooms (admin)",
        )));
    }
    if claims.room != ALL_ROOMS && claims.room != room {
        return Err(Box::new(error_response(
            StatusCode::FORBIDDEN,
            format!("the token manages room {:?}, not {room:?}", claims.room),
        )));
    }
    Ok(())
}

fn room_error(e: RoomError) -> Response {
    let status = match e {
        RoomError::NoRoom | RoomError::NoParticipant(_) => StatusCode::NOT_FOUND,
        RoomError::Exists => StatusCode::CONFLICT,
        RoomError::Full(_) | RoomError::TooManyRooms => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_REQUEST,
    };
    error_response(status, e.to_string())
}

async fn list(State(gateway): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    if let Some(e) = refusal(&gateway, &headers, ALL_ROOMS) {
        return e;
    }
    Json(json!({ "rooms": gateway.rooms.list() })).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRoom {
    name: String,
    max_participants: Option<usize>,
    max_duration_secs: Option<u64>,
    empty_timeout_secs: Option<u64>,
    metadata: Option<String>,
}

async fn create(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
    body: Result<Json<CreateRoom>, JsonRejection>,
) -> Response {
    if let Some(e) = refusal(&gateway, &headers, ALL_ROOMS) {
        return e;
    }
    let Json(request) = match body {
        Ok(body) => body,
        Err(e) => return error_response(StatusCode::BAD_REQUEST, e.body_text()),
    };
    if let Err(e) = validate_name("room", &request.name) {
        return error_response(StatusCode::BAD_REQUEST, e.to_string());
    }
    let defaults = RoomOptions::default();
    let options = RoomOptions {
        max_participants: request
            .max_participants
            .unwrap_or(defaults.max_participants),
        max_duration_secs: request.max_duration_secs,
        empty_timeout_secs: request
            .empty_timeout_secs
            .unwrap_or(defaults.empty_timeout_secs),
        metadata: request.metadata.unwrap_or_default(),
    };
    if options.metadata.len() > crate::proto::MAX_METADATA_BYTES {
        return error_response(StatusCode::PAYLOAD_TOO_LARGE, "the metadata is too large");
    }
    match gateway.rooms.create(&request.name, options) {
        Ok(info) => (StatusCode::CREATED, Json(info)).into_response(),
        Err(e) => room_error(e),
    }
}

async fn show(
    State(gateway): State<Arc<Gateway>>,
    Path(room): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(e) = refusal(&gateway, &headers, &room) {
        return e;
    }
    match gateway.rooms.get(&room) {
        Some(info) => Json(info).into_response(),
        None => room_error(RoomError::NoRoom),
    }
}

async fn close(
    State(gateway): State<Arc<Gateway>>,
    Path(room): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(e) = refusal(&gateway, &headers, &room) {
        return e;
    }
    let Some(members) = gateway.rooms.remove(&room) else {
        return room_error(RoomError::NoRoom);
    };
    for member in members {
        gateway.end_member(&member, "the room was closed").await;
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn participants(
    State(gateway): State<Arc<Gateway>>,
    Path(room): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(e) = refusal(&gateway, &headers, &room) {
        return e;
    }
    match gateway.rooms.participants(&room) {
        Some(list) => Json(json!({ "participants": list })).into_response(),
        None => room_error(RoomError::NoRoom),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Mute {
    muted: bool,
}

async fn mute(
    State(gateway): State<Arc<Gateway>>,
    Path((room, identity)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Json<Mute>, JsonRejection>,
) -> Response {
    if let Some(e) = refusal(&gateway, &headers, &room) {
        return e;
    }
    let Json(Mute { muted }) = match body {
        Ok(body) => body,
        Err(e) => return error_response(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let members = match gateway.rooms.members_named(&room, &identity) {
        Ok(members) => members,
        Err(e) => return room_error(e),
    };
    for member in members {
        if let Err(e) = gateway.media.set_muted(member.peer, muted).await {
            return error_response(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
        }
        gateway.rooms.set_muted(&room, member.peer, muted);
    }
    Json(json!({ "identity": identity, "muted": muted })).into_response()
}

async fn kick(
    State(gateway): State<Arc<Gateway>>,
    Path((room, identity)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Some(e) = refusal(&gateway, &headers, &room) {
        return e;
    }
    let members = match gateway.rooms.members_named(&room, &identity) {
        Ok(members) => members,
        Err(e) => return room_error(e),
    };
    for member in members {
        gateway.end_member(&member, "removed from the room").await;
    }
    StatusCode::NO_CONTENT.into_response()
}
