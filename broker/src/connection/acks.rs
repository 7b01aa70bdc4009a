//! The in-order acknowledgement pipeline: PUBACKs/PUBRECs that wait on
//! something outside the connection (remote nodes holding the message, the
//! durable store's group commit) queue here while the connection goes on
//! reading and publishing. Each entry keeps the bytes that later packets
//! produced meanwhile, written right after its acknowledgement, so the
//! client sees acknowledgements in the order of its PUBLISHes (§4.6).

use super::authorize::AckAfter as Pending;
use bytes::BytesMut;
use std::collections::VecDeque;
use std::future::Future;
use std::task::Poll;

/// Acknowledgements waiting before a connection stops reading (clients
/// respect their Receive Maximum long before this).
pub(super) const ACKS_MAX: usize = 1024;

/// Waiting acknowledgements in arrival order.
#[derive(Default)]
pub(super) struct Acks {
    queue: VecDeque<(Pending, BytesMut)>,
    /// How many leading entries have completed (never polled again).
    ready: usize,
}

impl Acks {
    /// True when input must stop until acknowledgements complete.
    pub(super) fn is_full(&self) -> bool {
        self.queue.len() >= ACKS_MAX
    }

    /// True when no acknowledgement waits at all.
    pub(super) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// True when some entry has not completed yet (worth polling).
    pub(super) fn waiting(&self) -> bool {
        self.ready < self.queue.len()
    }

    /// Where output produced now goes: after the last waiting ack.
    pub(super) fn tail(&mut self) -> Option<&mut BytesMut> {
        self.queue.back_mut().map(|(_, tail)| tail)
    }

    /// Queues an acknowledgement behind the others.
    pub(super) fn push(&mut self, pending: Pending) {
        self.queue.push_back((pending, BytesMut::new()));
    }

    /// Completes once at least one more leading entry has completed.
    pub(super) fn progress(&mut self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            let start = self.ready;
            while let Some((pending, _)) = self.queue.get_mut(self.ready) {
                if pending.remote.as_mut().poll(cx).is_pending() {
                    break;
                }
                self.ready += 1;
            }
            if self.ready > start {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
    }

    /// Takes the oldest completed entry, if any.
    pub(super) fn pop_ready(&mut self) -> Option<(Pending, BytesMut)> {
        if self.ready == 0 {
            return None;
        }
        self.ready -= 1;
        self.queue.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot;

    fn pending(pkid: u16, rx: oneshot::Receiver<()>) -> Pending {
        Pending {
            remote: Box::pin(async move {
                let _ = rx.await;
            }),
            qos2: false,
            pkid,
            reason: 0,
        }
    }

    #[tokio::test]
    async fn releases_in_arrival_order_only() {
        let mut acks = Acks::default();
        let (tx1, rx1) = oneshot::channel();
        let (tx2, rx2) = oneshot::channel();
        acks.push(pending(1, rx1));
        acks.tail().unwrap().extend_from_slice(b"after 1");
        acks.push(pending(2, rx2));
        // The second completes first: nothing may be released yet.
        tx2.send(()).unwrap();
        let early = tokio::time::timeout(std::time::Duration::from_millis(20), acks.progress());
        assert!(early.await.is_err(), "released out of order");
        assert!(acks.pop_ready().is_none());
        tx1.send(()).unwrap();
        acks.progress().await;
        let released: Vec<_> = std::iter::from_fn(|| acks.pop_ready())
            .map(|(p, tail)| (p.pkid, tail))
            .collect();
        assert_eq!(released.len(), 2);
        assert_eq!(released[0].0, 1);
        assert_eq!(&released[0].1[..], b"after 1");
        assert_eq!(released[1].0, 2);
        assert!(acks.pop_ready().is_none() && !acks.waiting());
    }
}
