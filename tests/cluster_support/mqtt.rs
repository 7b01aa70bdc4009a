//! rumqttc (3.1.1 and 5.0) clients for the cluster tests.
//!
//! The event loop runs in a task and stops at the first error: a client
//! never reconnects behind the test's back (which would, for example, make
//! a taken-over client steal its session back).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Deadline for anything a broker should do "now" (CONNACK, SUBACK, PUBACK).
pub const NOW: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// MQTT 3.1.1.
    V4,
    /// MQTT 5.0.
    V5,
}

/// Connection options.
#[derive(Debug, Clone)]
pub struct Opts {
    pub proto: Proto,
    /// Clean session (3.1.1) / clean start (5.0).
    pub clean: bool,
    /// 5.0 Session Expiry Interval.
    pub session_expiry: Option<u32>,
    pub keep_alive_secs: u64,
}

impl Opts {
    pub fn v5() -> Opts {
        Opts {
            proto: Proto::V5,
            clean: true,
            session_expiry: None,
            keep_alive_secs: 10,
        }
    }
    pub fn v4() -> Opts {
        Opts {
            proto: Proto::V4,
            ..Opts::v5()
        }
    }
    /// A persistent session: clean = false (and a 5.0 session expiry).
    pub fn persistent(mut self) -> Opts {
        self.clean = false;
        if self.proto == Proto::V5 {
            self.session_expiry = Some(600);
        }
        self
    }
}

/// A received PUBLISH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub dup: bool,
}

impl Msg {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }
}

/// What the event-loop task reports.
#[derive(Debug)]
enum In {
    ConnAck {
        session_present: bool,
    },
    Publish(Msg),
    SubAck(Result<(), String>),
    UnsubAck,
    PubAck,
    PubComp,
    /// The loop ended: the broker's DISCONNECT reason (5.0), and the error.
    Gone {
        reason: Option<u8>,
        error: String,
    },
}

