//! A TCP proxy between a PostgreSQL client and its server that injects
//! faults by a seeded plan, and logs every fault it injected.
//!
//! Faults come one at a time: the next one of the plan is due a drawn gap
//! after the last one was injected (or after the proxy started), and the
//! first connection with traffic then takes it. The kinds:
//!
//! - [`Kind::Cut`]: the connection is dropped (both ways) after a drawn
//!   number of further bytes, counted in both directions;
//! - [`Kind::AfterCommit`]: the connection is dropped right after the
//!   server's reply to a commit, before that reply is forwarded, so the
//!   commit is durable and the client never hears of it. A commit is a
//!   `CommandComplete` (`'C'`) message tagged `COMMIT`, or the
//!   `ReadyForQuery` (`'Z'`, idle) that follows the `CommandComplete` of an
//!   `INSERT`, `UPDATE` or `DELETE` outside a transaction block (the
//!   extended protocol commits such a statement at its `Sync`, after its
//!   `CommandComplete`);
//! - [`Kind::Stall`]: nothing is forwarded either way for a drawn time,
//!   then forwarding goes on; the connection is not closed.
//!
//! Each injected fault is a line `<at_ms> <proxy> <kind> <conn> <stall_ms>`
//! of the proxy's log, written as it is injected.
//!
//! The proxy expects a plain connection (no TLS), as `tokio-postgres`
//! makes with `NoTls`.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// What a fault does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Drops the connection after some bytes.
    Cut,
    /// Drops the connection right after a commit, before its reply.
    AfterCommit,
    /// Forwards nothing for a while.
    Stall,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 3] = [Kind::Cut, Kind::AfterCommit, Kind::Stall];

    /// The name in the fault log.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Cut => "cut",
            Kind::AfterCommit => "after-commit",
            Kind::Stall => "stall",
        }
    }
}

/// One fault of the plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    /// Due this long after the previous fault was injected.
    pub gap: Duration,
    /// What it does.
    pub kind: Kind,
    /// Bytes forwarded before a [`Kind::Cut`].
    pub bytes: u64,
    /// How long a [`Kind::Stall`] lasts.
    pub stall: Duration,
}

/// How a proxy's plan is drawn.
#[derive(Clone, Debug)]
pub struct PlanSpec {
    /// Faults in all.
    pub faults: usize,
    /// The mean gap between two faults (gaps are drawn from half to one
    /// and a half of it).
    pub mean_gap: Duration,
    /// A [`Kind::Cut`] comes after up to this many bytes.
    pub max_cut_bytes: u64,
    /// Most stalls last a time drawn up to this.
    pub short_stall: Duration,
    /// The share of stalls that last a long one instead.
    pub long_share: f64,
    /// A long stall lasts a time drawn in this range: longer than a lease,
    /// so that the worker behind the proxy loses its leases.
    pub long_stall: (Duration, Duration),
}

impl PlanSpec {
    /// The plan drawn from `seed`: the kinds in turns of one of each (in a
    /// drawn order), so each comes `faults / 3` times or one more.
    pub fn draw(&self, seed: u64) -> Vec<Fault> {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut plan = Vec::with_capacity(self.faults);
        let mut turn: Vec<Kind> = Vec::new();
        let mean = self.mean_gap.as_millis() as u64;
        for _ in 0..self.faults {
            if turn.is_empty() {
                turn = Kind::ALL.to_vec();
                rng.shuffle(&mut turn);
            }
            let kind = turn.pop().unwrap();
            let gap = Duration::from_millis(rng.u64(mean / 2..=mean + mean / 2));
            let bytes = rng.u64(0..=self.max_cut_bytes);
            let stall = if rng.f64() < self.long_share {
                let (lo, hi) = self.long_stall;
                Duration::from_millis(rng.u64(lo.as_millis() as u64..=hi.as_millis() as u64))
            } else {
                Duration::from_millis(rng.u64(10..=self.short_stall.as_millis() as u64))
            };
            plan.push(Fault {
                gap,
                kind,
                bytes,
                stall,
            });
        }
        plan
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The plan's state, shared by a proxy's connections.
struct Plan {
    name: String,
    faults: VecDeque<Fault>,
    /// When the front fault is due.
    due: Instant,
    log: std::fs::File,
}

impl Plan {
    /// The front fault if it is due and `can` take it.
    fn take(&mut self, can: impl Fn(Kind) -> bool) -> Option<Fault> {
        let front = self.faults.front()?;
        if Instant::now() < self.due || !can(front.kind) {
            return None;
        }
        self.faults.pop_front()
    }

    /// Logs a fault as injected now; the next one is due its gap later.
    fn injected(&mut self, kind: Kind, conn: u64, stall: Duration) {
        let line = format!(
            "{} {} {} {conn} {}\n",
            now_ms(),
            self.name,
            kind.name(),
            stall.as_millis()
        );
        self.log.write_all(line.as_bytes()).unwrap();
        self.log.flush().unwrap();
        if let Some(next) = self.faults.front() {
            self.due = Instant::now() + next.gap;
        }
    }
}

/// A running proxy; stops (closing every connection) when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    log: PathBuf,
    plan: Arc<Mutex<Plan>>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    conns: Arc<AtomicU64>,
}

impl FaultProxy {
    /// Listens on `127.0.0.1:0` and forwards each connection to
    /// `upstream`, injecting the faults of `plan`, logged to `log`.
    pub async fn start(name: &str, upstream: SocketAddr, plan: Vec<Fault>, log: &Path) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let due = Instant::now() + plan.first().map_or(Duration::ZERO, |f| f.gap);
        let plan = Arc::new(Mutex::new(Plan {
            name: name.to_owned(),
            faults: plan.into(),
            due,
            log: file,
        }));
        let (stop, stopped) = watch::channel(false);
        let conns = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(accept(
            listener,
            upstream,
            Arc::clone(&plan),
            stopped,
            Arc::clone(&conns),
        ));
        FaultProxy {
            addr,
            log: log.to_owned(),
            plan,
            stop,
            task,
            conns,
        }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The fault log.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.conns.load(Ordering::SeqCst)
    }

