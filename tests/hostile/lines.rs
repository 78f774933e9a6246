//! The raw lines a hostile peer writes, built as text: plausible protocol
//! lines (requests, answers, errors, cancels, handshakes) with odd values
//! in them, which serde could not produce (lone surrogates, UIDs of the
//! wrong type, nesting hundreds deep), and the piecemeal writing of them.
//!
//! Every string UID made here is in the form `JSON.stringify` writes (the
//! escapes lower-case, U+2028 and non-ASCII as themselves): the session
//! keeps a peer's UID as that text and writes it back as it is (see
//! `src/protocol/peer_uid.rs`), so the peer's checks can match an answer to
//! its request by comparing texts.

use common::rng::Rng;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::common;

const REQUEST: &str = "\"_IPC_REQUEST/MSG_TYPE\":\"_IPC_REQUEST/MSG_TYPE:REQUEST\"";
const RESPONSE: &str = "\"_IPC_REQUEST/MSG_TYPE\":\"_IPC_REQUEST/MSG_TYPE:RESPONSE\"";

/// A request with UID text `uid` (what goes between the quotes) and
/// `payload` (JSON text).
pub fn request(uid: &str, payload: &str) -> String {
    format!("{{{REQUEST},\"_IPC_REQUEST/REQUEST_UID\":\"{uid}\",\"_IPC_REQUEST/PAYLOAD\":{payload}}}")
}

/// A request whose UID is the JSON value `uid_json` (a number, an object:
/// not a string, which the protocol asks for).
pub fn request_with_uid_value(uid_json: &str) -> String {
    format!("{{{REQUEST},\"_IPC_REQUEST/REQUEST_UID\":{uid_json},\"_IPC_REQUEST/PAYLOAD\":1}}")
}

/// An answer to UID `uid_json` (a JSON value, normally a string).
pub fn response(uid_json: &str, payload: &str) -> String {
    format!("{{{RESPONSE},\"_IPC_REQUEST/REQUEST_UID\":{uid_json},\"_IPC_REQUEST/PAYLOAD\":{payload}}}")
}

/// A failure (the `error` extension) of UID `uid_json`, the keys in
/// another order than ours. `payload` is what it means where the `error`
/// extension was not agreed (or `error` is `null`): an answer.
pub fn error(uid_json: &str, payload: &str, error: &str) -> String {
    format!(
        "{{\"_IPC_REQUEST/REQUEST_UID\":{uid_json},{RESPONSE},\
         \"_IPC_REQUEST/PAYLOAD\":{payload},\"_IPC_REQUEST/ERROR\":{error}}}"
    )
}

/// A cancel (the `cancel` extension) of UID text `uid`.
pub fn cancel(uid: &str) -> String {
    format!(
        "{{\"_IPC_REQUEST/MSG_TYPE\":\"_IPC_REQUEST/MSG_TYPE:CANCEL\",\
         \"_IPC_REQUEST/REQUEST_UID\":\"{uid}\",\"_IPC_REQUEST/PAYLOAD\":null}}"
    )
}

/// A handshake message of `kind` (`REQUEST`, `RESPONSE`) with UID
/// `uid_json` and, if some, `extensions` (JSON text).
pub fn handshake(uid_json: &str, kind: &str, extensions: Option<&str>) -> String {
    let extensions = extensions
        .map(|e| format!(",\"_IPC_REQUEST/EXTENSIONS\":{e}"))
        .unwrap_or_default();
    format!(
        "{{\"_IPC_REQUEST/HANDSHAKE_UID\":{uid_json},\
         \"_IPC_REQUEST/HANDSHAKE_MSG_TYPE\":\"_IPC_REQUEST/HANDSHAKE_MSG_TYPE:{kind}\"{extensions}}}"
    )
}

/// `1` in `depth` arrays.
pub fn nested(depth: usize) -> String {
    format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
}

