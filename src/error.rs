//! The one public error type, and the reasons a channel ends.

use std::fmt;
use std::io;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::frame::FrameError;

/// Everything that can go wrong in this crate.
///
/// `Error` is `Clone` because one failure (the channel closing) is handed to
/// every request that was waiting on it; I/O and serde errors are therefore
/// kept behind an `Arc`.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The channel is closed, so the handshake, the request or the send
    /// could not complete. Returned to every pending request when the peer
    /// disconnects, exits or the stream breaks (for a child the session
    /// owns, once its exit status is in or `exit_grace` has passed), and at
    /// once to every later call. A request whose deadline passes once the
    /// peer is known to be gone gets it too, a moment before the session
    /// ends. The [`CloseReason`] says which (with the child's exit code or
    /// signal when the session owns the child process and it ended).
    #[error("the channel is closed: {0}")]
    Closed(CloseReason),

    /// The peer did not complete the handshake within the configured
    /// handshake timeout (it never set up a session, or is not an
    /// ipc-request peer at all).
    #[error("the peer did not complete the handshake within {0:?}")]
    HandshakeTimeout(Duration),

    /// A request got no answer before its deadline. The request has been
    /// forgotten locally and, if the peer supports the `cancel` extension,
    /// cancelled there. (A peer known to be gone at the deadline, whose
    /// session is about to end, makes it [`Error::Closed`] instead.) Also what
    /// [`blocking::Messages::recv_timeout`](crate::blocking::Messages::recv_timeout)
    /// says when no message came in time.
    #[error("timed out after {0:?}")]
    Timeout(Duration),

    /// The peer failed the request and sent back this error (`error`
    /// extension): its handler failed, or it refused the request unhandled
    /// (`Overloaded`, `RequestTooLong`, `RequestUnreadable`, `NoHandler`).
    #[error("the peer answered with an error: {0}")]
    Remote(Box<RemoteError>),

    /// A message could not be framed: an outgoing message longer than the
    /// maximum message length or not serializable (refused before anything
    /// was written; only this call fails), or an incoming line that is too
    /// long or not JSON (reported on the plain message stream, or, if it was
    /// the answer to one of our requests, as that request's error; the
    /// session goes on).
    #[error(transparent)]
    Frame(#[from] FrameError),

    /// An answer, or a plain message taken from [`Session::messages`](crate::Session::messages),
    /// arrived but could not be deserialized: into the type the caller
    /// asked for, or (a plain message) as a `serde_json::Value`, which
    /// refuses nesting deeper than 128.
    #[error("could not decode the {what}: {error}")]
    Decode {
        /// What could not be decoded: `"answer"` or `"message"`.
        what: &'static str,
        /// serde_json's error. In the message, and so not given as its
        /// `source()`, as no other error here gives one: a printer of error
        /// chains showed it twice.
        error: Arc<serde_json::Error>,
    },

    /// The payload of the peer's request could not be deserialized into the
    /// type the handler asked for ([`Request::payload`](crate::Request::payload)).
    /// A handler that passes it on with `?` answers the peer with it.
    #[error("could not decode the request's payload: {0}")]
    DecodeRequest(Arc<serde_json::Error>),

    /// A request was answered a second time; the second answer was not sent.
    #[error("this request has already been answered")]
    AlreadyAnswered,

    /// The peer cancelled this request (`cancel` extension); the answer was
    /// not sent.
    #[error("the peer cancelled this request")]
    Cancelled,

    /// A plain message that would not reach the peer as a plain message: a
    /// Node internal command (`cmd` starting with `NODE_`) or an ipc-request
    /// protocol message. Nothing was sent.
    #[error("refusing to send a reserved message: {0}")]
    ReservedMessage(&'static str),

    /// The channel the parent should have given this process could not be
    /// opened: the variable is missing or not a number, names a descriptor
    /// that is not open, not inherited or not a connected stream socket, or
    /// names a serialization mode this crate does not support.
    #[error("{variable}={}: {problem}", value.as_deref().map(|v| format!("{v:?}")).unwrap_or_else(|| "(unset)".into()))]
    ChannelEnv {
        /// The environment variable at fault.
        variable: &'static str,
        /// Its value, if it was set.
        value: Option<String>,
        /// What is wrong with it.
        problem: String,
    },

    /// An invalid argument to a setup function (for example a channel fd
    /// below 3, which would replace the child's stdio).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// The child process could not be started.
    #[error("could not start the child process {program:?}: {error}")]
    Spawn {
        /// The program that was to run, as the command named it.
        program: String,
        /// Why it could not start (as `Command::spawn` said). In the
        /// message, and so not given as its `source()`: a printer of error
        /// chains would show it twice. If the command's `current_dir` is
        /// what was missing (or not a directory), the text names it; that
        /// error keeps std's kind, but its errno is only in the text
        /// (`raw_os_error` is `None`).
        error: Arc<io::Error>,
    },

    /// An I/O error outside the channel's stream (creating a socket pair,
    /// setting descriptor flags).
    #[error("I/O error: {0}")]
    Io(Arc<io::Error>),
}

impl Error {
    /// The variant's name, as a [`RemoteError`] made from it is named.
    fn variant_name(&self) -> &'static str {
        match self {
            Error::Closed(_) => "Closed",
            Error::HandshakeTimeout(_) => "HandshakeTimeout",
            Error::Timeout(_) => "Timeout",
            Error::Remote(_) => "Remote",
            Error::Frame(_) => "Frame",
            Error::Decode { .. } => "Decode",
            Error::DecodeRequest(_) => "DecodeRequest",
            Error::AlreadyAnswered => "AlreadyAnswered",
            Error::Cancelled => "Cancelled",
            Error::ReservedMessage(_) => "ReservedMessage",
            Error::ChannelEnv { .. } => "ChannelEnv",
            Error::InvalidArgument(_) => "InvalidArgument",
            Error::Spawn { .. } => "Spawn",
            Error::Io(_) => "Io",
        }
    }

    /// An answer that could not be deserialized.
    pub(crate) fn decode_answer(e: serde_json::Error) -> Self {
        Error::Decode {
            what: "answer",
            error: Arc::new(e),
        }
    }

    /// A request's payload that could not be deserialized.
    pub(crate) fn decode_request(e: serde_json::Error) -> Self {
        Error::DecodeRequest(Arc::new(e))
    }

    /// A plain message that could not be deserialized.
    pub(crate) fn decode_message(e: serde_json::Error) -> Self {
        Error::Decode {
            what: "message",
            error: Arc::new(e),
        }
    }
}

