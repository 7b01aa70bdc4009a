//! The running node: client listeners (TCP, TLS, WebSocket, WebSocket
//! over TLS; each optionally behind a PROXY protocol header), the admin HTTP listener
//! and the shutdown tree.
//!
//! One [`CancellationToken`] is the root of shutdown: accept loops and the
//! admin server stop on it, and every connection holds a child token. A
//! second, internal token drops whatever is left when the grace period ends.

mod listener;

use crate::admin::{self, AdminState, Health, Readiness};
use crate::broker::Broker;
use crate::config::{Config, ConfigError};
use crate::connection::{self, ConnInfo, ListenerKind};
use crate::metrics::Metrics;
use crate::tls::{self, TlsError};
pub(crate) use listener::Task;
use listener::{Edge, Handler, Listener};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::task::{JoinError, JoinHandle};
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

/// Why the server could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The TLS listener's certificates or key are unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A password or ACL file is unusable.
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
    /// A listener could not bind its address.
    #[error("cannot bind the {listener} listener to {addr}")]
    Bind {
        /// "tcp", "tls", "ws", "wss" or "admin".
        listener: &'static str,
        /// The configured address.
        addr: SocketAddr,
        /// The bind failure.
        #[source]
        source: std::io::Error,
    },
    /// The data directory could not be opened or read: the node refuses to
    /// start rather than start without the state it had.
    #[error("cannot open the durable store (storage.dir)")]
    Store(#[from] crate::store::StoreError),
    /// A listener task panicked.
    #[error("the {task} task failed")]
    Task {
        /// Which task.
        task: &'static str,
        /// The panic.
        #[source]
        source: JoinError,
    },
}

/// Hands accepted streams to [`connection::serve`].
#[derive(Clone)]
struct BrokerHandler(Arc<Broker>);

impl Handler for BrokerHandler {
    fn handle<S>(
        &self,
        stream: S,
        info: ConnInfo,
        shutdown: CancellationToken,
    ) -> impl Future<Output = ()> + Send + use<S>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        connection::serve(stream, info, self.0.clone(), shutdown)
    }

    fn handle_tcp(
        &self,
        stream: tokio::net::TcpStream,
        info: ConnInfo,
        shutdown: CancellationToken,
        home: connection::Home,
    ) -> impl Future<Output = ()> + Send + use<> {
        connection::serve_tcp(stream, info, self.0.clone(), shutdown, home)
    }
}

/// A running broker node. Dropping it cancels the shutdown token without
/// waiting; call [`shutdown`](Server::shutdown) for a graceful stop.
pub struct Server {
    config: Arc<Config>,
    broker: Arc<Broker>,
    metrics: Metrics,
    shutdown: CancellationToken,
    kill: CancellationToken,
    /// Stops the admin listener, last, so `/ready` answers during a drain.
    admin_stop: CancellationToken,
    /// When the drain must be over; set when it starts.
    deadline: Option<tokio::time::Instant>,
    /// The first failure of the client drain.
    failure: Option<ServerError>,
    readiness: Readiness,
    connections: TaskTracker,
    accept_loops: Vec<(&'static str, JoinHandle<()>)>,
    admin: Option<JoinHandle<()>>,
    tcp_addr: Option<SocketAddr>,
    tls_addr: Option<SocketAddr>,
    ws_addr: Option<SocketAddr>,
    wss_addr: Option<SocketAddr>,
    admin_addr: Option<SocketAddr>,
    _cancel_on_drop: DropGuard,
}

async fn bind(listener: &'static str, addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind {
            listener,
            addr,
            source,
        })
}

/// The bound address of an optional socket.
fn local_addr(
    name: &'static str,
    socket: &Option<TcpListener>,
    configured: SocketAddr,
) -> Result<Option<SocketAddr>, ServerError> {
    socket
        .as_ref()
        .map(|s| {
            s.local_addr().map_err(|source| ServerError::Bind {
                listener: name,
                addr: configured,
                source,
            })
        })
        .transpose()
}

