//! A session's state, as a plain value: subscriptions, the queue of
//! messages waiting to be sent, the outgoing in-flight window, the QoS 2
//! packet ids received and not yet released, the will and the expiry.
//!
//! [`SessionData`] is everything that survives a reconnect and can be
//! exported and imported (to move a session between nodes); the pure
//! methods here are driven by the connection loop and by publishers.

use crate::codec::{Properties, QoS};
use crate::config::DropPolicy;
use crate::trie::{ClientId, SubEntry};
use bytes::Bytes;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch: deadlines are wall-clock so that they
/// mean the same on every node.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

thread_local! {
    /// The clock reading shared by the messages of one input batch; 0
    /// outside [`with_batch_clock`].
    static BATCH_NOW: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Runs `f` (synchronous: a connection decoding what one read brought) with
/// one clock reading for every [`Message::new`] inside it: a reading per
/// message was ~2 % of a publisher-heavy node's CPU.
pub fn with_batch_clock<R>(f: impl FnOnce() -> R) -> R {
    let prev = BATCH_NOW.replace(now_ms());
    let r = f();
    BATCH_NOW.set(prev);
    r
}

/// The batch's clock reading inside [`with_batch_clock`], else [`now_ms`].
fn message_now() -> u64 {
    match BATCH_NOW.get() {
        0 => now_ms(),
        t => t,
    }
}

/// An application message as published, shared by every queue it sits in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Topic name.
    pub topic: Arc<str>,
    /// Payload.
    pub payload: Bytes,
    /// QoS it was published with.
    pub qos: QoS,
    /// RETAIN flag it was published with.
    pub retain: bool,
    /// 5.0 properties passed through to subscribers: payload format,
    /// content type, response topic, correlation data, user properties.
    pub properties: MessageProps,
    /// Absolute expiry (ms since epoch) from the Message Expiry Interval.
    pub expires_at: Option<u64>,
    /// The publishing client, for no-local.
    pub origin: Option<ClientId>,
    /// When it was published on its origin node (ms since epoch): orders
    /// concurrent retained writes across nodes (last writer wins).
    pub timestamp: u64,
    /// The node it was published on; `None` for this node.
    pub origin_node: Option<Arc<str>>,
}

impl Message {
    /// Builds a message from a PUBLISH's parts, keeping only the properties
    /// that travel to subscribers and turning the expiry interval into a deadline.
    pub fn new(
        topic: Arc<str>,
        payload: Bytes,
        qos: QoS,
        retain: bool,
        props: &Properties,
    ) -> Message {
        let now = message_now();
        let expires_at = props
            .message_expiry_interval
            .map(|s| now.saturating_add(u64::from(s) * 1000));
        let passed = props.payload_format_indicator.is_some()
            || props.content_type.is_some()
            || props.response_topic.is_some()
            || props.correlation_data.is_some()
            || !props.user_properties.is_empty();
        Message {
            topic,
            payload,
            qos,
            retain,
            properties: match passed {
                false => MessageProps::default(),
                true => MessageProps::from(Properties {
                    payload_format_indicator: props.payload_format_indicator,
                    content_type: props.content_type.clone(),
                    response_topic: props.response_topic.clone(),
                    correlation_data: props.correlation_data.clone(),
                    user_properties: props.user_properties.clone(),
                    ..Properties::default()
                }),
            },
            expires_at,
            origin: None,
            timestamp: now,
            origin_node: None,
        }
    }

    /// Seconds left before expiry at `now` (rounded up), `Some(0)` once expired,
    /// `None` if the message never expires.
    pub fn remaining_secs(&self, now: u64) -> Option<u32> {
        self.expires_at
            .map(|at| (at.saturating_sub(now).div_ceil(1000)).min(u64::from(u32::MAX)) as u32)
    }

