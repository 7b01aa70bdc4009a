//! Subscriber storage for one filter: its direct subscribers and its
//! shared-subscription groups.

use super::{ClientId, Matches, SharedMatch, SubEntry};
use std::collections::HashMap;
use std::sync::Arc;

/// Above this many members a list becomes a hash map: most filters have a
/// handful of subscribers (a linear scan is fastest), but a fan-out filter
/// with 100k subscribers must not make each subscribe O(n).
const SPILL: usize = 16;
/// A map shrinking below this goes back to a list; the gap to [`SPILL`]
/// keeps a filter hovering around the threshold from flapping.
const UNSPILL: usize = 4;

/// The subscribers of one filter (or of one shared group on it).
pub(super) enum Members {
    Few(Vec<(ClientId, SubEntry)>),
    Many(HashMap<ClientId, SubEntry>),
}

impl Default for Members {
    fn default() -> Self {
        Members::Few(Vec::new())
    }
}

impl Members {
    /// Inserts or replaces `client`'s entry; true if it is new.
    fn insert(&mut self, client: &ClientId, entry: SubEntry) -> bool {
        match self {
            Members::Few(list) => {
                if let Some((_, e)) = list.iter_mut().find(|(c, _)| c == client) {
                    *e = entry;
                    return false;
                }
                if list.len() < SPILL {
                    list.push((client.clone(), entry));
                } else {
                    let mut map: HashMap<_, _> = list.drain(..).collect();
                    map.insert(client.clone(), entry);
                    *self = Members::Many(map);
                }
                true
            }
            Members::Many(map) => match map.get_mut(client) {
                Some(e) => {
                    *e = entry;
                    false
                }
                None => {
                    map.insert(client.clone(), entry);
                    true
                }
            },
        }
    }

    /// Removes `client`; true if it was there.
    fn remove(&mut self, client: &ClientId) -> bool {
        match self {
            Members::Few(list) => match list.iter().position(|(c, _)| c == client) {
                Some(i) => {
                    list.swap_remove(i);
                    true
                }
                None => false,
            },
            Members::Many(map) => {
                if map.remove(client).is_none() {
                    return false;
                }
                if map.len() < UNSPILL {
                    *self = Members::Few(map.drain().collect());
                } else if map.capacity() > 4 * map.len() {
                    // Give memory back after a mass unsubscribe (amortised O(1)).
                    map.shrink_to_fit();
                }
                true
            }
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Members::Few(list) => list.is_empty(),
            Members::Many(map) => map.is_empty(),
        }
    }

    /// Appends a copy of every member to `out`.
    fn push_into(&self, out: &mut Vec<(ClientId, SubEntry)>) {
        match self {
            Members::Few(list) => out.extend_from_slice(list),
            Members::Many(map) => out.extend(map.iter().map(|(c, e)| (c.clone(), e.clone()))),
        }
    }

    fn to_vec(&self) -> Vec<(ClientId, SubEntry)> {
        let mut v = Vec::new();
        self.push_into(&mut v);
        v
    }
}

/// One `$share/{name}/{filter}` group.
struct Group {
    name: Arc<str>,
    filter: Arc<str>,
    members: Members,
}

/// Everything subscribed to one (plain) filter.
#[derive(Default)]
pub(super) struct Slot {
    direct: Members,
    /// Few groups per filter in practice, so a list.
    shared: Vec<Group>,
}

impl Slot {
    /// Inserts or replaces `client`'s subscription, directly (`group` None)
    /// or in `group`; `filter` is the plain filter this slot stands for.
    /// True if it is new.
    pub(super) fn insert(
        &mut self,
        group: Option<&str>,
        filter: &str,
        client: &ClientId,
        entry: SubEntry,
    ) -> bool {
        let Some(name) = group else {
            return self.direct.insert(client, entry);
        };
        if let Some(g) = self.shared.iter_mut().find(|g| &*g.name == name) {
            return g.members.insert(client, entry);
        }
        let mut members = Members::default();
        members.insert(client, entry);
        self.shared.push(Group {
            name: name.into(),
            filter: filter.into(),
            members,
        });
        true
    }

    /// Removes `client`'s direct (`group` None) or shared subscription,
    /// dropping a group left empty. True if it existed.
    pub(super) fn remove(&mut self, group: Option<&str>, client: &ClientId) -> bool {
        let Some(name) = group else {
            return self.direct.remove(client);
        };
        let Some(i) = self.shared.iter().position(|g| &*g.name == name) else {
            return false;
        };
        let hit = self.shared[i].members.remove(client);
        if self.shared[i].members.is_empty() {
            self.shared.swap_remove(i);
        }
        hit
    }

    /// True if nothing is subscribed here.
    pub(super) fn is_empty(&self) -> bool {
        self.direct.is_empty() && self.shared.is_empty()
    }

    /// Appends this slot's subscriptions to `out`.
    pub(super) fn collect(&self, out: &mut Matches) {
        self.direct.push_into(&mut out.direct);
        out.shared.extend(self.shared.iter().map(|g| SharedMatch {
            group: g.name.clone(),
            filter: g.filter.clone(),
            members: g.members.to_vec(),
        }));
    }
}
