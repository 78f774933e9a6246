//! The peer's UIDs and cancels: UIDs that differ only in lone surrogates,
//! reused UIDs, and answers a cancel stops.

use crate::common;
use crate::common::hand_played::{
    next_line, one_handler_slot_for_a_hand_played_peer, serve_a_hand_played_peer, wait_until_read,
    write_protocol_line,
};

use std::sync::Arc;
use std::time::Duration;

use ipc_request::{ChannelConfig, Error, Request, Responder, responder_fn};
use serde_json::Value;
use tokio::sync::mpsc;

/// A handler for the UID tests, and what it reports. Payload 1 is
/// answered at once, then its handler works on until `finish_first` (or
/// its cancel); payload 2 waits up to 5 s for its cancel; payload 3 is
/// answered.
fn answer_first_then_work_on() -> (
    ipc_request::Handler,
    Arc<tokio::sync::Notify>,
    mpsc::UnboundedReceiver<&'static str>,
) {
    let finish_first = Arc::new(tokio::sync::Notify::new());
    let (tx, events) = mpsc::unbounded_channel();
    let handler = responder_fn({
        let finish_first = finish_first.clone();
        move |req: Request, responder: Responder| {
            let (finish_first, tx) = (finish_first.clone(), tx.clone());
            async move {
                match req.payload::<u64>().unwrap() {
                    1 => {
                        responder.respond(&1).await.unwrap();
                        let _ = tx.send(tokio::select! {
                            _ = finish_first.notified() => "first finished",
                            _ = req.cancelled() => "first cancelled",
                        });
                    }
                    2 => {
                        let _ = tx.send("second started");
                        let heard = tokio::time::timeout(Duration::from_secs(5), req.cancelled()).await;
                        let _ = tx.send(if heard.is_ok() {
                            "second cancelled"
                        } else {
                            "second missed it"
                        });
                    }
                    n => {
                        let _ = tx.send("third ran");
                        let _ = responder.respond(&n).await;
                    }
                }
            }
        }
    });
    (handler, finish_first, events)
}

#[tokio::test]
async fn uids_that_differ_only_in_lone_surrogates_stay_apart_and_go_back_as_sent() {
    // A JS peer's UIDs are UTF-16 strings and may hold lone surrogates,
    // which no Rust String can: read as U+FFFD, "\ud800" and "\ud801"
    // would be one UID in our tables, and neither would come back in an
    // answer. One handler slot: \ud800 runs, unanswered, until its cancel;
    // \ud801 waits for the slot, and its cancel must drop it there, not
    // reach the handler of \ud800.
    let (handler, _finish_first, mut events) = answer_first_then_work_on();
    let (_server, mut messages, mut reader, mut writer) =
        one_handler_slot_for_a_hand_played_peer(handler).await;
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .unwrap()
            .unwrap()
    };
    write_protocol_line(&mut writer, "REQUEST", r"\ud800", "2").await;
    assert_eq!(next().await, "second started");
    write_protocol_line(&mut writer, "REQUEST", r"\ud801", "3").await;
    write_protocol_line(&mut writer, "CANCEL", r"\ud801", "null").await;
    wait_until_read(&mut writer, &mut messages).await;
    write_protocol_line(&mut writer, "CANCEL", r"\ud800", "null").await;
    assert_eq!(next().await, "second cancelled");
    // A new request, under a UID whose surrogates pair up only in part: its
    // answer is the first line we write, and gives the UID back as sent.
    write_protocol_line(&mut writer, "REQUEST", r"\udc00\ud801\udc01", "3").await;
    assert_eq!(next().await, "third ran");
    let answer = common::read_line(&mut reader).await;
    assert!(
        answer.starts_with(
            r#"{"_IPC_REQUEST/MSG_TYPE":"_IPC_REQUEST/MSG_TYPE:RESPONSE","_IPC_REQUEST/REQUEST_UID":"\udc00𐐁","#
        ),
        "{answer}"
    );
    assert!(events.try_recv().is_err(), "the cancelled \\ud801 never ran");
}

#[tokio::test]
async fn a_handler_done_with_a_uid_leaves_a_later_request_with_it_cancellable() {
    // A peer may reuse a UID once it has its answer. The first handler,
    // answered and finishing later, must not take the second one's entry
    // out of the map of running handlers: the peer's cancel would miss it.
    let (handler, finish_first, mut events) = answer_first_then_work_on();
    let (_server, _reader, mut writer) = serve_a_hand_played_peer(
        handler,
        ChannelConfig::default(),
        4096,
        Some(&["error", "cancel"]),
    )
    .await;
    write_protocol_line(&mut writer, "REQUEST", "7", "1").await;
    write_protocol_line(&mut writer, "REQUEST", "7", "2").await;
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .unwrap()
            .unwrap()
    };
    assert_eq!(next().await, "second started");
    finish_first.notify_one();
    assert_eq!(next().await, "first finished");
    write_protocol_line(&mut writer, "CANCEL", "7", "null").await;
    assert_eq!(next().await, "second cancelled");
}