/// The enabled client listeners with their bound addresses, for the admin API.
fn listener_entries(
    config: &Config,
    bound: [(&'static str, Option<SocketAddr>); 4],
    health: &Health,
) -> admin::Listeners {
    let l = &config.listeners;
    let entries = bound
        .into_iter()
        .filter_map(|(kind, addr)| {
            let (max_connections, proxy_protocol) = match kind {
                "tcp" => (l.tcp.max_connections, l.tcp.proxy_protocol),
                "tls" => (l.tls.max_connections, l.tls.proxy_protocol),
                "ws" => (l.ws.max_connections, l.ws.proxy_protocol),
                _ => (l.wss.max_connections, l.wss.proxy_protocol),
            };
            Some(admin::ListenerEntry {
                kind,
                bind: addr?,
                max_connections,
                proxy_protocol,
            })
        })
        .collect();
    admin::Listeners {
        entries,
        health: health.clone(),
    }
}

impl Server {
    /// Validates config, binds every enabled listener (port 0 allowed) and
    /// the admin listener, spawns accept loops.
    pub async fn start(config: Config) -> Result<Server, ServerError> {
        Server::start_with(config, |_| {}).await
    }

    /// Like [`start`](Server::start), calling `attach` with the broker
    /// before any client is accepted: the place to plug in a cluster
    /// (`Broker::set_remote`).
    pub async fn start_with(
        config: Config,
        attach: impl FnOnce(&Arc<Broker>),
    ) -> Result<Server, ServerError> {
        Server::start_full(config, Readiness::new(), attach).await
    }

    /// Like [`start_with`](Server::start_with), with the readiness latches
    /// `GET /ready` reads (the caller registers the cluster's and
    /// discovery's before the admin listener answers).
    pub async fn start_full(
        config: Config,
        readiness: Readiness,
        attach: impl FnOnce(&Arc<Broker>),
    ) -> Result<Server, ServerError> {
        Server::start_logged(config, readiness, None, attach).await
    }

    /// Like [`start_full`](Server::start_full), with the process's log
    /// filter, which `PUT /log-level` changes.
    pub async fn start_logged(
        config: Config,
        readiness: Readiness,
        log: Option<Arc<dyn admin::LogControl>>,
        attach: impl FnOnce(&Arc<Broker>),
    ) -> Result<Server, ServerError> {
        config.validate()?;
        // Password and ACL files are read before anything binds, too.
        let metrics = Metrics::for_node(&config.node_name());
        let (authn, authz) = crate::auth::from_config(&config.auth, &metrics)?;
        let store = crate::store::open(&config.storage, &config.node_name())?;
        let (tcp_cfg, tls_cfg) = (&config.listeners.tcp, &config.listeners.tls);
        let (ws_cfg, wss_cfg) = (&config.listeners.ws, &config.listeners.wss);
        let acceptor = match tls_cfg.enabled {
            true => Some(tls::acceptor(tls_cfg)?),
            false => None,
        };
        let wss_acceptor = match wss_cfg.enabled {
            true => Some(tls::acceptor(&wss_cfg.tls())?),
            false => None,
        };
        // Bind everything before spawning anything, so a failure leaves
        // nothing running.
        let tcp = match tcp_cfg.enabled {
            true => Some(bind("tcp", tcp_cfg.bind).await?),
            false => None,
        };
        let tls = match tls_cfg.enabled {
            true => Some(bind("tls", tls_cfg.bind).await?),
            false => None,
        };
        let ws = match ws_cfg.enabled {
            true => Some(bind("ws", ws_cfg.bind).await?),
            false => None,
        };
        let wss = match wss_cfg.enabled {
            true => Some(bind("wss", wss_cfg.bind).await?),
            false => None,
        };
        let admin_socket = match config.admin.enabled {
            true => Some(bind("admin", config.admin.bind).await?),
            false => None,
        };
        let tcp_addr = local_addr("tcp", &tcp, tcp_cfg.bind)?;
        let tls_addr = local_addr("tls", &tls, tls_cfg.bind)?;
        let ws_addr = local_addr("ws", &ws, ws_cfg.bind)?;
        let wss_addr = local_addr("wss", &wss, wss_cfg.bind)?;
        let admin_addr = local_addr("admin", &admin_socket, config.admin.bind)?;

        let config = Arc::new(config);
        let broker = match store {
            Some((store, loaded)) => {
                let broker =
                    Broker::with_store(config.clone(), metrics.clone(), authn, authz, store);
                let r = broker.restore(loaded);
                info!(
                    sessions = r.sessions,
                    messages = r.messages,
                    retained = r.retained,
                    expired = r.expired,
                    "durable state restored"
                );
                broker
            }
            None => Broker::with_parts(config.clone(), metrics.clone(), authn, authz),
        };
        attach(&broker);
        let health = Health::default();
        broker.set_listeners(listener_entries(
            &config,
            [
                ("tcp", tcp_addr),
                ("tls", tls_addr),
                ("ws", ws_addr),
                ("wss", wss_addr),
            ],
            &health,
        ));
        let shutdown = CancellationToken::new();
        let kill = CancellationToken::new();
        let admin_stop = CancellationToken::new();
        let connections = TaskTracker::new();
        let limits = &config.limits;
        let edge = |proxy: bool, use_cn: bool, ws_path: Option<&str>| Edge {
            ws_path: ws_path.map(Arc::from),
            ws_max_message: config.mqtt.max_packet_size as usize,
            proxy,
            proxy_use_cn: use_cn,
            proxy_timeout: Duration::from_secs(limits.proxy_header_timeout_secs),
            connect_rate: (limits.max_connect_rate, limits.connect_burst),
        };
        let listener = |kind, tls, max_connections, edge| Listener {
            kind,
            tls,
            max_connections,
            handler: BrokerHandler(broker.clone()),
            metrics: metrics.clone(),
            health: health.clone(),
            tracker: connections.clone(),
            shutdown: shutdown.clone(),
            kill: kill.clone(),
            edge,
        };
        let l = &config.listeners;
        let mut accept_loops = Vec::new();
        if let Some(socket) = tcp {
            let e = edge(
                l.tcp.proxy_protocol,
                l.tcp.proxy_protocol_use_cn_as_username,
                None,
            );
            let l = listener(ListenerKind::Tcp, None, l.tcp.max_connections, e);
            accept_loops.push(("tcp", l.spawn(socket)));
        }
        if let Some(socket) = tls {
            let e = edge(
                l.tls.proxy_protocol,
                l.tls.proxy_protocol_use_cn_as_username,
                None,
            );
            let l = listener(ListenerKind::Tls, acceptor, l.tls.max_connections, e);
            accept_loops.push(("tls", l.spawn(socket)));
        }
        if let Some(socket) = ws {
            let (c, path) = (&l.ws, Some(l.ws.path.as_str()));
            let e = edge(c.proxy_protocol, c.proxy_protocol_use_cn_as_username, path);
            let l = listener(ListenerKind::Ws, None, c.max_connections, e);
            accept_loops.push(("ws", l.spawn(socket)));
        }
        if let Some(socket) = wss {
            let (c, path) = (&l.wss, Some(l.wss.path.as_str()));
            let e = edge(c.proxy_protocol, c.proxy_protocol_use_cn_as_username, path);
            let l = listener(ListenerKind::Wss, wss_acceptor, c.max_connections, e);
            accept_loops.push(("wss", l.spawn(socket)));
        }
        let interval = Duration::from_millis(limits.memory_check_interval_ms);
        let sampler =
            crate::limits::spawn_memory_sampler(metrics.clone(), interval, shutdown.clone());
        accept_loops.push(("memory", sampler));
        let admin = admin_socket.map(|socket| {
            let sampler = admin::status::Sampler::new(metrics.clone());
            broker.set_status_sampler(sampler.clone());
            // Ends with the admin listener, which outlives the drain.
            sampler.spawn(admin_stop.clone());
            let state = AdminState {
                metrics: metrics.clone(),
                health: health.clone(),
                broker: Some(broker.clone()),
                readiness: readiness.clone(),
                status: sampler,
                keys: Arc::new(admin::KeyRing::from_config(&config.admin)),
                log,
            };
            let stop = admin_stop.clone().cancelled_owned();
            tokio::spawn(async move {
                // The peer address decides the loopback-only management
                // without a key (`admin.loopback_without_key`).
                let app = admin::router(state).into_make_service_with_connect_info::<SocketAddr>();
                let serve = axum::serve(socket, app).with_graceful_shutdown(stop);
                if let Err(e) = serve.await {
                    error!(error = %e, "admin listener failed");
                }
            })
        });
        debug!(
            ?tcp_addr,
            ?tls_addr,
            ?ws_addr,
            ?wss_addr,
            ?admin_addr,
            "listeners started"
        );
        Ok(Server {
            _cancel_on_drop: shutdown.clone().drop_guard(),
            admin_stop,
            deadline: None,
            failure: None,
            readiness,
            config,
            broker,
            metrics,
            shutdown,
            kill,
            connections,
            accept_loops,
            admin,
            tcp_addr,
            tls_addr,
            ws_addr,
            wss_addr,
            admin_addr,
        })
    }

    /// Bound address of the TCP listener, if enabled.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    /// Bound address of the TLS listener, if enabled.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    /// Bound address of the WebSocket listener, if enabled.
    pub fn ws_addr(&self) -> Option<SocketAddr> {
        self.ws_addr
    }

    /// Bound address of the WebSocket-over-TLS listener, if enabled.
    pub fn wss_addr(&self) -> Option<SocketAddr> {
        self.wss_addr
    }

    /// Bound address of the admin HTTP listener, if enabled.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The broker state shared by all connections.
    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    /// The node's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The readiness latches `GET /ready` reads.
    pub fn readiness(&self) -> &Readiness {
        &self.readiness
    }

    /// A token cancelled when shutdown begins (also usable to trigger it).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// First half of a graceful shutdown: readiness goes false
    /// (`draining`), accepting stops, every connection's token is cancelled
    /// (5.0 clients get DISCONNECT 0x8B, or 0x9C with
    /// `shutdown.server_reference`) and connection tasks are awaited,
    /// bounded by `shutdown.grace_period_secs` from the first call; then
    /// what is left is aborted. The admin listener keeps answering. Returns
    /// the drain's deadline. Idempotent.
    pub async fn disconnect_clients(&mut self) -> tokio::time::Instant {
        if let Some(deadline) = self.deadline {
            return deadline;
        }
        let grace = Duration::from_secs(self.config.shutdown.grace_period_secs);
        let deadline = tokio::time::Instant::now() + grace;
        self.deadline = Some(deadline);
        self.readiness.hold("draining", "shutting down");
        info!(
            grace_secs = grace.as_secs(),
            connections = self.connections.len(),
            "shutting down"
        );
        self.shutdown.cancel();
        for (task, handle) in std::mem::take(&mut self.accept_loops) {
            if let Err(source) = handle.await {
                error!(task, error = %source, "accept loop failed");
                self.failure
                    .get_or_insert(ServerError::Task { task, source });
            }
        }
        let aborted = listener::drain(&self.connections, &self.kill, deadline).await;
        if aborted > 0 {
            warn!(aborted, "grace period over; aborted remaining connections");
        }
        deadline
    }

    /// Graceful shutdown: [`disconnect_clients`](Server::disconnect_clients)
    /// (if not done yet), then the admin listener, bounded by the same
    /// grace period.
    pub async fn shutdown(mut self) -> Result<(), ServerError> {
        let deadline = self.disconnect_clients().await;
        let mut failure = self.failure.take();
        self.admin_stop.cancel();
        if let Some(mut admin) = self.admin {
            // Idle keep-alive clients must not hold the process open.
            let wait = deadline.max(tokio::time::Instant::now() + Duration::from_secs(1));
            match tokio::time::timeout_at(wait, &mut admin).await {
                Ok(Err(source)) if !source.is_cancelled() => {
                    failure.get_or_insert(ServerError::Task {
                        task: "admin",
                        source,
                    });
                }
                Ok(_) => {}
                Err(_) => admin.abort(),
            }
        }
        info!("shutdown complete");
        failure.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod size_guard {
    use super::*;

    /// The size of a plain-TCP connection task's future, as the listener
    /// spawns it: most of an idle connection's memory.
    async fn task_size(tls: Option<tokio_rustls::TlsAcceptor>, edge: Edge) -> usize {
        let cfg = Arc::new(Config::default());
        let broker = Broker::new(cfg, Metrics::default());
        let listener = Arc::new(Listener {
            kind: crate::connection::ListenerKind::Tcp,
            tls,
            max_connections: 1,
            handler: BrokerHandler(broker),
            metrics: Metrics::default(),
            health: Health::default(),
            tracker: TaskTracker::new(),
            shutdown: CancellationToken::new(),
            kill: CancellationToken::new(),
            edge,
        });
        let socket = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = socket.local_addr().expect("addr");
        let _client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (stream, peer) = socket.accept().await.expect("accept");
        let limit = Arc::new(tokio::sync::Semaphore::new(1));
        let permit = limit.clone().try_acquire_owned().expect("permit");
        let respawn = Arc::new(connection::Respawn {
            handle: tokio::runtime::Handle::current(),
            tracker: listener.tracker.clone(),
            shutdown: listener.shutdown.clone(),
            kill: listener.kill.clone(),
            limit,
        });
        let task = listener.task(stream, peer, permit, &respawn);
        std::mem::size_of_val(&task)
    }

    #[tokio::test]
    async fn plain_tcp_connection_task_stays_small() {
        let size = task_size(None, Edge::default()).await;
        assert!(
            size <= 760,
            "plain-TCP connection task grew to {size} bytes"
        );
    }

    #[tokio::test]
    async fn edge_listeners_do_not_grow_the_plain_task() {
        let plain = task_size(None, Edge::default()).await;
        let ws = Edge {
            ws_path: Some("/mqtt".into()),
            proxy: true,
            ..Edge::default()
        };
        // The same future type: the edge path is boxed behind it.
        assert_eq!(task_size(None, ws).await, plain);
    }
}
