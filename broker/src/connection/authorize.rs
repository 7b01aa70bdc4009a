//! Waits the connection makes after a packet: an acknowledgement that waits
//! for remote nodes or the durable store (handed to the in-order pipeline
//! in `acks.rs`, input goes on), and an authorizer that asks a remote
//! service (a webhook) about a PUBLISH or SUBSCRIBE. Only this client waits
//! for an authorization; its input stays unread meanwhile, so its packets
//! keep their order.

use super::{Close, Conn};
use crate::auth::{BoxFuture, Client};
use crate::codec::{Packet, Properties, PubResp, Publish, Subscribe};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};

/// What a handled packet left to wait for.
pub(crate) enum Pending {
    /// An acknowledgement sent once remote nodes hold the message.
    Ack(AckAfter),
    /// A PUBLISH waiting for its authorization.
    Publish(Box<HeldPublish>),
    /// A SUBSCRIBE waiting for its authorization.
    Subscribe(Box<HeldSubscribe>),
}

/// An acknowledgement that waits for remote nodes to hold a message.
pub(crate) struct AckAfter {
    /// Completes once every target node holds the message.
    pub remote: BoxFuture<'static, ()>,
    /// Then a PUBREC (QoS 2) or PUBACK (QoS 1) is sent.
    pub qos2: bool,
    /// Its packet id.
    pub pkid: u16,
    /// Its reason code.
    pub reason: u8,
}

impl AckAfter {
    /// The acknowledgement to send once `remote` completes (built then, not
    /// held across the wait: packets are large).
    pub(super) fn ack(&self) -> Packet {
        let a = PubResp {
            pkid: self.pkid,
            reason: self.reason,
            properties: Properties::default(),
        };
        if self.qos2 {
            Packet::PubRec(a)
        } else {
            Packet::PubAck(a)
        }
    }
}

/// A PUBLISH held until the authorizer decides.
pub(crate) struct HeldPublish {
    pub verdict: BoxFuture<'static, bool>,
    pub publish: Publish,
    /// Its topic, alias resolved.
    pub topic: Arc<str>,
}

/// A SUBSCRIBE held until the authorizer decides.
pub(crate) struct HeldSubscribe {
    /// One verdict per filter that passed the local checks.
    pub verdicts: BoxFuture<'static, Vec<bool>>,
    pub subscribe: Subscribe,
    /// Per filter: the refusal code of the local checks, if any.
    pub local: Vec<Option<u8>>,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Conn<S> {
    /// This client, as authorizers see it.
    pub(super) fn client(&self) -> Client<'_> {
        Client {
            client_id: &self.client_id,
            username: self.username.as_deref(),
            addr: self.peer,
        }
    }

    /// Waits for `pending` and carries on with its packet, until nothing is
    /// left to wait for.
    pub(super) async fn complete(&mut self, mut pending: Pending) -> Result<(), Close> {
        loop {
            let next = match pending {
                Pending::Ack(a) => {
                    // Into the in-order pipeline: input goes on meanwhile.
                    self.acks.push(a);
                    return Ok(());
                }
                Pending::Publish(held) => {
                    let HeldPublish {
                        verdict,
                        publish,
                        topic,
                    } = *held;
                    let allowed = verdict.await;
                    // The publish path notes full targets in a thread-local:
                    // collect them before the next await.
                    crate::limits::clear_full();
                    let next = self.behind_acks(|c| c.publish_decided(allowed, publish, topic));
                    self.collect_full();
                    next?
                }
                Pending::Subscribe(held) => {
                    let HeldSubscribe {
                        verdicts,
                        subscribe,
                        local,
                    } = *held;
                    let verdicts = verdicts.await;
                    self.behind_acks(|c| c.subscribe_decided(subscribe, local, verdicts))?;
                    None
                }
            };
            match next {
                Some(p) => pending = p,
                None => return Ok(()),
            }
        }
    }
}