/// A string UID of some odd kind, unique by `fresh`, as the text between
/// its quotes.
pub fn odd_uid(rng: &mut Rng, fresh: u64) -> String {
    match rng.below(10) {
        0 => format!("{}-{fresh}", "u".repeat(rng.below(5000) as usize)),
        1 => format!("\\ud800-{fresh}"),
        2 => format!("\\\"q\\\\{fresh}"),
        3 => format!("\\n\\u0001{fresh}"),
        4 => format!("é✓\u{2028}{fresh}"),
        5 => format!("\\udc00\\ud800{fresh}"),
        _ => format!("p{fresh}"),
    }
}

/// What a handshake may advertise as its extensions: `None` leaves the key
/// out (a 1.0 peer); the others are right, partial, or of the wrong type.
pub fn odd_extensions(rng: &mut Rng) -> Option<String> {
    let text = match rng.below(10) {
        0 => return None,
        1 => "[\"error\",\"cancel\"]",
        2 => "[\"error\"]",
        3 => "[\"cancel\"]",
        4 => "\"error\"",
        5 => "{\"error\":true}",
        6 => "[1,null,\"cancel\",{}]",
        7 => "null",
        8 => "[]",
        _ => "[\"error\",\"cancel\",\"future\"]",
    };
    Some(text.to_string())
}

/// The `ERROR` value of a failure: well-formed, partial, or of the wrong
/// type, some nested deep or with numbers past f64.
pub fn odd_error(rng: &mut Rng) -> String {
    match rng.below(10) {
        0 => "{\"message\":\"no name\"}".into(),
        1 => "{\"name\":\"E\",\"message\":\"m\",\"code\":{\"a\":[1,2]}}".into(),
        2 => format!(
            "{{\"name\":\"E\",\"message\":\"m\",\"data\":{}}}",
            nested(rng.below(400) as usize)
        ),
        3 => "\"just a string\"".into(),
        4 => "42".into(),
        5 => "[1,2]".into(),
        6 => "{\"name\":5,\"message\":{},\"stack\":[]}".into(),
        7 => format!("{{\"name\":\"E\",\"message\":\"m\",\"code\":{}}}", nested(200)),
        8 => "null".into(),
        _ => "{\"name\":\"\\ud800\",\"message\":\"\\u0000\",\"code\":1e400}".into(),
    }
}

/// The payload of a peer's request: which behaviour it asks of our handler
/// (`op`, see `our_side::handler`), its number, a time in ms, and sometimes
/// a lone surrogate or values nested 100 deep (which an answer that echoes
/// the payload carries back: within serde_json's 128 levels, so the checks
/// can parse it).
pub fn handler_op_payload(rng: &mut Rng, id: u64) -> String {
    let op = rng.below(crate::our_side::HANDLER_OPS);
    let extra = match rng.below(6) {
        0 => ",\"s\":\"\\ud800\\u2028\"".to_string(),
        1 => format!(",\"d\":{}", nested(100)),
        _ => String::new(),
    };
    format!("{{\"op\":{op},\"id\":{id},\"ms\":{}{extra}}}", rng.below(60))
}

/// Writes `bytes` in pieces cut at random byte boundaries (inside a UTF-8
/// character too), flushing and yielding between some, so that the
/// session's reader sees lines split across reads.
pub async fn write_in_pieces<W: AsyncWrite + Unpin + ?Sized>(
    writer: &mut W,
    rng: &mut Rng,
    bytes: &[u8],
) -> std::io::Result<()> {
    let mut at = 0;
    while at < bytes.len() {
        let n = match rng.below(4) {
            0 => 1 + rng.below(7) as usize,
            1 => 1 + rng.below(200) as usize,
            _ => bytes.len() - at,
        };
        let end = (at + n).min(bytes.len());
        writer.write_all(&bytes[at..end]).await?;
        if rng.below(3) == 0 {
            writer.flush().await?;
            tokio::task::yield_now().await;
        }
        at = end;
    }
    Ok(())
}
