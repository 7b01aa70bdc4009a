//! Hibernation of idle plain-TCP connections, as EMQX and VerneMQ
//! hibernate idle Erlang processes. A connection quiet for
//! `limits.hibernate_after_ms` (nothing read, written, queued or waiting
//! for an acknowledgement) ends its task: its socket leaves tokio's reactor
//! and joins one shared epoll (a thread of its own), and its state waits as
//! a [`Parked`] record in its session. Whatever needs the connection wakes
//! it back into a task, in the listener's runtime, tracked and holding its
//! connection permit as before:
//!
//! - the socket becomes readable or closes: the epoll thread;
//! - the session gets something to deliver, or the shared keep-alive timer
//!   fires: [`SessionCell::wake`] (publish path, keep-alive wheel);
//! - takeover and admin disconnect: the broker, where it cancels the
//!   owner's token ([`SessionState::take_parked`]);
//! - shutdown: the listener, once its accept loop stops ([`wake_all`]).
//!
//! Parking checks, under the session's lock, that nothing of that happened
//! already (queue, token, socket, keep-alive); every waker looks under the
//! same lock, so no wake-up is lost in between.

use super::{acks::Acks, throttle::Throttle, Aliases, Conn, Ctx, READ_MIN};
use crate::broker::{Broker, SessionCell, SessionState};
use crate::codec::Protocol;
use crate::session::Will;
use bytes::BytesMut;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token};
use parking_lot::Mutex;
use std::any::Any;
use std::future::Future;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock, Weak};
use std::task::{Context, Poll as TaskPoll};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::{task_tracker::TaskTrackerToken, TaskTracker};

/// Where a connection's task runs, so a hibernated one can come back: the
/// listener's runtime, task tracker (shutdown waits for it), shutdown and
/// kill tokens (the start and end of the grace period) and connection
/// limit, shared by the listener's connections.
pub(crate) struct Respawn {
    pub handle: tokio::runtime::Handle,
    pub tracker: TaskTracker,
    pub shutdown: CancellationToken,
    pub kill: CancellationToken,
    pub limit: Arc<Semaphore>,
}

/// What a plain-TCP connection holds to be able to hibernate: its
/// listener's [`Respawn`], and one permit of its connection limit, given
/// back when the home is dropped. One pointer where a held
/// `OwnedSemaphorePermit` beside it took three words: every parked
/// connection keeps one.
pub(crate) struct Home {
    respawn: Arc<Respawn>,
}

impl Home {
    /// A home in `respawn` holding `permit` (of `respawn.limit`).
    pub(crate) fn new(respawn: Arc<Respawn>, permit: OwnedSemaphorePermit) -> Home {
        debug_assert!(Arc::ptr_eq(permit.semaphore(), &respawn.limit));
        debug_assert_eq!(permit.num_permits(), 1);
        permit.forget();
        Home { respawn }
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        self.respawn.limit.add_permits(1);
    }
}

/// A hibernated connection: its socket (in the shared epoll under `key`)
/// and its state, waiting in its session until something wakes it.
pub(crate) struct Parked {
    io: std::net::TcpStream,
    key: u32,
    conn: Dormant,
    /// Keeps the listener's tracker counting the connection.
    _tracked: TaskTrackerToken,
}

/// What of a [`Conn`] outlives hibernation: not its (empty) buffers, ack
/// pipeline or idle-check state, nor its stop token. The owner's kick
/// token is dropped too (`Owner::kick` is `None` while parked): the
/// broker resumes a parked owner wherever it would cancel that token, and
/// the resumed connection gets a new one, already cancelled if it lost the
/// session meanwhile ([`SessionState::take_parked`]).
struct Dormant {
    broker: Arc<Broker>,
    cell: Arc<SessionCell>,
    /// The context's home; its shutdown token is the listener's
    /// (`Respawn::shutdown`).
    home: Home,
    username: Option<Arc<str>>,
    will: Option<Box<Will>>,
    aliases: Option<Box<Aliases>>,
    throttle: Option<Box<Throttle>>,
    owner_id: u64,
    ka_heard: u64,
    ka_due: u64,
    ka_ms: u32,
    max_out_packet: u32,
    out_window: u32,
    out_alias_max: u16,
    protocol: Protocol,
    peer: IpAddr,
    // Not kept: `max_in_packet` and `acl`, the broker's for every
    // connection, taken from it again on waking.
}