    /// Faults of the plan not injected yet.
    pub fn faults_left(&self) -> usize {
        self.plan.lock().unwrap().faults.len()
    }

    /// Drops the rest of the plan: from now on the proxy only forwards.
    pub fn stop_faults(&self) {
        self.plan.lock().unwrap().faults.clear();
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.task.abort();
    }
}

async fn accept(
    listener: TcpListener,
    upstream: SocketAddr,
    plan: Arc<Mutex<Plan>>,
    mut stopped: watch::Receiver<bool>,
    conns: Arc<AtomicU64>,
) {
    loop {
        tokio::select! {
            _ = stopped.changed() => return,
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else { continue };
                let n = conns.fetch_add(1, Ordering::SeqCst) + 1;
                let plan = Arc::clone(&plan);
                let stopped = stopped.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else { return };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    Conn::run(n, client, server, plan, stopped).await;
                });
            }
        }
    }
}

/// The fault a connection took and has not finished injecting.
#[derive(Clone, Copy, Debug)]
enum Armed {
    None,
    /// Cut after this many more bytes.
    Cut(u64),
    AfterCommit,
}

/// The state one connection's two directions share.
struct Shared {
    n: u64,
    plan: Arc<Mutex<Plan>>,
    armed: Mutex<Armed>,
    /// Nothing is forwarded before this.
    stalled_until: Mutex<Option<Instant>>,
    cut: watch::Sender<bool>,
}

impl Shared {
    /// Takes the plan's due fault, if the connection has none in hand.
    /// A stall starts at once.
    fn take(&self, server_side: bool) {
        let mut armed = self.armed.lock().unwrap();
        if !matches!(*armed, Armed::None) {
            return;
        }
        let mut plan = self.plan.lock().unwrap();
        let Some(fault) = plan.take(|k| server_side || k != Kind::AfterCommit) else {
            return;
        };
        match fault.kind {
            Kind::Cut => *armed = Armed::Cut(fault.bytes),
            Kind::AfterCommit => *armed = Armed::AfterCommit,
            Kind::Stall => {
                *self.stalled_until.lock().unwrap() = Some(Instant::now() + fault.stall);
                plan.injected(Kind::Stall, self.n, fault.stall);
            }
        }
    }

    /// How many of `len` bytes may go before an armed cut, and whether the
    /// cut comes after them.
    fn cut_budget(&self, len: usize) -> (usize, bool) {
        let mut armed = self.armed.lock().unwrap();
        if let Armed::Cut(left) = *armed {
            if (len as u64) < left {
                *armed = Armed::Cut(left - len as u64);
                return (len, false);
            }
            return (left as usize, true);
        }
        (len, false)
    }

    fn injected(&self, kind: Kind) {
        *self.armed.lock().unwrap() = Armed::None;
        self.plan
            .lock()
            .unwrap()
            .injected(kind, self.n, Duration::ZERO);
        let _ = self.cut.send(true);
    }

    async fn wait_stall(&self) {
        let until = *self.stalled_until.lock().unwrap();
        if let Some(until) = until {
            tokio::time::sleep_until(until).await;
            let mut s = self.stalled_until.lock().unwrap();
            if s.is_some_and(|u| u <= Instant::now()) {
                *s = None;
            }
        }
    }
}

struct Conn;

