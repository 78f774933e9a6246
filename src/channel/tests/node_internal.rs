//! Node's internal messages: which lines are Node's, the ones a Node peer
//! would take for its own, and handles and their NACKs.

use super::node_internal_cmd;

#[tokio::test]
async fn node_messages_are_taken_out_unless_the_parser_rules_them_out() {
    use super::Parsed;
    use tokio::io::AsyncWriteExt;
    let (ours, mut theirs) = tokio::io::duplex(4096);
    let mut channel = super::Channel::from_stream(ours, super::ChannelConfig::default());
    theirs
        .write_all(b"{\"cmd\":\"NODE_A\"}\n[1]\n{\"cmd\":\"NODE_B\"}\n[2]\n{\"cmd\":\"NODE_C\"}\n")
        .await
        .unwrap();
    drop(theirs);
    // NODE_A: unchecked, so searched and taken out. NODE_B: refused by
    // the parser, still Node's. NODE_C: ruled out, so it is a message.
    let parse = |line: crate::frame::LineText<'_>| -> Result<Parsed<String>, serde_json::Error> {
        let text = line.text();
        if text.contains("NODE_B") {
            return Err(serde::de::Error::custom("refused"));
        }
        let text = text.to_string();
        Ok(if text.contains("NODE_C") {
            Parsed::NotNodes(text)
        } else {
            Parsed::Unchecked(text)
        })
    };
    let mut got = Vec::new();
    while let Some(text) = channel.receiver.recv_with(parse).await.unwrap() {
        got.push(text);
    }
    assert_eq!(got, ["[1]", "[2]", r#"{"cmd":"NODE_C"}"#]);
}

#[tokio::test]
async fn a_message_a_node_peer_would_take_for_its_own_is_refused_unsent() {
    // PROTOCOL.md 1.3: Node handles such a line itself, and an
    // unexpected NODE_ command makes it fail an internal assertion.
    let (a, mut b) = super::Channel::pair(super::ChannelConfig::default());
    for reserved in [
        serde_json::json!({"cmd": "NODE_HANDLE_ACK"}),
        serde_json::json!({"x": 1, "cmd": "NODE_anything"}),
    ] {
        let refused = a.sender().send(&reserved).await;
        assert!(
            matches!(refused, Err(crate::Error::ReservedMessage(_))),
            "{reserved}: {refused:?}"
        );
    }
    a.sender()
        .send(&serde_json::json!({"cmd": "mine"}))
        .await
        .unwrap();
    assert_eq!(b.recv().await.unwrap().unwrap().get(), r#"{"cmd":"mine"}"#);
}

#[tokio::test]
async fn a_nack_still_goes_when_the_recv_that_read_the_handle_is_dropped() {
    // The NACK waits for queue space; a caller's timeout around `recv`
    // drops it there. The next `recv` must send it: a Node peer holds
    // back everything after a handle until it is answered.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (ours, theirs) = tokio::io::duplex(64);
    let (mut their_reader, mut their_writer) = tokio::io::split(theirs);
    let config = super::ChannelConfig {
        write_queue_bytes: 64,
        ..super::ChannelConfig::default()
    };
    let mut channel = super::Channel::from_stream(ours, config);
    // Fills the pipe and takes the whole queue budget.
    channel.sender().send(&"x".repeat(200)).await.unwrap();
    their_writer
        .write_all(b"{\"cmd\":\"NODE_HANDLE\",\"type\":\"net.Socket\"}\n[1]\n")
        .await
        .unwrap();
    let waited = tokio::time::timeout(std::time::Duration::from_millis(200), channel.recv()).await;
    assert!(waited.is_err(), "the NACK should wait for queue space");
    let reading = tokio::spawn(async move {
        let mut seen = Vec::new();
        let mut chunk = [0; 256];
        while !String::from_utf8_lossy(&seen).contains("NODE_HANDLE_NACK") {
            let n = their_reader.read(&mut chunk).await.unwrap();
            assert!(n > 0, "end of stream before the NACK");
            seen.extend_from_slice(&chunk[..n]);
        }
    });
    let next = channel.recv().await.unwrap().unwrap();
    assert_eq!(next.get(), "[1]");
    tokio::time::timeout(std::time::Duration::from_secs(5), reading)
        .await
        .expect("the NACK of the dropped recv never went")
        .unwrap();
}

#[test]
fn node_internal_commands_are_read_as_json_parse_reads_them() {
    let internal = [
        r#"{"cmd":"NODE_HANDLE","type":"net.Socket","msg":{"with":"handle"}}"#,
        r#"{"cmd":"x","cmd":"NODE_HANDLE_ACK"}"#,
        r#"{"\u0063md":"NODE_HANDLE_ACK"}"#,
        r#"{"a":"\n","cmd":"NODE_CLUSTER"}"#,
        // An earlier duplicate no value tree takes does not hide the
        // last one (Node: 1e400 is Infinity, depth has no limit).
        r#"{"cmd":1e400,"cmd":"NODE_HANDLE"}"#,
        &format!(
            r#"{{"cmd":{}{},"cmd":"NODE_HANDLE"}}"#,
            "[".repeat(200),
            "]".repeat(200)
        ),
        // A lone surrogate in the name is still a name Node reads.
        r#"{"cmd":"NODE_HANDLE\ud800"}"#,
    ];
    for json in internal {
        assert!(node_internal_cmd(json).is_some(), "{json:.80}");
    }
    let plain = [
        r#"{"cmd":"NODE_"}"#,
        r#"{"cmd":"NODE_HANDLE_ACK","cmd":"x"}"#,
        r#"{"cmd":5}"#,
        r#"["NODE_\"cmd"]"#,
        r#""{\"cmd\":\"NODE_HANDLE\"}""#,
        r#"{"nested":{"cmd":"NODE_HANDLE"}}"#,
        r#"{"cmd":"NODE_HANDLE"} trailing"#,
        r#"{"cmd":"NODE_HANDLE"}{}"#,
        r#"{"cmd":"NODE_HANDLE","cmd":1e400}"#,
    ];
    for json in plain {
        assert!(node_internal_cmd(json).is_none(), "{json}");
    }
}

#[tokio::test]
async fn a_handle_too_long_to_read_is_refused_not_reported() {
    // Node holds back everything after a handle until it is answered; a
    // handle's message past our maximum length must be answered too.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    let (mut their_reader, mut their_writer) = tokio::io::split(theirs);
    let config = super::ChannelConfig {
        max_message_len: 64,
        ..super::ChannelConfig::default()
    };
    let mut channel = super::Channel::from_stream(ours, config);
    let pad = "p".repeat(200);
    let handle =
        format!("{{\"cmd\":\"NODE_HANDLE\",\"type\":\"net.Socket\",\"msg\":{{\"pad\":\"{pad}\"}}}}\n");
    their_writer.write_all(handle.as_bytes()).await.unwrap();
    their_writer.write_all(b"[1]\n").await.unwrap();
    let next = channel
        .recv()
        .await
        .expect("the handle was reported as a bad line");
    assert_eq!(next.unwrap().get(), "[1]");
    let mut seen = Vec::new();
    let mut chunk = [0; 256];
    tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while !String::from_utf8_lossy(&seen).contains("NODE_HANDLE_NACK") {
            let n = their_reader.read(&mut chunk).await.unwrap();
            assert!(n > 0, "end of stream before the NACK");
            seen.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .expect("no NACK for the handle");
    assert_eq!(String::from_utf8_lossy(&seen), "{\"cmd\":\"NODE_HANDLE_NACK\"}\n");
}

#[test]
fn a_node_command_is_known_by_the_head_of_its_line() {
    use super::node_internal_cmd_at_head as cmd;
    assert_eq!(
        cmd(br#"{"cmd":"NODE_HANDLE","type":"net.Socket","msg":{"#).as_deref(),
        Some("NODE_HANDLE")
    );
    assert_eq!(
        cmd(b" {\r\n\"cmd\" :\t\"NODE_CLUSTER\",").as_deref(),
        Some("NODE_CLUSTER")
    );
    assert_eq!(cmd(br#"{"cmd":"NODE_\u0058","#).as_deref(), Some("NODE_X"));
    assert_eq!(cmd(br#"{"cmd":"NODE_\ud800","#).as_deref(), Some("NODE_\u{fffd}"));
    for not_node in [
        &br#"{"cmd":"NODE_"#[..], // the string does not end in the head
        br#"{"cmd":"NODE_","#,    // not longer than 5 characters
        br#"{"cmd":"node_handle","#,
        br#"{"cmd":1,"#,
        br#"{"msg":{},"cmd":"NODE_HANDLE""#, // not first: not how Node writes its own
        br#"["cmd","NODE_HANDLE"]"#,
        br#"{"cmd":"NODE_H\"#,
        b"",
    ] {
        assert_eq!(cmd(not_node), None, "{}", String::from_utf8_lossy(not_node));
    }
}
