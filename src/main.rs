//! The `tern` binary: parse flags, load configuration, run the server until
//! SIGTERM or SIGINT, then drain within `shutdown.grace_period_secs`:
//! disconnect clients, hand persistent sessions to peers and leave the
//! cluster (`tern_cluster::drain`). Everything else lives in `tern-broker`,
//! `tern-cluster` and `tern-discovery` (wired together in `mesh`); `tern
//! admin` talks to a running node (`admin_cli`).

mod admin_cli;
mod log_control;
mod mesh;
mod passwd_cli;

use clap::{Parser, Subcommand};
use std::error::Error;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use tern_broker::admin::Readiness;
use tern_broker::config::{Config, ProcessEnv};
use tern_broker::server::{Server, ServerError};
use tern_cluster::{Cluster, ClusterOptions, TcpTransport};
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio_util::sync::CancellationToken;

/// Exit code for configuration errors (bad file, key, value or TLS files).
const EXIT_CONFIG: u8 = 2;

/// Tern, a native MQTT broker.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// TOML configuration file; without it the embedded defaults are used.
    /// Keys can be overridden with TERN_SECTION__KEY=value.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,

    /// Print the default configuration and exit.
    #[arg(long, conflicts_with = "check_config")]
    print_default_config: bool,

    /// Validate the configuration (including TLS files) and exit.
    #[arg(long)]
    check_config: bool,

    /// After binding, write the bound addresses as JSON to this file.
    #[arg(long, value_name = "PATH", env = "TERN_BOUND_ADDRS_FILE")]
    bound_addrs_file: Option<PathBuf>,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Talk to a running node's admin API.
    Admin {
        #[command(flatten)]
        conn: AdminConn,
        #[command(subcommand)]
        what: AdminCommand,
    },
    /// Manage a password file (argon2id hashes), like `mosquitto_passwd`.
    Passwd {
        /// Create the file, replacing any existing one.
        #[arg(short = 'c')]
        create: bool,
        /// Batch mode: the password is the last argument.
        #[arg(short = 'b')]
        batch: bool,
        /// Delete the user.
        #[arg(short = 'D', conflicts_with_all = ["create", "batch"])]
        delete: bool,
        /// The password file.
        file: PathBuf,
        /// The user name.
        user: String,
        /// The password (with -b).
        password: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Cluster membership.
    Cluster {
        #[command(subcommand)]
        what: ShowOnly,
    },
    /// Sessions on every node.
    Session {
        #[command(subcommand)]
        what: SessionCommand,
    },
    /// Subscriptions on every node.
    Subscription {
        #[command(subcommand)]
        what: SubscriptionCommand,
    },
    /// Retained messages.
    Retain {
        #[command(subcommand)]
        what: RetainCommand,
    },
    /// Client listeners on every node.
    Listener {
        #[command(subcommand)]
        what: ShowOnly,
    },
    /// Change runtime settings on every node: `set mqtt.max_inflight=10 …`.
    Set {
        /// `key=value` pairs.
        #[arg(required = true, value_name = "KEY=VALUE")]
        settings: Vec<String>,
    },
    /// Show the log filter, or set it (`info`, `tern_broker=debug,info`).
    LogLevel {
        /// The new filter directive.
        directive: Option<String>,
    },
    /// This node's Prometheus metrics as a table.
    Metrics {
        #[command(subcommand)]
        what: MetricsCommand,
    },
}

/// Where `tern admin` connects and how it prints.
#[derive(Debug, clap::Args)]
struct AdminConn {
    /// Admin API of the node to ask.
    #[arg(
        long,
        global = true,
        env = "TERN_ADMIN_URL",
        default_value = "http://127.0.0.1:8888"
    )]
    url: String,
    /// API key (scope `mgmt`; `metrics` for `metrics show`).
    #[arg(
        long,
        global = true,
        env = "TERN_ADMIN_API_KEY",
        hide_env_values = true
    )]
    api_key: Option<String>,
    /// File holding the API key (a bare key, or `KEY SCOPE…` lines).
    #[arg(long, global = true, env = "TERN_ADMIN_API_KEY_FILE")]
    api_key_file: Option<PathBuf>,
    /// Print the raw JSON.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum ShowOnly {
    /// Show every entry.
    Show,
}

