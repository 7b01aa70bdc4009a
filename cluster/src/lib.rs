//! The Tern cluster mesh: any number of `tern` nodes act as one broker.
//!
//! Every node dials every peer it is told about and keeps one gRPC
//! bidirectional stream to each (`Link`): a node sends its own traffic on
//! the streams it dialed (routes, forwarded publishes, retained updates,
//! heartbeats) and the response direction carries acks and replies. A
//! unary `Claim` moves a client's session on CONNECT. No consensus sits on
//! the CONNECT, SUBSCRIBE or PUBLISH path.
//!
//! Modules, pure cores first:
//! - [`local`]: refcounts of this node's routes and their versioned deltas.
//! - [`remote`]: the routes of other nodes, with version-gap detection.
//! - [`outbox`]: one FIFO retry buffer per peer (sequence, acks, bounds).
//! - [`dedup`]: the receiver's duplicate filter per origin.
//! - [`shared`]: picking one member node per shared-subscription group.
//! - [`convert`]: broker values to and from protobuf; [`batch`]: the
//!   received `PublishBatch`, decoded by hand straight into broker values.
//! - [`transport`]: the injected byte transport (TCP, in-memory with cuts), TLS.
//! - [`options`]: [`ClusterOptions`] and incarnations.
//! - [`peers`]: where peer addresses come from ([`peers::StaticPeers`]).
//! - [`drain`]: graceful leave, handing persistent sessions to peers;
//!   `ready`: whether the node has joined the mesh (readiness).
//! - [`link`] (dialer side), [`service`] (gRPC server side), [`node`]
//!   ([`Cluster`]: the [`RemoteRoutes`](tern_broker::routes::RemoteRoutes)
//!   implementation and its tasks).

#![warn(missing_docs)]

pub mod batch;
pub mod convert;
pub mod dedup;
pub mod drain;
mod forward;
mod link;
pub mod local;
pub mod node;
pub mod options;
pub mod outbox;
pub mod peers;
mod ready;
pub mod remote;
mod service;
pub mod shared;
pub mod transport;
mod wire;
#[cfg(test)]
mod wire_testing;

pub use node::Cluster;
pub use options::ClusterOptions;
pub use peers::{PeerSource, StaticPeers};
pub use transport::{MemNetwork, TcpTransport, Transport};

/// Generated protobuf messages and gRPC stubs of `proto/mesh.proto`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("tern.mesh");
}

/// Version of the mesh protocol announced in `Hello`.
pub const PROTOCOL_VERSION: u32 = 1;

/// Why a cluster operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A peer sent a value that does not decode into a broker value.
    #[error("invalid {what} from a peer: {message}")]
    Decode {
        /// What was being decoded.
        what: &'static str,
        /// What was wrong.
        message: String,
    },
    /// The mesh listener could not bind.
    #[error("cannot bind the cluster listener to {addr}")]
    Bind {
        /// The configured address.
        addr: String,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// A TLS file could not be read.
    #[error("cannot read cluster TLS file {path}")]
    TlsFile {
        /// The file.
        path: String,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// TLS is enabled but a file is not configured.
    #[error("cluster.tls.{0} is required when cluster TLS is enabled")]
    TlsMissing(&'static str),
    /// The gRPC transport failed to start.
    #[error("cluster transport")]
    Transport(#[from] tonic::transport::Error),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
