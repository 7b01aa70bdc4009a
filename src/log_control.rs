//! The process's tracing subscriber, installed with a reloadable filter so
//! that `PUT /log-level` can change it at run time.

use std::sync::{Arc, Mutex};
use tern_broker::admin::LogControl;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, reload, EnvFilter, Registry};

/// A `reload` handle and the directive it was last given.
struct Reloadable {
    handle: reload::Handle<EnvFilter, Registry>,
    current: Mutex<String>,
}

impl LogControl for Reloadable {
    fn current(&self) -> String {
        self.current.lock().map(|c| c.clone()).unwrap_or_default()
    }

    fn set(&self, directive: &str) -> Result<(), String> {
        let filter = EnvFilter::builder()
            .parse(directive)
            .map_err(|e| e.to_string())?;
        self.handle.reload(filter).map_err(|e| e.to_string())?;
        if let Ok(mut current) = self.current.lock() {
            *current = directive.to_string();
        }
        Ok(())
    }
}

/// Installs the global subscriber (`TERN_LOG`, else `RUST_LOG`, else
/// `info`, to stderr) and returns the control the admin API uses.
pub fn install() -> Arc<dyn LogControl> {
    let directive = ["TERN_LOG", "RUST_LOG"]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .find(|d| EnvFilter::builder().parse(d).is_ok())
        .unwrap_or_else(|| "info".to_string());
    let filter = EnvFilter::builder()
        .parse(&directive)
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt::layer().with_writer(std::io::stderr))
        .init();
    Arc::new(Reloadable {
        handle,
        current: Mutex::new(directive),
    })
}
