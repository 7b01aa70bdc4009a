//! The retained-message store: topic name → last retained message, with
//! lookup by topic filter for delivery on subscribe.

/// Retained messages of type `T`, keyed by topic name. Thread-safe through `&self`.
pub struct RetainedStore<T> {
    _t: std::marker::PhantomData<T>,
}

impl<T: Clone> Default for RetainedStore<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Clone> RetainedStore<T> {
    /// An empty store.
    pub fn new() -> Self {
        unimplemented!()
    }

    /// Stores `msg` as the retained message of `topic`, replacing any.
    /// Returns true if the topic had none before.
    pub fn set(&self, topic: &str, msg: T) -> bool {
        let _ = (topic, msg);
        unimplemented!()
    }

    /// Removes `topic`'s retained message. Returns true if there was one.
    pub fn remove(&self, topic: &str) -> bool {
        let _ = topic;
        unimplemented!()
    }

    /// Appends `(topic, message)` for every retained message whose topic
    /// matches `filter` (a valid plain filter, `$` rule included).
    pub fn matching(&self, filter: &str, out: &mut Vec<(String, T)>) {
        let _ = (filter, out);
        unimplemented!()
    }

    /// Removes every entry for which `keep` returns false; returns how many.
    pub fn retain_where(&self, keep: impl FnMut(&str, &T) -> bool) -> usize {
        let _ = keep;
        unimplemented!()
    }

    /// Number of retained messages.
    pub fn len(&self) -> usize {
        unimplemented!()
    }

    /// True if empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
