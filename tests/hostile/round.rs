//! One round: a session set up over a fresh pipe, the peer playing its
//! script (an opening around the handshake, then a main part with our side
//! calling), its way of going, and the checks of how everything ended.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::rng::Rng;
use ipc_request::{Channel, Error, Session, SessionBuilder};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::JoinHandle;

use crate::common;
use crate::lines;
use crate::our_side::{self, Ending, OurCalls, RoundSettings};
use crate::our_writes::{WhatWeWrote, read_what_we_write};
use crate::script::{Move, Peer};

/// What a round found: problems (empty if it passed) and a log of how it
/// went, printed with its problems.
pub struct RoundReport {
    pub problems: Vec<String>,
    pub log: Vec<String>,
}

/// A round in play.
struct Round {
    settings: RoundSettings,
    report: RoundReport,
    peer: Peer,
    /// Where the peer's lines are cut into pieces.
    pieces_rng: Rng,
    /// What our side calls.
    our_rng: Rng,
    peer_writer: Option<Box<dyn AsyncWrite + Unpin + Send>>,
    /// False once a write of the peer's stalled (our side reads no more,
    /// being stuck on writing to a peer that reads no more) or failed.
    writes_go_through: bool,
    seen: Arc<Mutex<WhatWeWrote>>,
    /// A unit for each line the peer's reader took.
    news: UnboundedReceiver<()>,
    peer_reader: JoinHandle<()>,
    setup: Option<JoinHandle<Result<Session, Error>>>,
    session: Option<Session>,
    our_calls: OurCalls,
    messages: Option<JoinHandle<usize>>,
}

pub async fn run_round(seed: u64) -> RoundReport {
    let mut round = Round::start(seed);
    round.play().await;
    round.report
}

impl Round {
    /// Opens the pipe, starts our session's setup on one end and the
    /// peer's reader on the other.
    fn start(seed: u64) -> Round {
        let settings = RoundSettings::from_seed(seed);
        let max_message_len = settings.channel.max_message_len;
        let (channel, peer_read, peer_write): (Channel, Box<dyn tokio::io::AsyncRead + Unpin + Send>, _) =
            match settings.duplex_capacity {
                None => {
                    let (ours, theirs) = tokio::net::UnixStream::pair().unwrap();
                    let (read, write) = theirs.into_split();
                    let ours = Channel::from_unix(ours, settings.channel.clone()).unwrap();
                    (
                        ours,
                        Box::new(read),
                        Box::new(write) as Box<dyn AsyncWrite + Unpin + Send>,
                    )
                }
                Some(capacity) => {
                    let (ours, theirs) = tokio::io::duplex(capacity);
                    let (read, write) = tokio::io::split(theirs);
                    (
                        Channel::from_stream(ours, settings.channel.clone()),
                        Box::new(read),
                        Box::new(write),
                    )
                }
            };
        let mut builder = SessionBuilder::new()
            .config(settings.session.clone())
            .handler(our_side::handler(max_message_len));
        if settings.keep_plain_messages {
            builder = builder.keep_plain_messages();
        }
        let setup = tokio::spawn(builder.setup(channel));
        let seen = Arc::new(Mutex::new(WhatWeWrote::default()));
        let (news_tx, news) = tokio::sync::mpsc::unbounded_channel();
        let stop_after = settings.stop_reading_after;
        let peer_reader = tokio::spawn(read_what_we_write(peer_read, seen.clone(), stop_after, news_tx));
        let log = vec![format!("{settings:?}")];
        Round {
            settings,
            report: RoundReport {
                problems: Vec::new(),
                log,
            },
            peer: Peer::new(seed, max_message_len),
            pieces_rng: Rng::new(seed ^ 0x91ece5),
            our_rng: Rng::new(seed ^ 0x0c0),
            peer_writer: Some(peer_write),
            writes_go_through: true,
            seen,
            news,
            peer_reader,
            setup: Some(setup),
            session: None,
            our_calls: OurCalls::default(),
            messages: None,
        }
    }

    async fn play(&mut self) {
        let Some(our_handshake_uid) = self.our_handshake_uid().await else {
            return self.problem("no handshake request from us within 5 s".into());
        };
        for step in 0..self.settings.opening_steps {
            let next = self.peer.opening_step(step, &our_handshake_uid);
            self.make(next).await;
        }
        self.claim_the_session().await;
        if let Some(session) = self.session.clone() {
            self.play_the_main_part(&session).await;
        }
        let waits_for_answers = self.waits_for_answers();
        if waits_for_answers {
            self.wait_for_answers().await;
        }
        self.report
            .log
            .push(format!("waited for answers: {waits_for_answers}"));
        self.hang_up().await;
        self.check_the_end(waits_for_answers).await;
    }