#[derive(Debug, Subcommand)]
enum SessionCommand {
    /// List sessions (online and offline) on every node.
    Show {
        /// Only this client id.
        #[arg(long)]
        client_id: Option<String>,
        /// Only sessions of this user.
        #[arg(long)]
        user: Option<String>,
        /// Only sessions on this node.
        #[arg(long)]
        node: Option<String>,
        /// Only online sessions.
        #[arg(long, conflicts_with = "offline")]
        online: bool,
        /// Only offline sessions.
        #[arg(long)]
        offline: bool,
        /// At most this many rows.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Disconnect a client wherever it is connected.
    Disconnect {
        /// The client id.
        #[arg(long)]
        client_id: String,
        /// Delete the session (and its queue) too.
        #[arg(long)]
        cleanup: bool,
    },
}

#[derive(Debug, Subcommand)]
enum SubscriptionCommand {
    /// List subscriptions on every node.
    Show {
        /// Only this client id.
        #[arg(long)]
        client_id: Option<String>,
        /// Only filters containing this text.
        #[arg(long)]
        topic: Option<String>,
        /// Only subscriptions on this node.
        #[arg(long)]
        node: Option<String>,
        /// At most this many rows.
        #[arg(long)]
        limit: Option<usize>,
    },
}

#[derive(Debug, Subcommand)]
enum RetainCommand {
    /// List retained messages matching an MQTT filter.
    Show {
        /// MQTT topic filter (default `#`).
        #[arg(long)]
        topic: Option<String>,
        /// At most this many rows.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Delete the retained message on a topic, cluster-wide.
    Delete {
        /// The exact topic.
        #[arg(long)]
        topic: String,
    },
}

#[derive(Debug, Subcommand)]
enum MetricsCommand {
    /// Scrape `/metrics` and print name, labels and value.
    Show {
        /// Only metrics whose name contains this text.
        #[arg(long)]
        name: Option<String>,
    },
}

/// The endpoint and key `tern admin` uses.
fn endpoint(conn: &AdminConn) -> anyhow::Result<admin_cli::Endpoint> {
    let api_key = match (&conn.api_key, &conn.api_key_file) {
        (Some(k), _) => Some(k.trim().to_string()),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
            let key = admin_cli::key_from_file(&text)
                .ok_or_else(|| anyhow::anyhow!("{} holds no key", path.display()))?;
            Some(key)
        }
        (None, None) => None,
    };
    Ok(admin_cli::Endpoint {
        url: conn.url.clone(),
        api_key,
    })
}

/// Runs one `tern admin` command; returns what to print.
async fn admin(conn: AdminConn, what: AdminCommand) -> anyhow::Result<String> {
    use admin_cli::{query, show};
    let ep = endpoint(&conn)?;
    let json = conn.json;
    match what {
        AdminCommand::Cluster { .. } => admin_cli::cluster_show(&ep, json).await,
        AdminCommand::Session {
            what:
                SessionCommand::Show {
                    client_id,
                    user,
                    node,
                    online,
                    offline,
                    limit,
                },
        } => {
            let online = (online || offline).then(|| online.to_string());
            let q = query(&[
                ("client_id", client_id),
                ("user", user),
                ("node", node),
                ("online", online),
                ("limit", limit.map(|l| l.to_string())),
            ]);
            let path = format!("/api/v1/session/show{q}");
            show(&ep, &path, admin_cli::SESSION_COLUMNS, json).await
        }
        AdminCommand::Session {
            what: SessionCommand::Disconnect { client_id, cleanup },
        } => {
            let q = query(&[
                ("client_id", Some(client_id)),
                ("cleanup", Some(cleanup.to_string())),
            ]);
            let path = format!("/api/v1/session/disconnect{q}");
            admin_cli::post(&ep, &path, json, admin_cli::disconnected).await
        }
        AdminCommand::Subscription {
            what:
                SubscriptionCommand::Show {
                    client_id,
                    topic,
                    node,
                    limit,
                },
        } => {
            let q = query(&[
                ("client_id", client_id),
                ("topic", topic),
                ("node", node),
                ("limit", limit.map(|l| l.to_string())),
            ]);
            let path = format!("/api/v1/subscription/show{q}");
            show(&ep, &path, admin_cli::SUBSCRIPTION_COLUMNS, json).await
        }
        AdminCommand::Retain {
            what: RetainCommand::Show { topic, limit },
        } => {
            let q = query(&[("topic", topic), ("limit", limit.map(|l| l.to_string()))]);
            let path = format!("/api/v1/retain/show{q}");
            show(&ep, &path, admin_cli::RETAIN_COLUMNS, json).await
        }
        AdminCommand::Retain {
            what: RetainCommand::Delete { topic },
        } => {
            let path = format!("/api/v1/retain/delete{}", query(&[("topic", Some(topic))]));
            admin_cli::post(&ep, &path, json, admin_cli::retain_deleted).await
        }
        AdminCommand::Listener { .. } => {
            show(
                &ep,
                "/api/v1/listener/show",
                admin_cli::LISTENER_COLUMNS,
                json,
            )
            .await
        }
        AdminCommand::Set { settings } => {
            let mut pairs = Vec::new();
            for s in &settings {
                let (k, v) = s
                    .split_once('=')
                    .ok_or_else(|| anyhow::anyhow!("{s:?} is not key=value"))?;
                pairs.push(format!("{}={}", admin_cli::encode(k), admin_cli::encode(v)));
            }
            let path = format!("/api/v1/set?{}", pairs.join("&"));
            admin_cli::post(&ep, &path, json, admin_cli::applied).await
        }
        AdminCommand::LogLevel { directive } => {
            admin_cli::log_level(&ep, directive.as_deref(), json).await
        }
        AdminCommand::Metrics {
            what: MetricsCommand::Show { name },
        } => admin_cli::metrics_show(&ep, name.as_deref(), json).await,
    }
}

async fn run_command(command: Command) -> ExitCode {
    let (conn, what) = match command {
        Command::Admin { conn, what } => (conn, what),
        Command::Passwd {
            create,
            batch,
            delete,
            file,
            user,
            password,
        } => {
            if batch != password.is_some() {
                eprintln!(
                    "tern passwd: -b takes the password as the last argument, and only -b does"
                );
                return ExitCode::from(2);
            }
            return passwd_cli::run(&passwd_cli::Passwd {
                file: &file,
                user: &user,
                create,
                delete,
                password: password.as_deref(),
            });
        }
    };
    match admin(conn, what).await {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tern: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// An error and its causes on one line.
fn one_line(err: &dyn Error) -> String {
    let mut out = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

fn fail(code: u8, what: &str, err: &dyn Error) -> ExitCode {
    // Keep it to one line even if a message carries newlines.
    let message = one_line(err).replace('\n', " ");
    eprintln!("tern: {what}: {message}");
    ExitCode::from(code)
}

fn server_exit_code(err: &ServerError) -> u8 {
    match err {
        ServerError::Config(_) | ServerError::Tls(_) => EXIT_CONFIG,
        _ => 1,
    }
}

/// Writes `{"tcp":…,"tls":…,"admin":…}` via a temporary file and a rename,
/// so a reader never sees a partial file.
fn write_bound_addrs(path: &Path, server: &Server, cluster: Option<&str>) -> std::io::Result<()> {
    let show = |a: Option<SocketAddr>| a.map(|a| a.to_string());
    let json = serde_json::json!({
        "tcp": show(server.tcp_addr()),
        "tls": show(server.tls_addr()),
        "admin": show(server.admin_addr()),
        "cluster": cluster,
    });
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp.{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, json.to_string())?;
    std::fs::rename(&tmp, path)
}

/// SIGTERM and SIGINT, installed before anything binds so a signal sent
/// as soon as the bound-addresses file appears is not fatal.
struct StopSignals {
    term: Signal,
    int: Signal,
}

impl StopSignals {
    fn install() -> std::io::Result<StopSignals> {
        Ok(StopSignals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Resolves on SIGTERM, SIGINT, or when the server's token is cancelled
    /// from inside.
    async fn wait(mut self, server: &Server) {
        let token = server.shutdown_token();
        tokio::select! {
            _ = self.term.recv() => tracing::info!("SIGTERM received"),
            _ = self.int.recv() => tracing::info!("SIGINT received"),
            _ = token.cancelled() => {}
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(command) = args.command {
        return run_command(command).await;
    }
    if args.print_default_config {
        print!("{}", Config::default_toml());
        return ExitCode::SUCCESS;
    }
    let log = log_control::install();

    let config = match Config::load(args.config.as_deref(), &ProcessEnv) {
        Ok(config) => config,
        Err(e) => return fail(EXIT_CONFIG, "configuration error", &e),
    };
    if args.check_config {
        if config.listeners.tls.enabled {
            if let Err(e) = tern_broker::tls::acceptor(&config.listeners.tls) {
                return fail(EXIT_CONFIG, "configuration error", &e);
            }
        }
        if let Err(e) = tern_cluster::transport::MeshTls::from_config(&config.cluster.tls) {
            return fail(EXIT_CONFIG, "configuration error", &e);
        }
        println!("configuration ok");
        return ExitCode::SUCCESS;
    }

    let signals = match StopSignals::install() {
        Ok(signals) => signals,
        Err(e) => return fail(1, "cannot install signal handlers", &e),
    };
    let cluster = match config.cluster.enabled {
        true => match Cluster::new(ClusterOptions::from_config(&config), Arc::new(TcpTransport)) {
            Ok(c) => Some(c),
            Err(e) => return fail(EXIT_CONFIG, "configuration error", &e),
        },
        false => None,
    };
    let background = CancellationToken::new();
    let _stop_background = background.clone().drop_guard();
    let readiness = Readiness::new();
    let mut source = None;
    if let Some(c) = &cluster {
        match mesh::peer_source(&config, background.clone()) {
            Ok((peers, status)) => {
                mesh::track_readiness(&readiness, status, c.clone(), background.clone());
                source = Some(peers);
            }
            Err(e) => return fail(EXIT_CONFIG, "configuration error", &e),
        }
    }
    let mut server = match Server::start_logged(config, readiness, Some(log), |broker| {
        if let Some(c) = &cluster {
            c.attach(broker);
        }
    })
    .await
    {
        Ok(server) => server,
        Err(e) => return fail(server_exit_code(&e), "cannot start", &e),
    };
    let mut cluster_addr = None;
    if let (Some(c), Some(peers)) = (&cluster, source) {
        match c.start(None, peers).await {
            Ok(addr) => cluster_addr = Some(addr),
            Err(e) => {
                let _ = server.shutdown().await;
                return fail(1, "cannot start the cluster mesh", &e);
            }
        }
    }
    tracing::info!(
        tcp = ?server.tcp_addr(),
        tls = ?server.tls_addr(),
        admin = ?server.admin_addr(),
        cluster = ?cluster_addr,
        "tern listening"
    );
    if let Some(path) = &args.bound_addrs_file {
        if let Err(e) = write_bound_addrs(path, &server, cluster_addr.as_deref()) {
            if let Some(c) = &cluster {
                c.shutdown().await;
            }
            let _ = server.shutdown().await;
            return fail(1, &format!("cannot write {}", path.display()), &e);
        }
    }
    signals.wait(&server).await;
    // Clients first (sessions go offline, still subscribed here), then the
    // sessions to peers and the leave, then the admin listener.
    let deadline = server.disconnect_clients().await;
    if let Some(c) = &cluster {
        let report = c.drain(deadline).await;
        if !report.failed.is_empty() {
            tracing::warn!(failed = report.failed.len(), "drain left sessions behind");
        }
    }
    background.cancel();
    match server.shutdown().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(1, "shutdown failed", &e),
    }
}