enum Handle {
    V4(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

/// How a connection ended.
#[derive(Debug, Clone)]
pub struct Gone {
    /// The reason code of a 5.0 DISCONNECT from the broker, if one came.
    pub reason: Option<u8>,
    pub error: String,
}

/// A connected client.
pub struct Client {
    pub id: String,
    pub node: String,
    pub proto: Proto,
    /// CONNACK's session present flag.
    pub session_present: bool,
    handle: Handle,
    rx: mpsc::UnboundedReceiver<In>,
    task: JoinHandle<()>,
    inbox: VecDeque<Msg>,
    subacks: VecDeque<Result<(), String>>,
    unsubacks: u64,
    /// PUBACKs received so far.
    pub pubacks: u64,
    /// PUBCOMPs received so far.
    pub pubcomps: u64,
    gone: Option<Gone>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn qos4(q: u8) -> rumqttc::QoS {
    match q {
        0 => rumqttc::QoS::AtMostOnce,
        1 => rumqttc::QoS::AtLeastOnce,
        _ => rumqttc::QoS::ExactlyOnce,
    }
}

fn qos5(q: u8) -> rumqttc::v5::mqttbytes::QoS {
    use rumqttc::v5::mqttbytes::QoS;
    match q {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

fn spawn_v4(mut el: rumqttc::EventLoop, tx: mpsc::UnboundedSender<In>) -> JoinHandle<()> {
    use rumqttc::{Event, Packet, SubscribeReasonCode};
    tokio::spawn(async move {
        loop {
            let ev = match el.poll().await {
                Ok(Event::Incoming(p)) => p,
                Ok(Event::Outgoing(_)) => continue,
                Err(e) => {
                    let _ = tx.send(In::Gone {
                        reason: None,
                        error: e.to_string(),
                    });
                    return;
                }
            };
            let msg = match ev {
                Packet::ConnAck(a) => In::ConnAck {
                    session_present: a.session_present,
                },
                Packet::Publish(p) => In::Publish(Msg {
                    topic: p.topic.clone(),
                    payload: p.payload.to_vec(),
                    qos: p.qos as u8,
                    dup: p.dup,
                }),
                Packet::SubAck(s) => In::SubAck(
                    if s.return_codes
                        .iter()
                        .all(|c| !matches!(c, SubscribeReasonCode::Failure))
                    {
                        Ok(())
                    } else {
                        Err(format!("{:?}", s.return_codes))
                    },
                ),
                Packet::UnsubAck(_) => In::UnsubAck,
                Packet::PubAck(_) => In::PubAck,
                Packet::PubComp(_) => In::PubComp,
                _ => continue,
            };
            if tx.send(msg).is_err() {
                return;
            }
        }
    })
}

fn spawn_v5(mut el: rumqttc::v5::EventLoop, tx: mpsc::UnboundedSender<In>) -> JoinHandle<()> {
    use rumqttc::v5::mqttbytes::v5::{Packet, SubscribeReasonCode};
    use rumqttc::v5::{ConnectionError, Event, StateError};
    tokio::spawn(async move {
        loop {
            let ev = match el.poll().await {
                Ok(Event::Incoming(p)) => p,
                Ok(Event::Outgoing(_)) => continue,
                Err(e) => {
                    let reason = match &e {
                        ConnectionError::MqttState(StateError::ServerDisconnect {
                            reason_code,
                            ..
                        }) => Some(*reason_code as u8),
                        _ => None,
                    };
                    let _ = tx.send(In::Gone {
                        reason,
                        error: e.to_string(),
                    });
                    return;
                }
            };
            let msg = match ev {
                Packet::ConnAck(a) => In::ConnAck {
                    session_present: a.session_present,
                },
                Packet::Publish(p) => In::Publish(Msg {
                    topic: String::from_utf8_lossy(&p.topic).into_owned(),
                    payload: p.payload.to_vec(),
                    qos: p.qos as u8,
                    dup: p.dup,
                }),
                Packet::SubAck(s) => In::SubAck(
                    if s.return_codes
                        .iter()
                        .all(|c| matches!(c, SubscribeReasonCode::Success(_)))
                    {
                        Ok(())
                    } else {
                        Err(format!("{:?}", s.return_codes))
                    },
                ),
                Packet::UnsubAck(_) => In::UnsubAck,
                Packet::PubAck(_) => In::PubAck,
                Packet::PubComp(_) => In::PubComp,
                Packet::Disconnect(d) => In::Gone {
                    reason: Some(d.reason_code as u8),
                    error: "DISCONNECT from broker".into(),
                },
                _ => continue,
            };
            if tx.send(msg).is_err() {
                return;
            }
        }
    })
}

impl Client {
    /// Connects and waits for CONNACK within [`NOW`]; `node` labels messages.
    pub async fn try_connect(
        addr: SocketAddr,
        node: &str,
        id: &str,
        opts: &Opts,
    ) -> Result<Client, String> {
        let (tx, rx) = mpsc::unbounded_channel();
        let (handle, task) = match opts.proto {
            Proto::V4 => {
                let mut o = rumqttc::MqttOptions::new(id, addr.ip().to_string(), addr.port());
                o.set_keep_alive(Duration::from_secs(opts.keep_alive_secs));
                o.set_clean_session(opts.clean);
                o.set_max_packet_size(1 << 20, 1 << 20);
                let (c, el) = rumqttc::AsyncClient::new(o, 2000);
                (Handle::V4(c), spawn_v4(el, tx))
            }
            Proto::V5 => {
                let mut o = rumqttc::v5::MqttOptions::new(id, addr.ip().to_string(), addr.port());
                o.set_keep_alive(Duration::from_secs(opts.keep_alive_secs));
                o.set_clean_start(opts.clean);
                let mut props = rumqttc::v5::mqttbytes::v5::ConnectProperties::new();
                props.session_expiry_interval = opts.session_expiry;
                props.max_packet_size = Some(1 << 20);
                o.set_connect_properties(props);
                let (c, el) = rumqttc::v5::AsyncClient::new(o, 2000);
                (Handle::V5(c), spawn_v5(el, tx))
            }
        };
        let mut c = Client {
            id: id.to_string(),
            node: node.to_string(),
            proto: opts.proto,
            session_present: false,
            handle,
            rx,
            task,
            inbox: VecDeque::new(),
            subacks: VecDeque::new(),
            unsubacks: 0,
            pubacks: 0,
            pubcomps: 0,
            gone: None,
        };
        let deadline = Instant::now() + NOW;
        loop {
            match tokio::time::timeout_at(deadline, c.rx.recv()).await {
                Err(_) => return Err(format!("{id}@{node}: no CONNACK within {NOW:?}")),
                Ok(None) => return Err(format!("{id}@{node}: event loop ended before CONNACK")),
                Ok(Some(In::ConnAck { session_present })) => {
                    c.session_present = session_present;
                    return Ok(c);
                }
                Ok(Some(In::Gone { error, .. })) => {
                    return Err(format!("{id}@{node}: connection failed: {error}"))
                }
                Ok(Some(other)) => c.absorb(other),
            }
        }
    }

    /// [`Client::try_connect`], panicking on failure.
    pub async fn connect(addr: SocketAddr, node: &str, id: &str, opts: &Opts) -> Client {
        match Client::try_connect(addr, node, id, opts).await {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        }
    }

    fn who(&self) -> String {
        format!("{}@{}", self.id, self.node)
    }

    fn absorb(&mut self, ev: In) {
        match ev {
            In::ConnAck { .. } => {}
            In::Publish(m) => self.inbox.push_back(m),
            In::SubAck(r) => self.subacks.push_back(r),
            In::UnsubAck => self.unsubacks += 1,
            In::PubAck => self.pubacks += 1,
            In::PubComp => self.pubcomps += 1,
            In::Gone { reason, error } => {
                if self.gone.is_none() {
                    self.gone = Some(Gone { reason, error });
                }
            }
        }
    }

    /// Takes one event before `deadline`; false on timeout or loop end.
    async fn pump(&mut self, deadline: Instant) -> bool {
        match tokio::time::timeout_at(deadline, self.rx.recv()).await {
            Ok(Some(ev)) => {
                self.absorb(ev);
                true
            }
            _ => false,
        }
    }

    /// Absorbs whatever is already queued, without waiting.
    fn drain_ready(&mut self) {
        while let Ok(ev) = self.rx.try_recv() {
            self.absorb(ev);
        }
    }

    /// Pumps until `cond` holds or `d` passes; returns whether it held.
    async fn pump_until(&mut self, d: Duration, cond: impl Fn(&Client) -> bool) -> bool {
        let deadline = Instant::now() + d;
        loop {
            self.drain_ready();
            if cond(self) {
                return true;
            }
            if !self.pump(deadline).await {
                self.drain_ready();
                return cond(self);
            }
        }
    }

    /// How the connection ended, if it has.
    pub fn gone(&mut self) -> Option<Gone> {
        self.drain_ready();
        self.gone.clone()
    }

    /// Waits up to `d` for the broker to end the connection.
    pub async fn wait_gone(&mut self, d: Duration) -> Option<Gone> {
        self.pump_until(d, |c| c.gone.is_some()).await;
        self.gone.clone()
    }

    /// SUBSCRIBE one filter; panics unless granted within [`NOW`].
    pub async fn subscribe(&mut self, filter: &str, qos: u8) {
        if let Err(e) = self.try_subscribe(filter, qos).await {
            panic!("{}: {e}", self.who());
        }
    }

    pub async fn try_subscribe(&mut self, filter: &str, qos: u8) -> Result<(), String> {
        let sent = match &self.handle {
            Handle::V4(c) => c
                .subscribe(filter, qos4(qos))
                .await
                .map_err(|e| e.to_string()),
            Handle::V5(c) => c
                .subscribe(filter, qos5(qos))
                .await
                .map_err(|e| e.to_string()),
        };
        sent.map_err(|e| format!("subscribe {filter}: {e}"))?;
        if !self.pump_until(NOW, |c| !c.subacks.is_empty()).await {
            return Err(format!(
                "no SUBACK for {filter} within {NOW:?} (connection: {:?})",
                self.gone
            ));
        }
        self.subacks
            .pop_front()
            .expect("suback")
            .map_err(|codes| format!("subscription to {filter} refused: {codes}"))
    }

    /// UNSUBSCRIBE; panics unless UNSUBACKed within [`NOW`].
    pub async fn unsubscribe(&mut self, filter: &str) {
        let before = self.unsubacks;
        let sent = match &self.handle {
            Handle::V4(c) => c.unsubscribe(filter).await.map_err(|e| e.to_string()),
            Handle::V5(c) => c.unsubscribe(filter).await.map_err(|e| e.to_string()),
        };
        sent.unwrap_or_else(|e| panic!("{}: unsubscribe {filter}: {e}", self.who()));
        assert!(
            self.pump_until(NOW, |c| c.unsubacks > before).await,
            "{}: no UNSUBACK for {filter} within {NOW:?}",
            self.who()
        );
    }

    /// Queues a PUBLISH (no wait for its acknowledgement).
    pub async fn publish(&mut self, topic: &str, payload: &[u8], qos: u8) {
        let sent = match &self.handle {
            Handle::V4(c) => c
                .publish(topic, qos4(qos), false, payload.to_vec())
                .await
                .map_err(|e| e.to_string()),
            Handle::V5(c) => c
                .publish(topic, qos5(qos), false, payload.to_vec())
                .await
                .map_err(|e| e.to_string()),
        };
        sent.unwrap_or_else(|e| panic!("{}: publish to {topic}: {e}", self.who()));
    }

    /// Acknowledgements completed so far at `qos` (PUBACKs or PUBCOMPs).
    pub fn acked(&self, qos: u8) -> u64 {
        match qos {
            1 => self.pubacks,
            2 => self.pubcomps,
            _ => 0,
        }
    }

    /// Waits until `n` acknowledgements at `qos` have arrived in total.
    pub async fn wait_acked(&mut self, qos: u8, n: u64, d: Duration) -> Result<(), String> {
        if qos == 0 {
            return Ok(());
        }
        if self.pump_until(d, |c| c.acked(qos) >= n).await {
            Ok(())
        } else {
            Err(format!(
                "{}: {} of {n} QoS {qos} publishes acknowledged within {d:?} (connection: {:?})",
                self.who(),
                self.acked(qos),
                self.gone
            ))
        }
    }

    /// PUBLISH and wait for its PUBACK / PUBCOMP within [`NOW`].
    pub async fn publish_acked(&mut self, topic: &str, payload: &[u8], qos: u8) {
        let target = self.acked(qos) + 1;
        self.publish(topic, payload, qos).await;
        if let Err(e) = self.wait_acked(qos, target, NOW).await {
            panic!("{e}");
        }
    }

    /// Next PUBLISH within `d`.
    pub async fn recv(&mut self, d: Duration) -> Option<Msg> {
        self.pump_until(d, |c| !c.inbox.is_empty()).await;
        self.inbox.pop_front()
    }

    /// Every PUBLISH received so far (without waiting).
    pub fn take_received(&mut self) -> Vec<Msg> {
        self.drain_ready();
        self.inbox.drain(..).collect()
    }

    /// Collects PUBLISHes until `done(all so far)` holds or `d` passes.
    pub async fn collect_until(
        &mut self,
        d: Duration,
        done: impl Fn(&[Msg]) -> bool,
    ) -> (Vec<Msg>, bool) {
        let deadline = Instant::now() + d;
        let mut got = Vec::new();
        loop {
            self.drain_ready();
            got.extend(self.inbox.drain(..));
            if done(&got) {
                return (got, true);
            }
            if !self.pump(deadline).await {
                self.drain_ready();
                got.extend(self.inbox.drain(..));
                let ok = done(&got);
                return (got, ok);
            }
        }
    }

    /// Normal DISCONNECT; waits (bounded) for the loop to end.
    pub async fn disconnect(mut self) {
        let _ = match &self.handle {
            Handle::V4(c) => c.disconnect().await.map_err(|e| e.to_string()),
            Handle::V5(c) => c.disconnect().await.map_err(|e| e.to_string()),
        };
        self.pump_until(Duration::from_secs(3), |c| c.gone.is_some())
            .await;
    }
}