    fn problem(&mut self, problem: String) {
        self.report.problems.push(problem);
    }

    async fn our_handshake_uid(&mut self) -> Option<String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(uid) = self.seen.lock().unwrap().handshake_uid.clone() {
                return Some(uid);
            }
            // `None`: the reader ended (our end of the stream came). It
            // must end the wait, not loop: `recv` is then ready at once,
            // and a current-thread runtime would never fire the timeout.
            tokio::time::timeout_at(deadline, self.news.recv()).await.ok()??;
        }
    }

    /// Plays one move of the peer's. A peer that stopped reading may find
    /// our side stopped too, its writes blocked: a write is given 500 ms.
    async fn make(&mut self, next: Move) {
        let bytes = match next {
            Move::Sleep(ms) => return tokio::time::sleep(Duration::from_millis(ms)).await,
            Move::Write(bytes) => bytes,
        };
        if bytes.is_empty() || !self.writes_go_through {
            return;
        }
        self.peer
            .written
            .push(String::from_utf8_lossy(&bytes).chars().take(300).collect());
        let writer = self.peer_writer.as_mut().unwrap();
        let write = lines::write_in_pieces(writer, &mut self.pieces_rng, &bytes);
        if !matches!(
            tokio::time::timeout(Duration::from_millis(500), write).await,
            Ok(Ok(()))
        ) {
            self.writes_go_through = false;
            self.report
                .log
                .push("a write of the peer's stalled or failed".into());
        }
    }

    /// Takes the session once its setup ended: a peer that never answered
    /// our handshake (or answered only to wrong UIDs) fails it after
    /// `handshake_timeout`, which is no problem.
    async fn claim_the_session(&mut self) {
        let bound = self.settings.session.handshake_timeout + Duration::from_secs(5);
        let setup = self.setup.take().unwrap();
        match tokio::time::timeout(bound, setup).await {
            Ok(Ok(Ok(session))) => self.session = Some(session),
            Ok(Ok(Err(e))) => self.report.log.push(format!("setup failed: {e}")),
            Ok(Err(e)) => self.problem(format!("setup panicked: {e}")),
            Err(_) => self.problem(format!("setup did not end within {bound:?}")),
        }
    }

    async fn play_the_main_part(&mut self, session: &Session) {
        if self.settings.take_messages {
            let mut messages = session.messages().unwrap();
            self.messages = Some(tokio::spawn(async move {
                let mut n = 0;
                while messages.recv().await.is_some() {
                    n += 1;
                }
                n
            }));
        }
        for _ in 0..self.settings.main_steps {
            if self.peer.our_side_calls_now() {
                our_side::start_our_calls(session, &mut self.our_rng, &self.our_calls);
            }
            let ours = self.seen.lock().unwrap().our_requests.clone();
            let next = self.peer.main_step(&ours);
            self.make(next).await;
        }
    }

    /// Whether the peer waits for its answers: it must still read, its
    /// writes must have gone through, and the session must exist.
    fn waits_for_answers(&self) -> bool {
        self.settings.waits_for_answers
            && self.settings.stop_reading_after.is_none()
            && self.writes_go_through
            && self.session.is_some()
    }

    /// Answers our requests as they come, until every request of the
    /// peer's that must be answered was, or 4 s passed (the checks then
    /// say which were not).
    async fn wait_for_answers(&mut self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
        loop {
            let ours = self.seen.lock().unwrap().our_requests.clone();
            let answers = self.peer.answers_to_the_rest(&ours);
            self.make(Move::Write(answers)).await;
            let all_answered = {
                let seen = self.seen.lock().unwrap();
                self.peer
                    .must_be_answered()
                    .all(|uid| seen.answers.contains_key(uid))
            };
            if all_answered || tokio::time::Instant::now() > deadline {
                return;
            }
            // Woken by a line read, or after 50 ms; a reader that ended
            // reads no more answers (and `recv` would not wait).
            if let Ok(None) = tokio::time::timeout(Duration::from_millis(50), self.news.recv()).await {
                return;
            }
        }
    }

    async fn hang_up(&mut self) {
        let ending = self.settings.ending;
        self.report.log.push(format!("ending {ending:?}"));
        let mut writer = self.peer_writer.take().unwrap();
        if ending != Ending::Leave {
            let _ = tokio::time::timeout(Duration::from_millis(500), writer.shutdown()).await;
        }
        drop(writer);
        match ending {
            Ending::HalfClose => {}
            Ending::HalfCloseThenLeave => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                self.peer_reader.abort();
            }
            Ending::Leave => self.peer_reader.abort(),
        }
    }
}

mod end_checks;