    /// True if the message has expired at `now`.
    pub fn expired(&self, now: u64) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

/// A message's properties: boxed, and absent when there are none (most
/// messages). An inline [`Properties`] made every message ~0.5 KB, built,
/// copied into its `Arc` and dropped per PUBLISH on every node it crosses.
/// Reads see [`Properties`] through `Deref` (empty ones when absent).
#[derive(Clone, Default)]
pub struct MessageProps(Option<Box<Properties>>);

/// What an absent [`MessageProps`] reads as.
static NO_PROPERTIES: Properties = Properties {
    payload_format_indicator: None,
    message_expiry_interval: None,
    content_type: None,
    response_topic: None,
    correlation_data: None,
    subscription_identifiers: Vec::new(),
    session_expiry_interval: None,
    assigned_client_identifier: None,
    server_keep_alive: None,
    authentication_method: None,
    authentication_data: None,
    request_problem_information: None,
    will_delay_interval: None,
    request_response_information: None,
    response_information: None,
    server_reference: None,
    reason_string: None,
    receive_maximum: None,
    topic_alias_maximum: None,
    topic_alias: None,
    maximum_qos: None,
    retain_available: None,
    user_properties: Vec::new(),
    maximum_packet_size: None,
    wildcard_subscription_available: None,
    subscription_identifier_available: None,
    shared_subscription_available: None,
};

impl MessageProps {
    /// True when no property is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// The properties, boxed (empty ones when absent).
    pub fn into_boxed(self) -> Box<Properties> {
        self.0.unwrap_or_default()
    }
}

impl From<Properties> for MessageProps {
    /// Boxes `p` unless it is empty.
    fn from(p: Properties) -> Self {
        match p == NO_PROPERTIES {
            true => MessageProps(None),
            false => MessageProps(Some(Box::new(p))),
        }
    }
}

impl std::ops::Deref for MessageProps {
    type Target = Properties;
    fn deref(&self) -> &Properties {
        self.0.as_deref().unwrap_or(&NO_PROPERTIES)
    }
}

impl std::ops::DerefMut for MessageProps {
    /// Boxes empty properties first: a write makes them present.
    fn deref_mut(&mut self) -> &mut Properties {
        self.0.get_or_insert_with(Box::default)
    }
}

impl PartialEq for MessageProps {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for MessageProps {}

impl std::fmt::Debug for MessageProps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (**self).fmt(f)
    }
}

/// One message on its way to one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The shared message.
    pub msg: Arc<Message>,
    /// QoS for this subscriber: min(published, granted).
    pub qos: QoS,
    /// RETAIN flag as this subscriber sees it.
    pub retain: bool,
    /// 5.0 subscription identifiers of every matching subscription.
    pub sub_ids: Vec<u32>,
}

/// An outgoing QoS 1/2 message awaiting acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inflight {
    /// PUBLISH sent; awaiting PUBACK (QoS 1) or PUBREC (QoS 2).
    Sent(Delivery),
    /// PUBREL sent; awaiting PUBCOMP.
    Released,
}

/// The will of the current (or last) connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    /// Will topic.
    pub topic: Arc<str>,
    /// Will payload.
    pub payload: Bytes,
    /// Will QoS.
    pub qos: QoS,
    /// Will retain flag.
    pub retain: bool,
    /// Will properties as sent in CONNECT (expiry counts from publication).
    /// Boxed: a will sits in every session and every connection, and an
    /// inline `Properties` (344 bytes) twice per idle connection was a
    /// tenth of its memory.
    pub properties: Box<Properties>,
    /// 5.0 Will Delay Interval, seconds.
    pub delay: u32,
}

impl Will {
    /// The message to publish now.
    pub fn to_message(&self) -> Message {
        Message::new(
            self.topic.clone(),
            self.payload.clone(),
            self.qos,
            self.retain,
            &self.properties,
        )
    }
}

/// Outcome of putting a message in a session's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// Queued.
    Queued,
    /// The queue was full: a message was dropped (the new or the oldest).
    Dropped,
    /// Not queued and not counted as a drop (QoS 0 to an offline session).
    Skipped,
}

/// What a PUBREC does to the in-flight window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PubRecOutcome {
    /// Known packet id: reply PUBREL, await PUBCOMP.
    Release,
    /// The receiver refused the message (reason >= 0x80): forget it.
    Refused,
    /// Unknown packet id.
    Unknown,
}

/// Packet ids of incoming QoS 2 messages awaiting PUBREL. Empty in almost
/// every session, so it costs one pointer until used, and gives its table
/// back once empty again: `Some` always holds ids, so equality is the
/// derived one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
// Boxed on purpose: a pointer inline, not the table's 48 bytes.
#[allow(clippy::box_collection)]
pub struct PkidSet(Option<Box<HashSet<u16>>>);