/// Why a channel ended.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum CloseReason {
    /// This side closed the session ([`Session::close`](crate::Session::close)).
    Local,
    /// The peer closed the channel (end of stream) and no exit status is
    /// known: it disconnected, or exited and we do not own the process.
    PeerClosed,
    /// The child process this session owns ended.
    ChildExited(ExitStatus),
    /// Reading from or writing to the channel failed.
    Io(Arc<io::Error>),
    /// The Tokio runtime the session (or the channel) was set up on shut
    /// down while it was open: the runtime was dropped, or shut down with
    /// `shutdown_timeout` or `shutdown_background`, and the tasks that
    /// served it are gone. (A current-thread runtime whose `block_on` has
    /// returned keeps them, to run in its next `block_on`.) The socket is
    /// let go of, and the peer sees the end of the stream once every task
    /// that held it is dropped.
    RuntimeShutDown,
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::Local => f.write_str("closed by this side"),
            CloseReason::PeerClosed => f.write_str("the peer closed the channel"),
            CloseReason::ChildExited(status) => {
                write!(f, "the child process {}", describe_exit(*status))
            }
            CloseReason::Io(e) => write!(f, "I/O error: {e}"),
            CloseReason::RuntimeShutDown => f.write_str("the runtime the session ran on shut down"),
        }
    }
}

/// "exited with code 3" or "was killed by signal 9 (SIGKILL)".
pub(crate) fn describe_exit(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        return format!("exited with code {code}");
    }
    match status.signal() {
        Some(sig) => format!("was killed by signal {sig} ({})", signal_name(sig)),
        None => format!("ended ({status})"),
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGUSR2 => "SIGUSR2",
        _ => "unknown signal",
    }
}

