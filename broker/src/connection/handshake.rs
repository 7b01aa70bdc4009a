//! CONNECT → CONNACK: client-id rules, keep-alive limits, authentication,
//! session expiry, and claiming the session. Pure decisions where possible.

use super::{ConnInfo, FLUSH_TIMEOUT};
use crate::auth::{AuthDecision, AuthRequest, Client, Denied, PublishInfo};
use crate::broker::{Attached, Broker};
use crate::codec::{self, reason, ConnAck, Connect, Packet, Properties, Protocol};
use crate::config::Config;
use crate::session::Will;
use crate::trie::ClientId;
use bytes::BytesMut;
use std::sync::Arc;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// A refused CONNECT: the CONNACK code to send before closing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refusal {
    /// 5.0 reason code or 3.x return code, already chosen for the protocol.
    pub code: u8,
    /// Why, for the log.
    pub why: &'static str,
}

fn refuse(protocol: Protocol, v5: u8, v3: u8, why: &'static str) -> Refusal {
    Refusal {
        code: if protocol.is_v5() { v5 } else { v3 },
        why,
    }
}

/// The parameters a connection runs with once CONNECT is accepted.
pub(crate) struct Accepted {
    pub client_id: ClientId,
    /// The identity the authenticator recorded, shared with the session's
    /// [`ConnMeta`](crate::broker::ConnMeta).
    pub username: Option<Arc<str>>,
    /// Keep-alive in force, seconds (0: none).
    pub keep_alive: u16,
    pub attached: Attached,
    pub will: Option<Will>,
    /// Largest packet the client accepts.
    pub max_out_packet: usize,
    /// QoS 1/2 messages in flight towards the client at most.
    pub out_window: usize,
    /// Topic aliases the client accepts from us.
    pub out_alias_max: u16,
    pub connack: ConnAck,
}

/// Client-id and keep-alive rules of each version, with the values in force.
/// Returns the client id to use and whether the server assigned it.
pub(crate) fn check_identity(c: &Connect, config: &Config) -> Result<(String, bool), Refusal> {
    let p = c.protocol;
    if c.client_id.len() > config.mqtt.max_client_id_len {
        return Err(refuse(
            p,
            reason::CLIENT_IDENTIFIER_NOT_VALID,
            reason::v3::IDENTIFIER_REJECTED,
            "client id too long",
        ));
    }
    if !c.client_id.is_empty() {
        return Ok((c.client_id.clone(), false));
    }
    match p {
        Protocol::V31 => Err(refuse(
            p,
            0,
            reason::v3::IDENTIFIER_REJECTED,
            "empty client id in 3.1",
        )),
        Protocol::V311 if !c.clean_start => Err(refuse(
            p,
            0,
            reason::v3::IDENTIFIER_REJECTED,
            "empty client id with clean session 0",
        )),
        _ => Ok((format!("tern-{:016x}", rand::random::<u64>()), true)),
    }
}

/// The keep-alive in force and, for 5.0, the Server Keep Alive to announce.
/// A 3.x client asking for more than the maximum (or none) cannot be told
/// otherwise, so it is refused, as Mosquitto does.
pub(crate) fn keep_alive(c: &Connect, config: &Config) -> Result<(u16, Option<u16>), Refusal> {
    let max = config.mqtt.max_keep_alive;
    if max == 0 || (c.keep_alive != 0 && c.keep_alive <= max) {
        return Ok((c.keep_alive, None));
    }
    if c.protocol.is_v5() {
        Ok((max, Some(max)))
    } else {
        Err(refuse(
            c.protocol,
            0,
            reason::v3::IDENTIFIER_REJECTED,
            "keep alive above the maximum",
        ))
    }
}

/// Session expiry in force: 5.0 asks (capped); 3.x persistent sessions use
/// `persistent_client_expiration` (0 = never).
pub(crate) fn session_expiry(c: &Connect, config: &Config) -> u32 {
    if c.protocol.is_v5() {
        c.properties
            .session_expiry_interval
            .unwrap_or(0)
            .min(config.mqtt.max_session_expiry)
    } else if c.clean_start {
        0
    } else {
        match config.mqtt.persistent_client_expiration {
            0 => u32::MAX,
            s => s,
        }
    }
}

fn denied_code(p: Protocol, d: Denied) -> Refusal {
    match d {
        Denied::BadCredentials => refuse(
            p,
            reason::BAD_USER_NAME_OR_PASSWORD,
            reason::v3::BAD_USER_NAME_OR_PASSWORD,
            "bad credentials",
        ),
        Denied::NotAuthorized => refuse(
            p,
            reason::NOT_AUTHORIZED,
            reason::v3::NOT_AUTHORIZED,
            "not authorized",
        ),
        Denied::BadAuthenticationMethod => refuse(
            p,
            reason::BAD_AUTHENTICATION_METHOD,
            reason::v3::NOT_AUTHORIZED,
            "bad authentication method",
        ),
    }
}