impl PkidSet {
    /// Adds `id`; false if it was there already.
    pub fn insert(&mut self, id: u16) -> bool {
        self.0.get_or_insert_with(Box::default).insert(id)
    }

    /// Removes `id`; false if it was not there.
    pub fn remove(&mut self, id: &u16) -> bool {
        let Some(set) = &mut self.0 else {
            return false;
        };
        let known = set.remove(id);
        if set.is_empty() {
            self.0 = None;
        }
        known
    }

    /// Whether `id` is there.
    pub fn contains(&self, id: &u16) -> bool {
        self.0.as_ref().is_some_and(|s| s.contains(id))
    }

    /// How many ids are there.
    pub fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |s| s.len())
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// The ids, in no order.
    pub fn iter(&self) -> impl Iterator<Item = &u16> {
        self.0.iter().flat_map(|s| s.iter())
    }
}

impl Extend<u16> for PkidSet {
    fn extend<I: IntoIterator<Item = u16>>(&mut self, ids: I) {
        for id in ids {
            self.insert(id);
        }
    }
}

impl FromIterator<u16> for PkidSet {
    fn from_iter<I: IntoIterator<Item = u16>>(ids: I) -> Self {
        let mut set = PkidSet::default();
        set.extend(ids);
        set
    }
}

/// A session's subscriptions. foldhash's per-map seed is 8 B where std's
/// `RandomState` takes 16: every session holds one, idle ones included.
pub type Subscriptions = HashMap<String, SubEntry, foldhash::fast::RandomState>;

/// Everything of a session that survives its connection: the value that
/// is exported and imported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionData {
    /// Client identifier.
    pub client_id: ClientId,
    /// Filter (as subscribed, `$share/…` included) → options.
    pub subscriptions: Subscriptions,
    /// Messages waiting to be sent, oldest first.
    pub queue: VecDeque<Delivery>,
    /// Outgoing QoS 1/2 in flight, in send order.
    pub inflight: VecDeque<(u16, Inflight)>,
    /// Incoming QoS 2 packet ids received (PUBREC sent), awaiting PUBREL.
    pub incoming_qos2: PkidSet,
    /// The will to publish if the connection ends abnormally (boxed: an
    /// idle session's memory counts, and most have none).
    pub will: Option<Box<Will>>,
    /// Session Expiry Interval, seconds; `u32::MAX` never expires.
    pub expiry_interval: u32,
    /// Last packet id handed out.
    pub last_pkid: u16,
}

impl SessionData {
    /// An empty session.
    pub fn new(client_id: ClientId) -> SessionData {
        SessionData {
            client_id,
            subscriptions: Subscriptions::default(),
            queue: VecDeque::new(),
            inflight: VecDeque::new(),
            incoming_qos2: PkidSet::default(),
            will: None,
            expiry_interval: 0,
            last_pkid: 0,
        }
    }

    /// Queues `d`, applying the queue `limit` and drop `policy`. QoS 0 is
    /// not queued for an offline session, as in Mosquitto and VerneMQ.
    pub fn enqueue(
        &mut self,
        d: Delivery,
        online: bool,
        limit: usize,
        policy: DropPolicy,
    ) -> Enqueued {
        if !online && d.qos == QoS::AtMostOnce {
            return Enqueued::Skipped;
        }
        if self.queue.len() >= limit {
            match policy {
                DropPolicy::DropNewest => return Enqueued::Dropped,
                DropPolicy::DropOldest => {
                    self.queue.pop_front();
                    self.queue.push_back(d);
                    return Enqueued::Dropped;
                }
            }
        }
        self.queue.push_back(d);
        Enqueued::Queued
    }

    /// A packet id not in flight. The window is far below 65,535, so this
    /// terminates after at most `inflight.len() + 1` steps.
    pub fn next_pkid(&mut self) -> u16 {
        loop {
            self.last_pkid = self.last_pkid.wrapping_add(1);
            if self.last_pkid == 0 {
                continue;
            }
            let id = self.last_pkid;
            if !self.inflight.iter().any(|(p, _)| *p == id) {
                return id;
            }
        }
    }