/// An error as it travels between peers (`error` extension): what a failed
/// handler sends back, and what the caller receives in [`Error::Remote`].
///
/// Besides the errors handlers return, this crate sends these names:
///
/// | name | when |
/// |---|---|
/// | `HandlerPanicked` | the handler panicked (the message is the panic's, if it was text) |
/// | `ResponderDropped` | a [`responder_fn`](crate::responder_fn) handler let go of its responder unanswered |
/// | `ResponseNotSent` | the answer could not be serialized, or was longer than the maximum message length |
/// | `ErrorTooLarge` | an error answer too long to send even shortened (below): a long name or code, or a maximum message length too low even for that; its message names the error |
/// | `Overloaded` | refused unhandled: too many requests already wait for a handler |
/// | `RequestTooLong` | refused unhandled: the request was longer than this side reads |
/// | `RequestUnreadable` | refused unhandled: the request was not JSON (its envelope was, so it could be answered) |
/// | `NoHandler` | refused unhandled: this side set up its session without a handler |
/// | `HandlerNotRun` | a [`blocking::handler_fn`](crate::blocking::handler_fn) not started: the runtime was stopping |
/// | an [`Error`] variant's name (`DecodeRequest`, ...) | a handler returned this crate's error with `?` (but [`Error::Remote`] goes on as it came: see below) |
///
/// `Overloaded`, `RequestTooLong`, `RequestUnreadable`, `NoHandler` and
/// `HandlerNotRun` say the request was not run, so a caller may send it
/// again. A handler that passes on with `?` an error its own call to a peer
/// got keeps it whole, but for these five: that handler did run, so they become `Remote`, with
/// the peer's name and message in the message.
///
/// An error answer longer than the maximum message length goes shortened:
/// its name and code as they were, without its data and stack, its message
/// cut to a kilobyte, and a note at the end of the message that says what
/// was left out and why.
///
/// `examples/node/ipc_session.js` sends `ResponseNotSent` too, for an
/// answer JSON cannot hold.
///
/// Handlers may return any `std::error::Error` with `?`: it converts into a
/// `RemoteError` named after its type, carrying its message. Error types
/// that do not implement `std::error::Error` themselves, such as
/// `anyhow::Error` and `Box<dyn Error + Send + Sync>`, convert with
/// [`from_dyn`](Self::from_dyn).
///
/// Made with [`new`](Self::new) and the `with_` methods, so that a field
/// added later breaks no one.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RemoteError {
    /// The kind of error, like a JS error's `name` (`"TypeError"`).
    pub name: String,
    /// What happened.
    pub message: String,
    /// A machine-readable code, a string or a number (`"ENOENT"`).
    /// PROTOCOL.md allows nothing else: written, any other value goes as
    /// its JSON text, a string, and `null` is left out. A code read from a
    /// peer is made the same way, its JSON text as the peer wrote it.
    #[serde(
        default,
        skip_serializing_if = "code_is_absent",
        serialize_with = "serialize_code"
    )]
    pub code: Option<serde_json::Value>,
    /// A stack trace, as text, if the peer sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<String>,
    /// Any further data the handler attached, as JSON text;
    /// [`data_as`](Self::data_as) deserializes it. Read from a peer, it is
    /// the text that came: the peer's to make as long as a line and as
    /// deep as it likes (Node has no limit), it is never built as a
    /// `serde_json::Value`, which can take many times the size of its text
    /// (32 bytes for each `0,` of an array) and stops at 128 levels. The
    /// error itself is read only for a request that waits for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Box<RawValue>>,
}

/// Field by field, the data by its text.
impl PartialEq for RemoteError {
    fn eq(&self, other: &Self) -> bool {
        fn data(e: &RemoteError) -> Option<&str> {
            e.data.as_deref().map(RawValue::get)
        }
        (&self.name, &self.message, &self.code, &self.stack)
            == (&other.name, &other.message, &other.code, &other.stack)
            && data(self) == data(other)
    }
}

impl RemoteError {
    /// An error with a name and a message.
    pub fn new(name: impl Into<String>, message: impl Into<String>) -> Self {
        RemoteError {
            name: name.into(),
            message: message.into(),
            code: None,
            stack: None,
            data: None,
        }
    }