/// The shared epoll: parked sockets, each under a slab key that names its
/// session.
struct Sleepers {
    registry: Registry,
    slots: Mutex<Slots>,
}

/// The slab of parked sessions. Each slot counts its tenants, and an epoll
/// token carries the tenant's number beside the key: an event read just
/// before its connection was woken another way (and the key reused) finds
/// a newer tenant and is ignored, instead of waking a connection that has
/// nothing to do (which would then stay awake for a whole threshold).
struct Slots<T = SessionCell> {
    cells: Vec<Slot<T>>,
    free: Vec<usize>,
}

struct Slot<T> {
    cell: Option<Weak<T>>,
    tenant: u32,
}

impl<T> Default for Slots<T> {
    fn default() -> Self {
        Slots {
            cells: Vec::new(),
            free: Vec::new(),
        }
    }
}

impl<T> Slots<T> {
    /// Takes a slot for `cell`: its key and its epoll token.
    fn insert(&mut self, cell: Weak<T>) -> (usize, Token) {
        let key = match self.free.pop() {
            Some(k) => k,
            None => {
                self.cells.push(Slot {
                    cell: None,
                    tenant: 0,
                });
                self.cells.len() - 1
            }
        };
        let slot = &mut self.cells[key];
        slot.tenant = slot.tenant.wrapping_add(1);
        slot.cell = Some(cell);
        (key, Token(key | (slot.tenant as usize) << 32))
    }

    /// The session an event's token names, if it still parks there.
    fn get(&self, token: Token) -> Option<Arc<T>> {
        let slot = self.cells.get(token.0 & 0xFFFF_FFFF)?;
        if slot.tenant as usize != token.0 >> 32 {
            return None;
        }
        slot.cell.as_ref()?.upgrade()
    }

    fn remove(&mut self, key: usize) {
        if let Some(slot) = self.cells.get_mut(key) {
            if slot.cell.take().is_some() {
                self.free.push(key);
            }
        }
    }
}

/// Started by the first connection that parks.
static SLEEPERS: OnceLock<&'static Sleepers> = OnceLock::new();

fn sleepers() -> &'static Sleepers {
    SLEEPERS.get_or_init(|| {
        let poll = Poll::new().expect("create the hibernation epoll");
        let registry = poll.registry().try_clone().expect("clone the registry");
        let sleepers: &'static Sleepers = Box::leak(Box::new(Sleepers {
            registry,
            slots: Mutex::default(),
        }));
        // A plain thread, like the keep-alive timer: connections of every
        // runtime share it.
        std::thread::Builder::new()
            .name("tern-hibernate".into())
            .spawn(move || watch(poll, sleepers))
            .expect("spawn the hibernation thread");
        sleepers
    })
}

/// The epoll thread: wakes the connections whose sockets became readable
/// (or closed). Events of a slot's earlier tenant are dropped
/// ([`Slots::get`]).
fn watch(mut poll: Poll, sleepers: &Sleepers) {
    let mut events = Events::with_capacity(256);
    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() != std::io::ErrorKind::Interrupted {
                tracing::error!(error = %e, "hibernation epoll failed");
                return;
            }
            continue;
        }
        let cells: Vec<Arc<SessionCell>> = {
            let slots = sleepers.slots.lock();
            events.iter().filter_map(|e| slots.get(e.token())).collect()
        };
        for cell in cells {
            cell.resume_parked();
        }
    }
}

impl Sleepers {
    fn insert(&self, fd: i32, cell: &Arc<SessionCell>) -> std::io::Result<u32> {
        let (key, token) = self.slots.lock().insert(Arc::downgrade(cell));
        let Ok(key32) = u32::try_from(key) else {
            self.remove(key, None);
            return Err(std::io::Error::other("too many hibernated connections"));
        };
        let registered = self
            .registry
            .register(&mut SourceFd(&fd), token, Interest::READABLE);
        if let Err(e) = registered {
            self.remove(key, None);
            return Err(e);
        }
        Ok(key32)
    }

    fn remove(&self, key: usize, fd: Option<i32>) {
        if let Some(fd) = fd {
            let _ = self.registry.deregister(&mut SourceFd(&fd));
        }
        self.slots.lock().remove(key);
    }
}

