//! The node's shared broker state.
use crate::config::Config;
use crate::metrics::Metrics;
use std::sync::Arc;

/// Shared state of one broker node.
pub struct Broker {}

impl Broker {
    /// A broker with no sessions.
    pub fn new(config: Arc<Config>, metrics: Metrics) -> Arc<Broker> {
        let _ = (config, metrics);
        unimplemented!()
    }
}