    fn position(&self, pkid: u16) -> Option<usize> {
        // Acks usually arrive in send order: the front is the common hit.
        self.inflight.iter().position(|(p, _)| *p == pkid)
    }

    /// A PUBACK: true if it completed an in-flight QoS 1 message.
    pub fn puback(&mut self, pkid: u16) -> bool {
        match self.position(pkid) {
            Some(i) if matches!(&self.inflight[i].1, Inflight::Sent(d) if d.qos == QoS::AtLeastOnce) =>
            {
                if let Some((_, Inflight::Sent(d))) = self.inflight.remove(i) {
                    crate::recycle::release(d.msg);
                }
                true
            }
            _ => false,
        }
    }

    /// A PUBREC with `reason`.
    pub fn pubrec(&mut self, pkid: u16, reason: u8) -> PubRecOutcome {
        let Some(i) = self.position(pkid) else {
            return PubRecOutcome::Unknown;
        };
        match &self.inflight[i].1 {
            Inflight::Sent(d) if d.qos == QoS::ExactlyOnce => {
                if reason >= 0x80 {
                    self.inflight.remove(i);
                    PubRecOutcome::Refused
                } else {
                    self.inflight[i].1 = Inflight::Released;
                    PubRecOutcome::Release
                }
            }
            // A repeated PUBREC after our PUBREL: answer PUBREL again.
            Inflight::Released => PubRecOutcome::Release,
            Inflight::Sent(_) => PubRecOutcome::Unknown,
        }
    }

    /// A PUBCOMP: true if it completed an in-flight QoS 2 message.
    pub fn pubcomp(&mut self, pkid: u16) -> bool {
        match self.position(pkid) {
            Some(i) if self.inflight[i].1 == Inflight::Released => {
                self.inflight.remove(i);
                true
            }
            _ => false,
        }
    }

    /// Takes the next message that may be sent now, given the in-flight
    /// `window`, dropping expired ones (their count is added to `expired`).
    /// Returns the delivery and, for QoS 1/2, the packet id now in flight.
    pub fn next_sendable(
        &mut self,
        window: usize,
        now: u64,
        expired: &mut u64,
    ) -> Option<(Delivery, u16)> {
        loop {
            let front = self.queue.front()?;
            if front.msg.expired(now) {
                self.queue.pop_front();
                *expired += 1;
                continue;
            }
            if front.qos == QoS::AtMostOnce {
                return self.queue.pop_front().map(|d| (d, 0));
            }
            if self.inflight.len() >= window {
                return None;
            }
            let d = self.queue.pop_front()?;
            let pkid = self.next_pkid();
            self.inflight.push_back((pkid, Inflight::Sent(d.clone())));
            return Some((d, pkid));
        }
    }