impl Conn {
    async fn run(
        n: u64,
        client: TcpStream,
        server: TcpStream,
        plan: Arc<Mutex<Plan>>,
        mut stopped: watch::Receiver<bool>,
    ) {
        let (cut, cut_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            n,
            plan,
            armed: Mutex::new(Armed::None),
            stalled_until: Mutex::new(None),
            cut,
        });
        let (client_r, client_w) = client.into_split();
        let (server_r, server_w) = server.into_split();
        let up = Self::upstream(Arc::clone(&shared), client_r, server_w, cut_rx.clone());
        let down = Self::downstream(Arc::clone(&shared), server_r, client_w, cut_rx);
        tokio::select! {
            _ = async { tokio::join!(up, down) } => {}
            _ = stopped.changed() => {}
        }
    }

    /// Client to server: raw bytes.
    async fn upstream(
        shared: Arc<Shared>,
        mut from: OwnedReadHalf,
        mut to: OwnedWriteHalf,
        mut cut: watch::Receiver<bool>,
    ) {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = tokio::select! {
                r = from.read(&mut buf) => match r { Ok(0) | Err(_) => break, Ok(n) => n },
                _ = cut.changed() => break,
            };
            shared.take(false);
            shared.wait_stall().await;
            if *cut.borrow() {
                break;
            }
            let (send, then_cut) = shared.cut_budget(n);
            if to.write_all(&buf[..send]).await.is_err() {
                break;
            }
            if then_cut {
                shared.injected(Kind::Cut);
                break;
            }
        }
        let _ = shared.cut.send(true);
    }

    /// Server to client: whole messages, parsed to find commits.
    async fn downstream(
        shared: Arc<Shared>,
        mut from: OwnedReadHalf,
        mut to: OwnedWriteHalf,
        mut cut: watch::Receiver<bool>,
    ) {
        let mut buf = vec![0u8; 16 * 1024];
        let mut parser = Parser::default();
        loop {
            let n = tokio::select! {
                r = from.read(&mut buf) => match r { Ok(0) | Err(_) => break, Ok(n) => n },
                _ = cut.changed() => break,
            };
            shared.take(true);
            shared.wait_stall().await;
            if *cut.borrow() {
                break;
            }
            let after_commit = matches!(*shared.armed.lock().unwrap(), Armed::AfterCommit);
            let (out, commit_cut) = parser.feed(&buf[..n], after_commit);
            let (send, then_cut) = shared.cut_budget(out.len());
            if to.write_all(&out[..send]).await.is_err() {
                break;
            }
            if then_cut {
                shared.injected(Kind::Cut);
                break;
            }
            if commit_cut {
                shared.injected(Kind::AfterCommit);
                break;
            }
        }
        let _ = shared.cut.send(true);
    }
}

/// Splits the server's bytes into messages (`type`, `i32` length that
/// counts itself, body) and finds commits.
#[derive(Default)]
struct Parser {
    /// Bytes of an incomplete message.
    partial: Vec<u8>,
    /// Messages held back from a write's `CommandComplete` until the
    /// `ReadyForQuery` that says whether it committed.
    held: Vec<u8>,
}

impl Parser {
    /// Takes in `bytes`; returns the bytes to forward and whether to cut
    /// right after them (a commit whose reply is withheld). Holds messages
    /// only when `after_commit` is armed.
    fn feed(&mut self, bytes: &[u8], after_commit: bool) -> (Vec<u8>, bool) {
        self.partial.extend_from_slice(bytes);
        let mut out = Vec::new();
        let mut at = 0;
        while self.partial.len() - at >= 5 {
            let len = u32::from_be_bytes(self.partial[at + 1..at + 5].try_into().unwrap()) as usize;
            let end = at + 1 + len;
            if self.partial.len() < end {
                break;
            }
            let msg = &self.partial[at..end];
            at = end;
            if !after_commit {
                out.extend_from_slice(msg);
                continue;
            }
            match msg[0] {
                b'C' => {
                    let tag = std::str::from_utf8(&msg[5..]).unwrap_or("");
                    let tag = tag.trim_end_matches('\0');
                    if tag == "COMMIT" {
                        self.partial.drain(..at);
                        self.held.clear();
                        return (out, true);
                    }
                    let write = ["INSERT", "UPDATE", "DELETE"]
                        .iter()
                        .any(|w| tag.starts_with(w));
                    if write {
                        out.append(&mut self.held);
                        self.held.extend_from_slice(msg);
                    } else if self.held.is_empty() {
                        out.extend_from_slice(msg);
                    } else {
                        self.held.extend_from_slice(msg);
                    }
                }
                b'Z' if !self.held.is_empty() => {
                    if msg.get(5) == Some(&b'I') {
                        self.partial.drain(..at);
                        self.held.clear();
                        return (out, true);
                    }
                    // Inside a transaction block: the commit comes later.
                    out.append(&mut self.held);
                    out.extend_from_slice(msg);
                }
                _ if !self.held.is_empty() => self.held.extend_from_slice(msg),
                _ => out.extend_from_slice(msg),
            }
        }
        self.partial.drain(..at);
        if !after_commit {
            out.append(&mut self.held);
        }
        (out, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![kind];
        m.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    #[test]
    fn holds_a_write_until_ready_for_query_and_cuts_when_idle() {
        let rows = msg(b'D', b"\0\x01\0\0\0\x01x");
        let done = msg(b'C', b"UPDATE 3\0");
        let ready = msg(b'Z', b"I");
        let all = [rows.clone(), done, ready].concat();
        // Byte by byte: the rows go, the rest is withheld, then the cut.
        let mut p = Parser::default();
        let mut out = Vec::new();
        for (i, b) in all.iter().enumerate() {
            let (o, cut) = p.feed(&[*b], true);
            out.extend(o);
            assert_eq!(cut, i == all.len() - 1, "{i}");
        }
        assert_eq!(out, rows);
    }
}