#[tokio::test]
async fn a_cancel_of_a_reused_uid_drops_the_waiting_request_not_the_answered_handler() {
    // One handler slot. Request 7 (payload 1) is answered and its handler
    // works on, holding the slot; the peer, having the answer, sends 7
    // again (payload 2), which waits for the slot, and cancels it. The
    // cancel means that newer request: it must never run, and the first
    // handler, whose caller is already answered, must not be cancelled.
    let (handler, finish_first, mut events) = answer_first_then_work_on();
    let (_server, mut messages, mut reader, mut writer) =
        one_handler_slot_for_a_hand_played_peer(handler).await;
    write_protocol_line(&mut writer, "REQUEST", "7", "1").await;
    let first_answer: Value = serde_json::from_str(&common::read_line(&mut reader).await).unwrap();
    assert_eq!(first_answer["_IPC_REQUEST/PAYLOAD"], 1);
    write_protocol_line(&mut writer, "REQUEST", "7", "2").await;
    write_protocol_line(&mut writer, "CANCEL", "7", "null").await;
    wait_until_read(&mut writer, &mut messages).await;
    finish_first.notify_one();
    let event = tokio::time::timeout(Duration::from_secs(10), events.recv()).await;
    assert_eq!(event.unwrap().unwrap(), "first finished");
    write_protocol_line(&mut writer, "REQUEST", "8", "3").await;
    let third_answer: Value = serde_json::from_str(&common::read_line(&mut reader).await).unwrap();
    assert_eq!(
        third_answer["_IPC_REQUEST/PAYLOAD"], 3,
        "only the third is answered"
    );
    let mut seen = Vec::new();
    while let Ok(event) = events.try_recv() {
        seen.push(event);
    }
    assert_eq!(seen, ["third ran"]);
}