/// Runs every CONNECT check, then claims the session.
pub(crate) async fn accept(
    c: Connect,
    info: &ConnInfo,
    broker: &Broker,
    kick: CancellationToken,
) -> Result<Accepted, Refusal> {
    let config = broker.config();
    let p = c.protocol;
    let (client_id, assigned) = check_identity(&c, config)?;
    let (keep_alive, server_keep_alive) = keep_alive(&c, config)?;
    if let Some(w) = &c.will {
        if w.retain && !config.mqtt.retain_available {
            return Err(refuse(
                p,
                reason::RETAIN_NOT_SUPPORTED,
                reason::v3::NOT_AUTHORIZED,
                "will retain unsupported",
            ));
        }
    }
    let decision = broker
        .auth()
        .authenticate(AuthRequest {
            client_id: &client_id,
            username: c.username.as_deref(),
            password: c.password.as_deref(),
            peer: info.peer,
            clean_start: c.clean_start,
            cert_cn: info.cert_cn.as_deref(),
            method: c.properties.authentication_method.as_deref(),
            data: c.properties.authentication_data.as_ref(),
        })
        .await;
    let username = match decision {
        AuthDecision::Allow { username } => username.map(Arc::<str>::from),
        AuthDecision::Deny(d) => {
            broker.metrics().auth_failures.inc();
            // Never log the password.
            tracing::warn!(client_id = %client_id, username = ?c.username, peer = %info.peer, reason = ?d, "authentication failed");
            return Err(denied_code(p, d));
        }
    };
    if let Some(w) = &c.will {
        let client = Client {
            client_id: &client_id,
            username: username.as_deref(),
            addr: info.peer.ip(),
        };
        let will = PublishInfo {
            topic: &w.topic,
            qos: w.qos,
            retain: w.retain,
            payload: &w.payload,
        };
        if !broker.authz().check_publish(&client, &will).decide().await {
            return Err(refuse(
                p,
                reason::NOT_AUTHORIZED,
                reason::v3::NOT_AUTHORIZED,
                "will topic not authorized",
            ));
        }
    }
    let expiry = session_expiry(&c, config);
    let will = c.will.map(|w| Will {
        topic: Arc::from(w.topic),
        payload: w.payload,
        qos: w.qos,
        retain: w.retain,
        delay: w.properties.will_delay_interval.unwrap_or(0),
        properties: Box::new(w.properties),
    });
    let client_id: ClientId = Arc::from(client_id);
    // The client id becomes live here only: other nodes close theirs and
    // hand the session over (or discard it on clean start).
    match broker.remote().claim(&client_id, c.clean_start).await {
        Ok(Some(moved)) => {
            broker.import_session(moved);
        }
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(error = %e, "CONNECT refused: cluster unavailable");
            return Err(refuse(
                p,
                reason::SERVER_UNAVAILABLE,
                reason::v3::SERVER_UNAVAILABLE,
                "cluster unavailable",
            ));
        }
    }
    let attached = broker.attach_with(&client_id, c.clean_start, kick);
    {
        let mut st = attached.cell.state.lock();
        st.data.expiry_interval = expiry;
        st.data.will = will.clone().map(Box::new);
        st.conn = Some(crate::broker::ConnMeta {
            username: username.clone(),
            peer: info.peer.into(),
            listener: info.listener,
            protocol: p.level(),
            clean_start: c.clean_start,
        });
        st.save();
    }
    let mut props = Properties::default();
    if p.is_v5() {
        if assigned {
            props.assigned_client_identifier = Some(client_id.to_string());
        }
        props.server_keep_alive = server_keep_alive;
        if c.properties.session_expiry_interval.unwrap_or(0) != expiry {
            props.session_expiry_interval = Some(expiry);
        }
        props.receive_maximum = Some(config.mqtt.receive_maximum);
        props.maximum_packet_size = Some(config.mqtt.max_packet_size);
        props.topic_alias_maximum = Some(config.mqtt.topic_alias_maximum).filter(|&m| m > 0);
        if !config.mqtt.retain_available {
            props.retain_available = Some(0);
        }
    }
    let client_rm = usize::from(c.properties.receive_maximum.unwrap_or(u16::MAX));
    Ok(Accepted {
        keep_alive,
        will,
        max_out_packet: c
            .properties
            .maximum_packet_size
            .map_or(usize::MAX, |m| m as usize),
        out_window: client_rm
            .min(usize::from(broker.knobs().max_inflight()))
            .max(1),
        out_alias_max: if p.is_v5() {
            c.properties.topic_alias_maximum.unwrap_or(0)
        } else {
            0
        },
        connack: ConnAck {
            session_present: attached.session_present,
            code: 0,
            properties: props,
        },
        client_id,
        username,
        attached,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Properties;

    fn connect(p: Protocol, id: &str, clean: bool, ka: u16) -> Connect {
        Connect {
            protocol: p,
            clean_start: clean,
            keep_alive: ka,
            client_id: id.into(),
            will: None,
            username: None,
            password: None,
            properties: Properties::default(),
        }
    }

    #[test]
    fn empty_client_id_rules() {
        let cfg = Config::default();
        assert_eq!(
            check_identity(&connect(Protocol::V31, "", true, 0), &cfg).map_err(|r| r.code),
            Err(2)
        );
        assert_eq!(
            check_identity(&connect(Protocol::V311, "", false, 0), &cfg).map_err(|r| r.code),
            Err(2)
        );
        assert!(check_identity(&connect(Protocol::V311, "", true, 0), &cfg).is_ok_and(|(_, a)| a));
        assert!(check_identity(&connect(Protocol::V5, "", false, 0), &cfg).is_ok_and(|(_, a)| a));
        assert!(check_identity(&connect(Protocol::V5, "x", false, 0), &cfg)
            .is_ok_and(|(id, a)| id == "x" && !a));
    }

    #[test]
    fn keep_alive_limits() {
        let mut cfg = Config::default();
        assert_eq!(
            keep_alive(&connect(Protocol::V5, "x", true, 100), &cfg),
            Ok((100, None))
        );
        cfg.mqtt.max_keep_alive = 60;
        assert_eq!(
            keep_alive(&connect(Protocol::V5, "x", true, 100), &cfg),
            Ok((60, Some(60)))
        );
        assert_eq!(
            keep_alive(&connect(Protocol::V5, "x", true, 0), &cfg),
            Ok((60, Some(60)))
        );
        assert_eq!(
            keep_alive(&connect(Protocol::V311, "x", true, 30), &cfg),
            Ok((30, None))
        );
        assert!(keep_alive(&connect(Protocol::V311, "x", true, 100), &cfg).is_err());
    }

    #[test]
    fn expiry_per_version() {
        let mut cfg = Config::default();
        assert_eq!(
            session_expiry(&connect(Protocol::V311, "x", true, 0), &cfg),
            0
        );
        assert_eq!(
            session_expiry(&connect(Protocol::V311, "x", false, 0), &cfg),
            u32::MAX
        );
        cfg.mqtt.persistent_client_expiration = 3600;
        assert_eq!(
            session_expiry(&connect(Protocol::V311, "x", false, 0), &cfg),
            3600
        );
        let mut c = connect(Protocol::V5, "x", false, 0);
        assert_eq!(session_expiry(&c, &cfg), 0);
        c.properties.session_expiry_interval = Some(u32::MAX);
        cfg.mqtt.max_session_expiry = 100;
        assert_eq!(session_expiry(&c, &cfg), 100);
    }
}

/// The protocol level byte of a partially read CONNECT, if it got that far.
fn sniff_level(buf: &[u8]) -> Option<u8> {
    // Fixed header: type byte, 1–4 length bytes; then the protocol name.
    let mut i = 1;
    while *buf.get(i)? & 0x80 != 0 {
        i += 1;
    }
    let name_len = usize::from(u16::from_be_bytes([*buf.get(i + 1)?, *buf.get(i + 2)?]));
    buf.get(i + 3 + name_len).copied()
}

/// The reaction to a first packet that cannot be accepted: an unknown
/// protocol level gets a 3.1.1 CONNACK 0x01; a malformed 5.0 CONNECT gets a
/// 5.0 CONNACK with the reason; anything else is simply closed.
pub(super) async fn refuse_undecodable<S: AsyncWrite + Unpin>(
    io: &mut S,
    rbuf: &[u8],
    e: &codec::DecodeError,
    broker: &Broker,
) {
    use codec::DecodeError as E;
    broker.metrics().protocol_errors.inc();
    broker.metrics().connections_refused.inc();
    tracing::info!(error = %e, "first packet refused");
    let (protocol, code) = match e {
        E::UnsupportedProtocolLevel(_) => {
            (Protocol::V311, reason::v3::UNACCEPTABLE_PROTOCOL_VERSION)
        }
        E::InvalidProtocolName | E::FirstPacketNotConnect => return,
        E::Malformed("connection closed before CONNECT") => return,
        _ if sniff_level(rbuf) == Some(5) => (Protocol::V5, e.reason_code()),
        _ => return,
    };
    let ack = ConnAck {
        session_present: false,
        code,
        properties: Properties::default(),
    };
    let mut w = BytesMut::new();
    if codec::encode(&Packet::ConnAck(ack), protocol, &mut w).is_ok() {
        let _ = tokio::time::timeout(FLUSH_TIMEOUT, io.write_all(&w)).await;
    }
}

#[cfg(test)]
mod sniff_tests {
    use super::sniff_level;

    #[test]
    fn sniffs_the_protocol_level() {
        let c = [0x10, 0x10, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02];
        assert_eq!(sniff_level(&c), Some(5));
        assert_eq!(sniff_level(&c[..5]), None);
        assert_eq!(sniff_level(&[0x10, 0xff]), None);
    }
}
