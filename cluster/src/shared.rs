//! Picking exactly one member node for a shared-subscription group, by
//! `mqtt.shared_subscription_policy`: `prefer_local` serves locally when
//! this node has members and round-robins over remote nodes otherwise;
//! `round_robin` and `random` pick among every member node.

use std::sync::Arc;
use tern_broker::config::SharedPolicy;

/// Which node serves a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pick {
    /// This node.
    Local,
    /// The named remote node.
    Remote(Arc<str>),
}

/// Picks a member node. `remote` holds the remote member nodes (sorted,
/// without duplicates); `turn` is the group's round-robin counter and
/// `random` a random number. `None` if the group has no member anywhere.
pub fn pick(
    policy: SharedPolicy,
    local_member: bool,
    remote: &[Arc<str>],
    turn: usize,
    random: usize,
) -> Option<Pick> {
    let total = remote.len() + usize::from(local_member);
    if total == 0 {
        return None;
    }
    let index = match policy {
        SharedPolicy::PreferLocal if local_member => return Some(Pick::Local),
        SharedPolicy::PreferLocal => {
            return Some(Pick::Remote(remote[turn % remote.len()].clone()))
        }
        SharedPolicy::RoundRobin => turn % total,
        SharedPolicy::Random => random % total,
    };
    Some(match (local_member, index) {
        (true, 0) => Pick::Local,
        (true, i) => Pick::Remote(remote[i - 1].clone()),
        (false, i) => Pick::Remote(remote[i].clone()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(names: &[&str]) -> Vec<Arc<str>> {
        names.iter().map(|n| Arc::from(*n)).collect()
    }

    #[test]
    fn prefer_local_stays_local_then_rotates_remote() {
        let r = nodes(&["b", "c"]);
        for turn in 0..4 {
            assert_eq!(
                pick(SharedPolicy::PreferLocal, true, &r, turn, 0),
                Some(Pick::Local)
            );
        }
        let picks: Vec<_> = (0..4)
            .map(|t| pick(SharedPolicy::PreferLocal, false, &r, t, 0))
            .collect();
        assert_eq!(picks[0], Some(Pick::Remote(Arc::from("b"))));
        assert_eq!(picks[1], Some(Pick::Remote(Arc::from("c"))));
        assert_eq!(picks[2], picks[0]);
    }

    #[test]
    fn round_robin_covers_every_member_once_per_cycle() {
        let r = nodes(&["b", "c"]);
        let picks: Vec<_> = (0..3)
            .filter_map(|t| pick(SharedPolicy::RoundRobin, true, &r, t, 0))
            .collect();
        assert_eq!(
            picks,
            vec![
                Pick::Local,
                Pick::Remote(Arc::from("b")),
                Pick::Remote(Arc::from("c"))
            ]
        );
        assert_eq!(
            pick(SharedPolicy::Random, false, &r, 0, 5),
            Some(Pick::Remote(Arc::from("c")))
        );
        assert_eq!(pick(SharedPolicy::RoundRobin, false, &[], 0, 0), None);
    }
}