#[tokio::test]
async fn a_cancel_of_a_uid_reused_too_early_takes_the_newest_request() {
    // The peer breaks the protocol: 7 (payload 2) runs unanswered when it
    // sends 7 again (payload 3), which waits for the one slot. Its map of
    // pending requests holds the newest 7, so its cancel of 7 means that
    // one: it leaves the backlog and never runs, and the running 7 goes on
    // until a second cancel reaches it (a review saw the first cancel go
    // to the running one, and the cancelled one run).
    let (handler, _finish_first, mut events) = answer_first_then_work_on();
    let (_server, mut messages, mut reader, mut writer) =
        one_handler_slot_for_a_hand_played_peer(handler).await;
    async fn next(events: &mut mpsc::UnboundedReceiver<&'static str>) -> &'static str {
        let event = tokio::time::timeout(Duration::from_secs(10), events.recv()).await;
        event.unwrap().unwrap()
    }
    write_protocol_line(&mut writer, "REQUEST", "7", "2").await;
    assert_eq!(next(&mut events).await, "second started");
    write_protocol_line(&mut writer, "REQUEST", "7", "3").await;
    wait_until_read(&mut writer, &mut messages).await;
    write_protocol_line(&mut writer, "CANCEL", "7", "null").await;
    wait_until_read(&mut writer, &mut messages).await;
    // A cancel of the running 7 would show at once (a busy machine may
    // hide one, never show one that did not happen).
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(events.try_recv().ok(), None, "the cancel went to the running 7");
    write_protocol_line(&mut writer, "CANCEL", "7", "null").await;
    assert_eq!(
        next(&mut events).await,
        "second cancelled",
        "a second cancel reaches it"
    );
    write_protocol_line(&mut writer, "REQUEST", "8", "3").await;
    assert_eq!(next(&mut events).await, "third ran");
    let answer: Value = serde_json::from_str(&common::read_line(&mut reader).await).unwrap();
    assert_eq!(
        answer["_IPC_REQUEST/REQUEST_UID"], "8",
        "the cancelled 7 ran: {answer}"
    );
}

#[tokio::test]
async fn a_handler_whose_uid_the_peer_reused_still_sees_the_close() {
    // The second request with UID 7 takes its place in the map of running
    // handlers (a cancel of 7 now means it), but the first, answered and
    // still working, must still hear the session end.
    let (tx, mut events) = mpsc::unbounded_channel();
    let handler = responder_fn(move |req: Request, responder: Responder| {
        let tx = tx.clone();
        async move {
            let n = req.payload::<u64>().unwrap();
            if n == 1 {
                responder.respond(&1).await.unwrap();
            }
            let _ = tx.send((n, "started"));
            let heard = tokio::time::timeout(Duration::from_secs(5), req.cancelled()).await;
            let _ = tx.send((
                n,
                if heard.is_ok() {
                    "saw the close"
                } else {
                    "missed it"
                },
            ));
        }
    });
    let (_server, reader, mut writer) = serve_a_hand_played_peer(
        handler,
        ChannelConfig::default(),
        4096,
        Some(&["error", "cancel"]),
    )
    .await;
    for n in ["1", "2"] {
        write_protocol_line(&mut writer, "REQUEST", "7", n).await;
    }
    let mut seen = Vec::new();
    while seen.len() < 2 {
        seen.push(events.recv().await.unwrap());
    }
    drop((reader, writer));
    while seen.len() < 4 {
        seen.push(events.recv().await.unwrap());
    }
    seen.sort();
    assert_eq!(
        seen,
        [
            (1, "saw the close"),
            (1, "started"),
            (2, "saw the close"),
            (2, "started")
        ]
    );
}

#[tokio::test]
async fn a_dropped_responder_answers_nothing_once_its_request_is_cancelled() {
    // The handler drops its responder unanswered and works on: the error
    // answer it leaves goes out when the handler ends. If the peer has
    // cancelled the request by then, nothing may go (PROTOCOL.md 3): the
    // peer may already have reused the UID.
    let (tx, mut events) = mpsc::unbounded_channel();
    let handler = responder_fn(move |req: Request, responder: Responder| {
        let tx = tx.clone();
        async move {
            match req.payload::<u64>().unwrap() {
                1 => {
                    drop(responder);
                    req.cancelled().await;
                    let _ = tx.send("first cancelled");
                }
                n => {
                    let _ = responder.respond(&n).await;
                }
            }
        }
    });
    let (_server, mut reader, mut writer) = serve_a_hand_played_peer(
        handler,
        ChannelConfig::default(),
        4096,
        Some(&["error", "cancel"]),
    )
    .await;
    write_protocol_line(&mut writer, "REQUEST", "7", "1").await;
    write_protocol_line(&mut writer, "CANCEL", "7", "null").await;
    let event = tokio::time::timeout(Duration::from_secs(10), events.recv()).await;
    assert_eq!(event.unwrap().unwrap(), "first cancelled");
    // The UID again, for a request that is answered: its answer is the
    // first line we write.
    write_protocol_line(&mut writer, "REQUEST", "7", "2").await;
    let line = next_line(&mut reader, "no answer").await;
    let value: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(value["_IPC_REQUEST/PAYLOAD"], 2, "{line}");
}

#[tokio::test]
async fn an_answer_waiting_for_room_is_not_written_once_its_request_is_cancelled() {
    // The peer reads nothing for a while: answers wait for room in the
    // write queue, and the peer, tired of waiting, cancels. An answer still
    // waiting then is not written (PROTOCOL.md 3), whether a handler's
    // `respond` (which then fails with Cancelled) or the error a dropped
    // responder left; the peer may already have reused the UID.
    let (tx, mut events) = mpsc::unbounded_channel();
    let handler = responder_fn(move |req: Request, responder: Responder| {
        let tx = tx.clone();
        async move {
            match req.payload::<u64>().unwrap() {
                1 => drop(responder),
                5 => {
                    let first = responder.respond(&5).await;
                    // Refused after its wait for room: nothing was written,
                    // and a second try is told the same.
                    let second = responder.respond(&6).await;
                    let _ = tx.send(match first {
                        Err(Error::Cancelled) => second,
                        other => other,
                    });
                }
                n => {
                    let _ = responder.respond(&n).await;
                }
            }
        }
    });
    let config = ChannelConfig {
        write_queue_bytes: 4096,
        ..ChannelConfig::default()
    };
    let (session, mut reader, mut writer) =
        serve_a_hand_played_peer(handler, config, 4096, Some(&["error", "cancel"])).await;
    let mut messages = session.messages().unwrap();
    // A long plain line fills the pipe and holds the whole write budget.
    session.send(&"x".repeat(50_000)).await.unwrap();
    write_protocol_line(&mut writer, "REQUEST", "7", "1").await;
    write_protocol_line(&mut writer, "REQUEST", "9", "5").await;
    // Time for both answers to start waiting for room (if they do not,
    // they are refused before they wait, and the test still holds).
    tokio::time::sleep(Duration::from_millis(100)).await;
    write_protocol_line(&mut writer, "CANCEL", "7", "null").await;
    write_protocol_line(&mut writer, "CANCEL", "9", "null").await;
    wait_until_read(&mut writer, &mut messages).await;
    write_protocol_line(&mut writer, "REQUEST", "7", "2").await;
    // Now the peer reads: after the plain line, the only answer is the one
    // to the reused UID.
    let plain = common::read_line(&mut reader).await;
    assert!(plain.len() > 50_000);
    let line = next_line(&mut reader, "no answer").await;
    let value: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(value["_IPC_REQUEST/REQUEST_UID"], "7", "{line}");
    assert_eq!(value["_IPC_REQUEST/PAYLOAD"], 2, "{line}");
    let respond = tokio::time::timeout(Duration::from_secs(10), events.recv()).await;
    assert!(
        matches!(respond.unwrap().unwrap(), Err(ipc_request::Error::Cancelled)),
        "respond must say its answer was not written"
    );
}
