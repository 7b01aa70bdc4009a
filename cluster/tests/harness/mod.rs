//! In-memory cluster scenarios: real brokers (`Server` on port 0 with real
//! MQTT clients) joined by `tern-cluster` over a [`MemNetwork`] that can
//! cut, heal and kill. Topology changes are [`Step`]s; every wait is a
//! condition with a deadline.

#![allow(dead_code)]

use anyhow::{anyhow, bail, Result};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tern_broker::config::Config;
use tern_broker::server::Server;
use tern_cluster::{Cluster, ClusterOptions, MemNetwork, StaticPeers};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Default deadline of a wait.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// One topology change.
pub enum Step<'a> {
    /// Start a node that knows every node started so far.
    Add(&'a str),
    /// Cut the link between two nodes.
    Cut(&'a str, &'a str),
    /// Heal it.
    Heal(&'a str, &'a str),
    /// Kill a node (no leave: peers see it vanish).
    Kill(&'a str),
    /// Start a killed node again, with a new incarnation.
    Restart(&'a str),
}

/// A running node.
pub struct Node {
    pub server: Server,
    pub cluster: Cluster,
    pub peers: StaticPeers,
}

impl Node {
    pub fn mqtt(&self) -> SocketAddr {
        self.server.tcp_addr().expect("tcp listener")
    }

    /// Messages this node has forwarded to other nodes (one per target).
    pub fn forwarded(&self) -> u64 {
        self.server.metrics().cluster.forwarded_messages.get()
    }
}

/// Options applied to every node.
#[derive(Clone)]
pub struct Settings {
    pub secret: String,
    pub route_grace_secs: u64,
    pub tls: Option<tern_broker::config::ClusterTlsConfig>,
    /// Refuse CONNECT, PUBLISH and SUBSCRIBE while partitioned.
    pub strict: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            secret: "s3cret".into(),
            route_grace_secs: 60,
            tls: None,
            strict: false,
        }
    }
}

/// The cluster under test.
pub struct Harness {
    pub net: MemNetwork,
    pub nodes: HashMap<String, Node>,
    pub order: Vec<String>,
    pub settings: Settings,
    pub per_node: HashMap<String, Settings>,
}

impl Harness {
    pub fn new() -> Harness {
        Harness::with(Settings::default())
    }

    pub fn with(settings: Settings) -> Harness {
        Harness {
            net: MemNetwork::new(),
            nodes: HashMap::new(),
            order: Vec::new(),
            settings,
            per_node: HashMap::new(),
        }
    }

    pub fn node(&self, name: &str) -> &Node {
        &self.nodes[name]
    }

    async fn start(&mut self, name: &str) -> Result<()> {
        let s = self
            .per_node
            .get(name)
            .cloned()
            .unwrap_or_else(|| self.settings.clone());
        let mut config = Config::default();
        config.node.name = name.into();
        config.listeners.tcp.bind = "127.0.0.1:0".parse()?;
        config.admin.enabled = false;
        config.shutdown.grace_period_secs = 1;
        let c = &mut config.cluster;
        c.enabled = true;
        c.secret = s.secret.clone();
        c.heartbeat_ms = 100;
        c.peer_timeout_ms = 800;
        c.route_grace_secs = s.route_grace_secs;
        c.allow_register_during_netsplit = !s.strict;
        c.allow_publish_during_netsplit = !s.strict;
        c.allow_subscribe_during_netsplit = !s.strict;
        if let Some(tls) = s.tls {
            c.tls = tls;
        }
        let cluster = Cluster::new(
            ClusterOptions::from_config(&config),
            Arc::new(self.net.transport(name)),
        )?;
        let server = Server::start_with(config, |b| {
            cluster.attach(b);
        })
        .await?;
        if !self.order.iter().any(|n| n == name) {
            self.order.push(name.into());
        }
        // Every node is configured with every other (a static peer list).
        let all =
            |me: &str| -> Vec<String> { self.order.iter().filter(|n| *n != me).cloned().collect() };
        let peers = StaticPeers::new(all(name));
        cluster.start(Some(name), Arc::new(peers.clone())).await?;
        for (other, node) in &self.nodes {
            node.peers.set(all(other));
        }
        self.nodes.insert(
            name.into(),
            Node {
                server,
                cluster,
                peers,
            },
        );
        Ok(())
    }

    pub async fn step(&mut self, step: Step<'_>) -> Result<()> {
        match step {
            Step::Add(n) | Step::Restart(n) => self.start(n).await?,
            Step::Cut(a, b) => self.net.cut(a, b),
            Step::Heal(a, b) => self.net.heal(a, b),
            Step::Kill(n) => {
                self.net.kill(n);
                if let Some(node) = self.nodes.remove(n) {
                    node.cluster.shutdown().await;
                    node.server.shutdown().await?;
                }
            }
        }
        Ok(())
    }

    pub async fn run(&mut self, steps: Vec<Step<'_>>) -> Result<()> {
        for s in steps {
            self.step(s).await?;
        }
        Ok(())
    }