    /// Forgets an in-flight message that could not be sent (too large for
    /// the client): the spec says to act as if it was delivered.
    pub fn abandon(&mut self, pkid: u16) {
        if let Some(i) = self.position(pkid) {
            self.inflight.remove(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(qos: QoS, topic: &str) -> Delivery {
        Delivery {
            msg: Arc::new(Message::new(
                topic.into(),
                Bytes::from_static(b"x"),
                qos,
                false,
                &Properties::default(),
            )),
            qos,
            retain: false,
            sub_ids: vec![],
        }
    }

    #[test]
    fn pkid_set_gives_its_table_back_and_compares_by_content() {
        let mut set = PkidSet::default();
        assert!(!set.remove(&1) && set.is_empty());
        assert!(set.insert(7) && !set.insert(7));
        assert!(set.contains(&7) && set.len() == 1);
        assert!(set.remove(&7) && !set.contains(&7));
        assert!(set.0.is_none(), "an emptied set frees its table");
        let mut other: PkidSet = [3, 9].into_iter().collect();
        assert_ne!(set, other);
        other.remove(&3);
        other.remove(&9);
        assert_eq!(set, other);
        set.extend([5, 6]);
        let mut ids: Vec<u16> = set.iter().copied().collect();
        ids.sort_unstable();
        assert_eq!(ids, [5, 6]);
    }

    #[test]
    fn queue_limits_and_policies() {
        let mut s = SessionData::new("c".into());
        assert_eq!(
            s.enqueue(
                delivery(QoS::AtMostOnce, "a"),
                false,
                2,
                DropPolicy::DropNewest
            ),
            Enqueued::Skipped
        );
        assert_eq!(
            s.enqueue(
                delivery(QoS::AtLeastOnce, "1"),
                false,
                2,
                DropPolicy::DropNewest
            ),
            Enqueued::Queued
        );
        assert_eq!(
            s.enqueue(
                delivery(QoS::AtLeastOnce, "2"),
                false,
                2,
                DropPolicy::DropNewest
            ),
            Enqueued::Queued
        );
        assert_eq!(
            s.enqueue(
                delivery(QoS::AtLeastOnce, "3"),
                false,
                2,
                DropPolicy::DropNewest
            ),
            Enqueued::Dropped
        );
        assert_eq!(&*s.queue[1].msg.topic, "2");
        assert_eq!(
            s.enqueue(
                delivery(QoS::AtLeastOnce, "4"),
                false,
                2,
                DropPolicy::DropOldest
            ),
            Enqueued::Dropped
        );
        assert_eq!(&*s.queue[0].msg.topic, "2");
        assert_eq!(&*s.queue[1].msg.topic, "4");
    }

    #[test]
    fn window_and_acks() {
        let mut s = SessionData::new("c".into());
        for t in ["a", "b", "c"] {
            s.enqueue(
                delivery(QoS::AtLeastOnce, t),
                true,
                10,
                DropPolicy::DropNewest,
            );
        }
        s.enqueue(
            delivery(QoS::ExactlyOnce, "d"),
            true,
            10,
            DropPolicy::DropNewest,
        );
        let mut expired = 0;
        let (_, p1) = s.next_sendable(2, 0, &mut expired).expect("first");
        let (_, p2) = s.next_sendable(2, 0, &mut expired).expect("second");
        assert!(
            s.next_sendable(2, 0, &mut expired).is_none(),
            "window of 2 is full"
        );
        assert!(s.puback(p1));
        assert!(!s.puback(p1), "acked twice");
        assert!(!s.pubcomp(p2), "PUBCOMP for a QoS 1 message");
        assert!(s.puback(p2));
        let (_, _p3) = s.next_sendable(2, 0, &mut expired).expect("third");
        let (d4, p4) = s.next_sendable(2, 0, &mut expired).expect("fourth");
        assert_eq!(d4.qos, QoS::ExactlyOnce);
        assert_eq!(s.pubrec(p4, 0), PubRecOutcome::Release);
        assert_eq!(s.pubrec(p4, 0), PubRecOutcome::Release, "repeated PUBREC");
        assert!(s.pubcomp(p4));
        assert_eq!(s.pubrec(999, 0), PubRecOutcome::Unknown);
    }

    #[test]
    fn expired_messages_are_dropped_and_counted() {
        let mut s = SessionData::new("c".into());
        let mut d = delivery(QoS::AtLeastOnce, "a");
        Arc::make_mut(&mut d.msg).expires_at = Some(5);
        s.enqueue(d, true, 10, DropPolicy::DropNewest);
        s.enqueue(
            delivery(QoS::AtLeastOnce, "b"),
            true,
            10,
            DropPolicy::DropNewest,
        );
        let mut expired = 0;
        let (d, _) = s.next_sendable(10, 10, &mut expired).expect("b is live");
        assert_eq!(&*d.msg.topic, "b");
        assert_eq!(expired, 1);
    }

    #[test]
    fn pkids_skip_zero_and_in_flight() {
        let mut s = SessionData::new("c".into());
        s.last_pkid = u16::MAX - 1;
        s.inflight.push_back((u16::MAX, Inflight::Released));
        assert_eq!(s.next_pkid(), 1);
    }

    #[test]
    fn remaining_expiry_rounds_up() {
        let mut m = Message::new(
            "t".into(),
            Bytes::new(),
            QoS::AtMostOnce,
            false,
            &Properties::default(),
        );
        assert_eq!(m.remaining_secs(0), None);
        m.expires_at = Some(10_500);
        assert_eq!(m.remaining_secs(9_000), Some(2));
        assert_eq!(m.remaining_secs(11_000), Some(0));
    }
}