/// Wakes the hibernated connections of the listener that `respawn`
/// serves, for its shutdown. Those of other listeners (other nodes in the
/// same process, as in tests) stay parked: woken with nothing to do, a
/// connection would stay awake for a whole hibernation threshold.
pub(crate) fn wake_all(respawn: &Arc<Respawn>) {
    let Some(sleepers) = SLEEPERS.get() else {
        return;
    };
    let cells: Vec<Arc<SessionCell>> = {
        let slots = sleepers.slots.lock();
        slots
            .cells
            .iter()
            .filter_map(|s| s.cell.as_ref()?.upgrade())
            .collect()
    };
    for cell in cells {
        cell.resume_parked_if(|p| Arc::ptr_eq(&p.conn.home.respawn, respawn));
    }
}

impl SessionCell {
    /// Wakes the session's connection: the live one's `notify`, or a
    /// hibernated one back into a task.
    pub(crate) fn wake(&self) {
        self.notify.notify_one();
        if self.parked.load(Ordering::SeqCst) {
            self.resume_parked();
        }
    }

    /// Brings the session's hibernated connection, if any, back to life.
    pub(crate) fn resume_parked(&self) {
        self.resume_parked_if(|_| true);
    }

    /// [`resume_parked`](Self::resume_parked), if the parked connection
    /// passes `which`.
    fn resume_parked_if(&self, which: impl FnOnce(&Parked) -> bool) {
        let parked = {
            let mut st = self.state.lock();
            match st.parked.as_deref().is_some_and(which) {
                true => st.take_parked(self),
                false => None,
            }
        };
        if let Some((p, stop)) = parked {
            (*p).resume(stop);
        }
    }
}

impl SessionState {
    /// Takes the hibernated connection out (the caller resumes it), with
    /// the token it will stop on: its owner's kick token again while it
    /// owns the session, or one already cancelled when it was taken over
    /// or disconnected by the admin API meanwhile. The shutdown token is
    /// its parent, so a node shutting down cancels it as well.
    pub(crate) fn take_parked(
        &mut self,
        cell: &SessionCell,
    ) -> Option<(Box<Parked>, CancellationToken)> {
        let p = self.parked.take()?;
        cell.parked.store(false, Ordering::SeqCst);
        let stop = p.conn.home.respawn.shutdown.child_token();
        let kicked_by_admin = self.admin_kick.map(|k| k.get()) == Some(p.conn.owner_id);
        match &mut self.owner {
            Some(o) if o.id.get() == p.conn.owner_id && !kicked_by_admin => {
                o.kick = Some(stop.clone());
            }
            _ => stop.cancel(),
        }
        Some((p, stop))
    }

    /// Resumes the hibernated connection, if any: for a takeover or an
    /// admin disconnect, right after its owner's token was cancelled (or
    /// taken away).
    pub(crate) fn resume_parked(&mut self, cell: &SessionCell) {
        if let Some((p, stop)) = self.take_parked(cell) {
            (*p).resume(stop);
        }
    }
}

/// Tries to hibernate `conn`; gives it back if it cannot (not a plain-TCP
/// connection, or something for it arrived meanwhile).
// The connection moves through once per attempt; boxing it would cost an
// allocation for nothing.
#[allow(clippy::result_large_err)]
pub(super) fn park<S: Send + 'static>(conn: Conn<S>) -> Result<(), Conn<S>> {
    if conn.ctx.home.is_none() {
        return Err(conn);
    }
    // Only the plain-TCP path gets a `Home`, so `S` is a `TcpStream`.
    let any: Box<dyn Any + Send> = Box::new(conn);
    let conn = match any.downcast::<Conn<TcpStream>>() {
        Ok(c) => *c,
        Err(any) => return Err(*any.downcast::<Conn<S>>().expect("same type")),
    };
    match park_tcp(conn) {
        Ok(()) => Ok(()),
        Err(conn) => {
            let any: Box<dyn Any + Send> = Box::new(conn);
            Err(*any.downcast::<Conn<S>>().expect("S is TcpStream"))
        }
    }
}