    /// Waits until every pair of live nodes sees each other up.
    pub async fn converged(&self) -> Result<()> {
        within("full mesh up", DEADLINE, || {
            self.nodes.iter().all(|(a, na)| {
                self.nodes
                    .keys()
                    .filter(|b| *b != a)
                    .all(|b| na.cluster.is_up(b))
            })
        })
        .await
    }

    /// Waits until `at` holds exactly `routes` for `owner`.
    pub async fn routes(&self, at: &str, owner: &str, routes: &[&str]) -> Result<()> {
        let c = &self.node(at).cluster;
        let mut want: Vec<String> = routes.iter().map(|s| s.to_string()).collect();
        want.sort();
        within(
            &format!("{at} holds {owner}'s routes {routes:?}"),
            DEADLINE,
            || c.routes_of(owner) == want,
        )
        .await
    }
}

/// Polls `cond` until it holds or `deadline` passes.
pub async fn within(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) -> Result<()> {
    let end = Instant::now() + deadline;
    loop {
        if cond() {
            return Ok(());
        }
        if Instant::now() >= end {
            bail!("not within {deadline:?}: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An MQTT client whose events arrive on a channel.
pub struct Mqtt {
    pub client: AsyncClient,
    pub events: mpsc::UnboundedReceiver<Packet>,
    pub session_present: bool,
}

impl Mqtt {
    /// Connects `id` to `addr`, waits for CONNACK.
    pub async fn connect(addr: SocketAddr, id: &str, clean: bool) -> Result<Mqtt> {
        let mut opts = MqttOptions::new(id, addr.ip().to_string(), addr.port());
        opts.set_clean_session(clean);
        opts.set_keep_alive(Duration::from_secs(30));
        // Up to the broker's default maximum packet (1 MiB) both ways.
        opts.set_max_packet_size(2 << 20, 2 << 20);
        let (client, eventloop) = AsyncClient::new(opts, 100);
        let (tx, mut events) = mpsc::unbounded_channel();
        tokio::spawn(pump(eventloop, tx));
        let ack = recv(&mut events, "CONNACK", |p| matches!(p, Packet::ConnAck(_))).await?;
        let Packet::ConnAck(ack) = ack else {
            bail!("not a CONNACK")
        };
        Ok(Mqtt {
            client,
            events,
            session_present: ack.session_present,
        })
    }

    pub async fn subscribe(&mut self, filter: &str, qos: QoS) -> Result<()> {
        self.client.subscribe(filter, qos).await?;
        recv(&mut self.events, "SUBACK", |p| {
            matches!(p, Packet::SubAck(_))
        })
        .await?;
        Ok(())
    }

    /// Publishes and waits for PUBACK (QoS 1), PUBCOMP (QoS 2) or nothing.
    pub async fn publish(
        &mut self,
        topic: &str,
        qos: QoS,
        retain: bool,
        payload: &str,
    ) -> Result<()> {
        self.client
            .publish(topic, qos, retain, payload.as_bytes().to_vec())
            .await?;
        match qos {
            QoS::AtMostOnce => Ok(()),
            QoS::AtLeastOnce => recv(&mut self.events, "PUBACK", |p| {
                matches!(p, Packet::PubAck(_))
            })
            .await
            .map(drop),
            QoS::ExactlyOnce => recv(&mut self.events, "PUBCOMP", |p| {
                matches!(p, Packet::PubComp(_))
            })
            .await
            .map(drop),
        }
    }

    /// The next PUBLISH received.
    pub async fn message(&mut self) -> Result<rumqttc::Publish> {
        match recv(&mut self.events, "PUBLISH", |p| {
            matches!(p, Packet::Publish(_))
        })
        .await?
        {
            Packet::Publish(p) => Ok(p),
            _ => Err(anyhow!("not a PUBLISH")),
        }
    }

    /// Waits until the connection is closed by the broker.
    pub async fn closed(&mut self) -> Result<()> {
        recv(&mut self.events, "close", |p| {
            matches!(p, Packet::Disconnect)
        })
        .await
        .map(drop)
    }

    pub async fn disconnect(self) -> Result<()> {
        self.client.disconnect().await?;
        Ok(())
    }
}

async fn pump(mut eventloop: EventLoop, tx: mpsc::UnboundedSender<Packet>) {
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(p)) => {
                if tx.send(p).is_err() {
                    return;
                }
            }
            Ok(Event::Outgoing(_)) => {}
            Err(_) => {
                // Report the close as a DISCONNECT and stop (no reconnect).
                let _ = tx.send(Packet::Disconnect);
                return;
            }
        }
    }
}

async fn recv(
    events: &mut mpsc::UnboundedReceiver<Packet>,
    what: &str,
    want: impl Fn(&Packet) -> bool,
) -> Result<Packet> {
    let end = Instant::now() + DEADLINE;
    loop {
        let p = tokio::time::timeout_at(end, events.recv())
            .await
            .map_err(|_| anyhow!("no {what} within {DEADLINE:?}"))?
            .ok_or_else(|| anyhow!("connection gone while waiting for {what}"))?;
        if want(&p) {
            return Ok(p);
        }
    }
}