    /// An error from any `dyn Error`: named `"Error"` (or, for this
    /// crate's own [`Error`], after its variant, and an [`Error::Remote`]
    /// as it came, as with `?`), with its
    /// message followed by those of its sources, `: `-separated (as
    /// `anyhow` prints with `{:#}`), since the peer has no other way to
    /// see them; a source whose text the message already ends with (an
    /// error that shows its source in its own message, as many do) is not
    /// repeated. For the error types `?` cannot convert:
    ///
    /// ```
    /// use ipc_request::RemoteError;
    ///
    /// fn parse(text: &str) -> Result<u32, Box<dyn std::error::Error + Send + Sync>> {
    ///     Ok(text.parse::<u32>()?)
    /// }
    ///
    /// let error = parse("x").map_err(|e| RemoteError::from_dyn(&*e)).unwrap_err();
    /// assert_eq!(error.name, "Error");
    /// assert_eq!(error.message, "invalid digit found in string");
    /// ```
    ///
    /// With `anyhow`: `.map_err(|e| RemoteError::from_dyn(e.as_ref()))`.
    pub fn from_dyn(error: &(dyn std::error::Error + 'static)) -> Self {
        let name = match error.downcast_ref::<Error>() {
            Some(Error::Remote(theirs)) => return passed_on(theirs),
            Some(ours) => ours.variant_name(),
            None => "Error",
        };
        let mut message = error.to_string();
        // Bounded: a `source()` that returns its own error would loop.
        let sources = std::iter::successors(error.source(), |cause| cause.source()).take(MAX_SOURCES);
        for cause in sources {
            let text = cause.to_string();
            if !message.ends_with(&text) {
                message.push_str(": ");
                message.push_str(&text);
            }
        }
        RemoteError::new(name, message)
    }

    /// Sets the code: a string or a number. Any other value is made a
    /// string of its JSON text, and `null` means no code.
    pub fn with_code(mut self, code: impl Into<serde_json::Value>) -> Self {
        self.code = code_from(code.into());
        self
    }

    /// Attaches data.
    pub fn with_data(mut self, data: impl Into<serde_json::Value>) -> Self {
        // A `Value` always serializes: it is already JSON.
        self.data = serde_json::value::to_raw_value(&data.into()).ok();
        self
    }

    /// The data deserialized as a `T` (`serde_json::Value` for any): `None`
    /// if there is none.
    pub fn data_as<T: serde::de::DeserializeOwned>(&self) -> Option<Result<T, serde_json::Error>> {
        self.data.as_ref().map(|data| serde_json::from_str(data.get()))
    }

    /// Sets the stack trace text.
    pub fn with_stack(mut self, stack: impl Into<String>) -> Self {
        self.stack = Some(stack.into());
        self
    }
}

/// The names this crate sends for a request it did not run (see
/// [`RemoteError`]): a caller may send such a request again.
const NOT_RUN: [&str; 5] = [
    "Overloaded",
    "RequestTooLong",
    "RequestUnreadable",
    "NoHandler",
    "HandlerNotRun",
];

/// A peer's error, passed on by a handler (with `?`): whole, but for a
/// name that says the request was not run, which the request the handler
/// answers did; that one goes as any other error of this crate, named
/// `Remote`, the peer's name and message in its message.
fn passed_on(theirs: &RemoteError) -> RemoteError {
    if NOT_RUN.contains(&theirs.name.as_str()) {
        let ours = Error::Remote(Box::new(theirs.clone()));
        return RemoteError::new(ours.variant_name(), ours.to_string());
    }
    theirs.clone()
}

/// How many of an error's sources [`RemoteError::from_dyn`] follows.
const MAX_SOURCES: usize = 32;

/// A code as PROTOCOL.md allows it (a string or a number), from any value:
/// another value becomes its JSON text, and `null` no code at all.
pub(crate) fn code_from(value: serde_json::Value) -> Option<serde_json::Value> {
    use serde_json::Value;
    match value {
        Value::Null => None,
        Value::String(_) | Value::Number(_) => Some(value),
        other => Some(Value::String(other.to_string())),
    }
}

fn code_is_absent(code: &Option<serde_json::Value>) -> bool {
    matches!(code, None | Some(serde_json::Value::Null))
}

/// The `code` field as written: [`code_from`] of what it holds, so that the
/// public field, set to anything, never puts another type on the wire.
fn serialize_code<S: serde::Serializer>(
    code: &Option<serde_json::Value>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match code {
        Some(value @ (serde_json::Value::String(_) | serde_json::Value::Number(_))) => {
            value.serialize(serializer)
        }
        Some(other) => code_from(other.clone()).serialize(serializer),
        None => serializer.serialize_none(),
    }
}

/// A code that reads as a name: a letter or `_`, then letters, digits,
/// `_`, `-` or `.` (`ENOENT`, `ERR_IPC_CHANNEL_CLOSED`, `E.X-1`).
fn is_a_name(code: &str) -> bool {
    code.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && code
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

impl fmt::Display for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.name, self.message)?;
        match &self.code {
            // A name as the peer's own text has it: `(code ENOENT)`. Any
            // other string quoted, so that "42" and 42, or "", still read
            // apart.
            Some(serde_json::Value::String(code)) if is_a_name(code) => write!(f, " (code {code})")?,
            Some(code) => write!(f, " (code {code})")?,
            None => {}
        }
        Ok(())
    }
}

