//! The SIP bridge's HTTP API, authorised by room tokens (`Authorization: Bearer`) for the
//! room the call is in:
//! - `POST /api/sip/calls` `{"to","room","trunk"?,"agent"?,"from"?}` → `202 {"call_id"}`: dial
//!   out (needs the `agent` grant when an agent talks); progress arrives as `sip_call` room events;
//! - `GET /api/sip/calls?room=R` → the Call-IDs in the room;
//! - `DELETE /api/sip/calls/{id}`: hang up;
//! - `POST /api/sip/calls/{id}/dtmf` `{"digits"}`: send digits (RFC 4733);
//! - `POST /api/sip/calls/{id}/transfer` `{"to","mode":"blind"|"warm"}`: transfer the caller.
//!
//! These are also the functions the agent's tools call (send digits, transfer).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::outbound::DialRequest;
use super::transfer::TransferMode;
use super::{SipError, SipHandle};
use crate::gateway::{Gateway, error_response};
use crate::token::RoomClaims;

/// The routes (merged into the gateway's).
pub(crate) fn routes() -> Router<Arc<Gateway>> {
    Router::new()
        .route("/api/sip/calls", post(create).get(list))
        .route("/api/sip/calls/{id}", delete(hangup))
        .route("/api/sip/calls/{id}/dtmf", post(dtmf))
        .route("/api/sip/calls/{id}/transfer", post(transfer))
}

/// Why a request is refused: the status and the reason (turned into a JSON error response).
type Refusal = (StatusCode, String);

fn refusal((status, message): Refusal) -> Response {
    error_response(status, message)
}

fn sip(gateway: &Gateway) -> Result<SipHandle, Refusal> {
    let sip = gateway
        .sip
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    sip.ok_or_else(|| {
        (
            StatusCode::NOT_FOUND,
            "SIP is not enabled (serve --sip ADDR)".to_string(),
        )
    })
}

fn authorize(gateway: &Gateway, headers: &HeaderMap, room: &str) -> Result<RoomClaims, Refusal> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    gateway
        .keys
        .verify(token, room)
        .map_err(|e| (StatusCode::UNAUTHORIZED, e.to_string()))
}

fn refused(e: SipError) -> Response {
    let status = match e {
        SipError::UnknownCall(_) => StatusCode::NOT_FOUND,
        SipError::Refused(_) => StatusCode::CONFLICT,
        _ => StatusCode::BAD_REQUEST,
    };
    error_response(status, e.to_string())
}

/// The call's room, authorised, and the handle.
fn call_access(gateway: &Gateway, headers: &HeaderMap, id: &str) -> Result<SipHandle, Refusal> {
    let sip = sip(gateway)?;
    let room = sip
        .room_of(id)
        .ok_or_else(|| (StatusCode::NOT_FOUND, format!("no SIP call {id:?}")))?;
    authorize(gateway, headers, &room)?;
    Ok(sip)
}

async fn create(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
    body: Result<Json<DialRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(request) = match body {
        Ok(b) => b,
        Err(e) => return error_response(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let sip = match sip(&gateway) {
        Ok(s) => s,
        Err(r) => return refusal(r),
    };
    if request.room.is_empty() || request.to.is_empty() {
        return error_response(StatusCode::BAD_REQUEST, "`to` and `room` are required");
    }
    let claims = match authorize(&gateway, &headers, &request.room) {
        Ok(c) => c,
        Err(r) => return refusal(r),
    };
    let grants = claims.grants();
    if !grants.publish || (request.agent.as_deref() != Some("none") && !grants.agent) {
        return error_response(
            StatusCode::FORBIDDEN,
            "the token does not grant dialing out with an agent",
        );
    }
    match sip.dial(request).await {
        Ok(call_id) => (StatusCode::ACCEPTED, Json(json!({ "call_id": call_id }))).into_response(),
        Err(e) => refused(e),
    }
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    room: String,
}

async fn list(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> Response {
    let sip = match sip(&gateway) {
        Ok(s) => s,
        Err(r) => return refusal(r),
    };
    if let Err(r) = authorize(&gateway, &headers, &query.room) {
        return refusal(r);
    }
    Json(json!({ "calls": sip.calls_in(&query.room) })).into_response()
}

async fn hangup(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    match call_access(&gateway, &headers, &id) {
        Ok(sip) => match sip.hangup(&id).await {
            Ok(()) => StatusCode::NO_CONTENT.into_response(),
            Err(e) => refused(e),
        },
        Err(r) => refusal(r),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DigitsBody {
    digits: String,
}

async fn dtmf(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Json<DigitsBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(body) = match body {
        Ok(b) => b,
        Err(e) => return error_response(StatusCode::BAD_REQUEST, e.body_text()),
    };
    if body.digits.is_empty()
        || body.digits.len() > 32
        || !body
            .digits
            .chars()
            .all(|c| dartmouth_media::rtp_session::digit_event(c).is_some())
    {
        return error_response(StatusCode::BAD_REQUEST, "digits: 1 to 32 of 0-9 * # A-D");
    }
    match call_access(&gateway, &headers, &id) {
        Ok(sip) => match sip.send_digits(&id, &body.digits) {
            Ok(()) => StatusCode::NO_CONTENT.into_response(),
            Err(e) => refused(e),
        },
        Err(r) => refusal(r),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TransferBody {
    to: String,
    #[serde(default)]
    mode: TransferMode,
}

async fn transfer(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Json<TransferBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(body) = match body {
        Ok(b) => b,
        Err(e) => return error_response(StatusCode::BAD_REQUEST, e.body_text()),
    };
    match call_access(&gateway, &headers, &id) {
        Ok(sip) => match sip.transfer(&id, &body.to, body.mode).await {
            Ok(()) => (StatusCode::ACCEPTED, Json(json!({ "call_id": id }))).into_response(),
            Err(e) => refused(e),
        },
        Err(r) => refusal(r),
    }
}