#[allow(clippy::result_large_err)]
fn park_tcp(conn: Conn<TcpStream>) -> Result<(), Conn<TcpStream>> {
    let (io, conn, stop) = conn.into_dormant()?;
    let io = match io.into_std() {
        Ok(io) => io,
        Err(e) => {
            // The socket is gone with its registration: end as a drop.
            tracing::warn!(error = %e, "cannot hibernate a connection");
            conn.wake((), stop).lost();
            return Ok(());
        }
    };
    let fd = io.as_raw_fd();
    let sleepers = sleepers();
    let back = |conn: Dormant, io: std::net::TcpStream, stop| {
        let io = TcpStream::from_std(io).expect("back into the reactor it came from");
        conn.wake(io, stop)
    };
    let key = match sleepers.insert(fd, &conn.cell) {
        Ok(k) => k,
        Err(e) => {
            tracing::debug!(error = %e, "cannot register a hibernating socket");
            return Err(back(conn, io, stop));
        }
    };
    let cell = conn.cell.clone();
    let mut st = cell.state.lock();
    let mut probe = [0u8; 1];
    let quiet = matches!(io.peek(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
    let ka_later = conn.ka_ms == 0 || super::keepalive::now_ms() < conn.ka_due;
    let owned = st
        .owner
        .as_ref()
        .is_some_and(|o| o.id.get() == conn.owner_id);
    if !quiet || !ka_later || !owned || stop.is_cancelled() || st.queue_len() > 0 {
        drop(st);
        sleepers.remove(key as usize, Some(fd));
        return Err(back(conn, io, stop));
    }
    // Every canceller of this token holds the session's lock, as we do:
    // from here on they find the connection parked and resume it instead.
    if let Some(o) = st.owner.as_mut() {
        o.kick = None;
    }
    drop(stop);
    let tracked = conn.home.respawn.tracker.token();
    conn.broker.metrics().connections_hibernated.inc();
    st.parked = Some(Box::new(Parked {
        io,
        key,
        conn,
        _tracked: tracked,
    }));
    cell.parked.store(true, Ordering::SeqCst);
    Ok(())
}

impl Parked {
    /// Back into a connection task, in the listener's runtime, stopping on
    /// `stop` (see [`SessionState::take_parked`]).
    fn resume(self, stop: CancellationToken) {
        let Parked {
            io,
            key,
            conn,
            _tracked,
        } = self;
        sleepers().remove(key as usize, Some(io.as_raw_fd()));
        conn.broker.metrics().connections_hibernated.dec();
        let respawn = conn.home.respawn.clone();
        // The socket joins the runtime's reactor here, not in the task, so
        // that the task's future holds the connection once.
        let _runtime = respawn.handle.enter();
        let io = match TcpStream::from_std(io) {
            Ok(io) => io,
            Err(e) => {
                tracing::warn!(error = %e, "cannot resume a hibernated connection");
                conn.wake((), stop).lost();
                return;
            }
        };
        let serve = Tracked {
            _tracked,
            inner: super::life(super::Slot::Live(conn.wake(io, stop))),
        };
        respawn
            .handle
            .spawn(crate::server::Task::new(&respawn.kill, serve));
    }
}

pin_project_lite::pin_project! {
    /// A future that keeps its listener's tracker counting it.
    struct Tracked<F> {
        _tracked: TaskTrackerToken,
        #[pin]
        inner: F,
    }
}

impl<F: Future<Output = ()>> Future for Tracked<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> TaskPoll<()> {
        self.project().inner.poll(cx)
    }
}

impl<S> Conn<S> {
    /// What outlives hibernation, the stream and the stop token; the rest
    /// (empty buffers, ack pipeline, idle-check state, the shutdown token
    /// that `Respawn` holds too) is dropped. A connection without a home
    /// cannot hibernate and comes back as it was.
    #[allow(clippy::result_large_err)]
    fn into_dormant(mut self) -> Result<(S, Dormant, CancellationToken), Conn<S>> {
        let Some(home) = self.ctx.home.take() else {
            return Err(self);
        };
        let conn = Dormant {
            broker: self.broker,
            cell: self.cell,
            home,
            username: self.username,
            will: self.will,
            aliases: self.aliases,
            throttle: self.throttle,
            owner_id: self.owner_id,
            ka_heard: self.ka_heard,
            ka_due: self.ka_due,
            ka_ms: self.ka_ms,
            max_out_packet: self.max_out_packet,
            out_window: self.out_window,
            out_alias_max: self.out_alias_max,
            protocol: self.protocol,
            peer: self.peer,
        };
        Ok((self.io, conn, self.stop))
    }
}

impl Dormant {
    /// A connection again, over `io`, stopping on `stop`.
    fn wake<T>(self, io: T, stop: CancellationToken) -> Conn<T> {
        Conn {
            io,
            rbuf: BytesMut::new(),
            wbuf: BytesMut::new(),
            protocol: self.protocol,
            client_id: self.cell.client_id.clone(),
            username: self.username,
            acl: self.broker.authz().restricts(),
            peer: self.peer,
            cell: self.cell,
            owner_id: self.owner_id,
            will: self.will,
            max_in_packet: self.broker.config().mqtt.max_packet_size,
            max_out_packet: self.max_out_packet,
            out_window: self.out_window,
            out_alias_max: self.out_alias_max,
            aliases: self.aliases,
            read_hint: READ_MIN,
            ctx: Box::new(Ctx {
                shutdown: self.home.respawn.shutdown.clone(),
                home: Some(self.home),
            }),
            stop,
            ka_ms: self.ka_ms,
            ka_heard: self.ka_heard,
            ka_due: self.ka_due,
            trim_due: 0,
            busy: false,
            quiet_rounds: 0,
            throttle: self.throttle,
            acks: Acks::default(),
            broker: self.broker,
        }
    }
}

impl<S> Conn<S> {
    /// The socket was lost while (un)parking: the session is detached as
    /// after a dropped connection (will included).
    fn lost(mut self) {
        let will = self.will.take().map(|w| *w);
        self.broker.detach(
            &self.cell,
            self.owner_id,
            crate::broker::CloseKind::Abnormal,
            will,
        );
        self.broker.metrics().connections.dec();
    }

    /// Whether this idle connection may hibernate now: enabled, plain TCP,
    /// quiet for the whole threshold (or `fresh`: just connected, with
    /// nothing read since CONNACK), and holding nothing.
    pub(super) fn may_park(&mut self, reading: bool, timers: bool, fresh: bool) -> bool {
        let after = self.broker.config().limits.hibernate_after_ms;
        if self.ctx.home.is_none() || after == 0 {
            return false;
        }
        // Idle checks come every min(threshold, trim period).
        let rounds = after.div_ceil(after.min(super::TRIM_MS));
        let ok = (fresh || u64::from(self.quiet_rounds) >= rounds)
            && reading
            && !timers
            && self.rbuf.is_empty()
            && self.wbuf.is_empty()
            && !self.acks.waiting()
            && self.acks.is_empty();
        if ok {
            self.rbuf = bytes::BytesMut::new();
            self.wbuf = bytes::BytesMut::new();
            self.read_hint = READ_MIN;
            self.quiet_rounds = 0;
        }
        ok
    }
}

#[cfg(test)]
mod size_guard {
    /// What an idle connection costs once hibernated, besides its session:
    /// this record (boxed) and a slot in the shared epoll's table.
    #[test]
    fn parked_record_stays_small() {
        let size = std::mem::size_of::<super::Parked>();
        println!("Parked: {size} bytes");
        // 136 B fill a 144-byte malloc chunk.
        assert!(size <= 136, "the parked record grew to {size} bytes");
    }
}

#[cfg(test)]
mod slots {
    use super::Slots;
    use std::sync::Arc;

    /// An event read for a connection that was then woken another way
    /// must not wake the next connection parked under the same key.
    #[test]
    fn a_stale_token_does_not_reach_the_next_tenant() {
        let mut slots = Slots::<&str>::default();
        let a = Arc::new("a");
        let b = Arc::new("b");
        let (key_a, token_a) = slots.insert(Arc::downgrade(&a));
        assert_eq!(slots.get(token_a).as_deref(), Some(&"a"));
        slots.remove(key_a);
        assert!(slots.get(token_a).is_none(), "a woke after it left");
        let (key_b, token_b) = slots.insert(Arc::downgrade(&b));
        assert_eq!(key_a, key_b, "the key is reused");
        assert!(slots.get(token_a).is_none(), "a's event woke b");
        assert_eq!(slots.get(token_b).as_deref(), Some(&"b"));
        // A second removal of a key must not free it twice.
        slots.remove(key_b);
        slots.remove(key_b);
        let (k1, _) = slots.insert(Arc::downgrade(&a));
        let (k2, _) = slots.insert(Arc::downgrade(&b));
        assert_ne!(k1, k2);
    }
}