/// Any error type a handler returns with `?` becomes a `RemoteError` whose
/// name is the error's type name (without its module path) and whose message
/// is its `Display` text; this crate's own [`Error`] is named by its
/// variant (`DecodeRequest` for a request payload `Request::payload` could
/// not read), which says more than `Error`. An [`Error::Remote`] (a call
/// the handler made to a peer failed there) goes on as it came, with its
/// name, code, stack and data, as a JS handler that rethrows an error
/// would pass it on; but not as one of the names that say a request was
/// not run (see [`RemoteError`]): this one was, so that error is named
/// `Remote`. `RemoteError` itself
/// deliberately does not implement `std::error::Error`, so that this
/// blanket conversion is possible (the same trick `anyhow::Error` uses).
impl<E: std::error::Error + 'static> From<E> for RemoteError {
    fn from(e: E) -> Self {
        if let Some(ours) = (&e as &dyn std::any::Any).downcast_ref::<Error>() {
            if let Error::Remote(theirs) = ours {
                return passed_on(theirs);
            }
            return RemoteError::new(ours.variant_name(), e.to_string());
        }
        let full = std::any::type_name::<E>();
        let short = full
            .split('<')
            .next()
            .unwrap_or(full)
            .rsplit("::")
            .next()
            .unwrap_or(full);
        RemoteError::new(short, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error with a cause, as most wrapped errors are.
    #[derive(Debug)]
    struct Outer(io::Error);

    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("could not load the job")
        }
    }

    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    /// Small enough that a handler's `Result<T, RemoteError>` passes
    /// clippy's `result_large_err` (it warns from 128 bytes on).
    #[test]
    fn a_remote_error_stays_under_clippys_large_error_size() {
        assert!(std::mem::size_of::<RemoteError>() < 128);
    }

    #[test]
    fn a_dyn_error_carries_the_messages_of_its_sources() {
        let boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(Outer(io::Error::new(
            io::ErrorKind::NotFound,
            "jobs.json is missing",
        )));
        let remote = RemoteError::from_dyn(&*boxed);
        assert_eq!(remote.name, "Error");
        assert_eq!(remote.message, "could not load the job: jobs.json is missing");
        assert_eq!((remote.code, remote.stack), (None, None));
        assert!(remote.data.is_none());
    }

    /// The usual shape of a wrapper (`#[error("...: {0}")]` with
    /// `#[from]`): its message shows its source, which it also returns.
    #[derive(Debug)]
    struct ShowsItsSource(io::Error);

    impl fmt::Display for ShowsItsSource {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "could not read the config: {}", self.0)
        }
    }

    impl std::error::Error for ShowsItsSource {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn a_source_the_message_already_shows_is_not_repeated() {
        let error = ShowsItsSource(io::Error::other("disk on fire"));
        let remote = RemoteError::from_dyn(&error);
        assert_eq!(remote.message, "could not read the config: disk on fire");
        // This crate's own errors that show their source say it once too.
        let decode = Error::decode_answer(serde_json::from_str::<u8>("x").unwrap_err());
        assert_eq!(RemoteError::from_dyn(&decode), RemoteError::from(decode.clone()));
    }

    /// An error whose `source()` is itself, as a buggy impl may be.
    #[derive(Debug)]
    struct ItsOwnSource;

    impl fmt::Display for ItsOwnSource {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("loop")
        }
    }

    impl std::error::Error for ItsOwnSource {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(self)
        }
    }

    #[test]
    fn a_source_chain_that_loops_ends() {
        assert_eq!(RemoteError::from_dyn(&ItsOwnSource).message, "loop");
    }

    #[test]
    fn a_dyn_error_of_this_crate_is_named_by_its_variant_as_with_the_question_mark() {
        let boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(Error::Cancelled);
        let by_dyn = RemoteError::from_dyn(&*boxed);
        assert_eq!(by_dyn, RemoteError::from(Error::Cancelled));
        assert_eq!(by_dyn.name, "Cancelled");
    }

    /// The data is JSON text: set from a value, read as any type, compared
    /// by its text, and made by serde from any deserializer of JSON (a
    /// handler that builds its error from a request's `Value`).
    #[test]
    fn a_remote_errors_data_is_its_json_text() {
        let e = RemoteError::new("E", "m").with_data(serde_json::json!({"n": [1, 2]}));
        assert_eq!(e.data.as_deref().map(RawValue::get), Some(r#"{"n":[1,2]}"#));
        #[derive(serde::Deserialize, Debug, PartialEq)]
        struct N {
            n: Vec<u8>,
        }
        assert_eq!(e.data_as::<N>().unwrap().unwrap(), N { n: vec![1, 2] });
        assert!(e.data_as::<String>().unwrap().is_err());
        assert!(RemoteError::new("E", "m").data_as::<N>().is_none());
        assert_ne!(
            e,
            RemoteError::new("E", "m").with_data(serde_json::json!({"n": [2, 1]}))
        );
        let read: RemoteError =
            serde_json::from_value(serde_json::json!({"name": "E", "message": "m", "data": {"n": [1, 2]}}))
                .unwrap();
        assert_eq!(read, e);
        let text = serde_json::to_string(&e).unwrap();
        assert_eq!(serde_json::from_str::<RemoteError>(&text).unwrap(), e);
    }

    /// A handler whose own call to a peer failed there, and that passes
    /// the error on with `?`, passes it on whole: not renamed "Remote" with
    /// the peer's name and code flattened into its message.
    #[test]
    fn a_remote_error_passed_on_is_passed_on_whole() {
        let theirs = RemoteError::new("TypeError", "not a number")
            .with_code("E_NONE")
            .with_stack("at peer")
            .with_data(serde_json::json!({"n": 1}));
        let forwarded = || -> Result<(), RemoteError> { Err(Error::Remote(Box::new(theirs.clone())))? };
        assert_eq!(forwarded(), Err(theirs.clone()));
        let boxed: Box<dyn std::error::Error + Send + Sync> =
            Box::new(Error::Remote(Box::new(theirs.clone())));
        assert_eq!(RemoteError::from_dyn(&*boxed), theirs);
        // But a name that says the request was not run: this one was.
        for name in NOT_RUN {
            let not_run = RemoteError::new(name, "not run").with_code("C");
            let forwarded = || -> Result<(), RemoteError> { Err(Error::Remote(Box::new(not_run.clone())))? };
            let forwarded = forwarded().unwrap_err();
            assert_eq!(forwarded.name, "Remote");
            assert_eq!(
                forwarded.message,
                format!("the peer answered with an error: {name}: not run (code C)")
            );
            let boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(Error::Remote(Box::new(not_run)));
            assert_eq!(RemoteError::from_dyn(&*boxed), forwarded);
        }
    }

    #[test]
    fn a_code_reads_as_the_peer_wrote_it() {
        let error = RemoteError::new("E", "m");
        assert_eq!(
            error.clone().with_code("ENOENT").to_string(),
            "E: m (code ENOENT)"
        );
        assert_eq!(error.clone().with_code(42).to_string(), "E: m (code 42)");
        assert_eq!(error.clone().with_code("42").to_string(), r#"E: m (code "42")"#);
        assert_eq!(error.clone().with_code("").to_string(), r#"E: m (code "")"#);
        assert_eq!(
            error.clone().with_code("no such").to_string(),
            r#"E: m (code "no such")"#
        );
        assert_eq!(error.to_string(), "E: m");
    }
}
