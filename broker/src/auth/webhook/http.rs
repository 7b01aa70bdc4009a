//! The HTTP side of webhooks: one pooled HTTP/1.1 client (hyper-util over
//! hyper-rustls, so `https://` endpoints need no system OpenSSL; roots from
//! the system store) and one POST with a deadline.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::sync::Arc;
use std::time::Duration;

/// Largest answer body read; a hook answer is a few bytes of JSON.
const MAX_BODY: usize = 64 * 1024;
/// Idle pooled connections per endpoint host.
const POOL_IDLE: usize = 32;

/// Why a call produced no answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No answer within the timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// Connecting or talking to the endpoint failed.
    #[error("request failed: {0}")]
    Request(String),
    /// An answer other than 200.
    #[error("HTTP status {0}")]
    Status(u16),
    /// The body could not be read.
    #[error("reading the answer: {0}")]
    Body(String),
}

/// A 200 answer.
#[derive(Debug)]
pub struct Answer {
    /// The body.
    pub body: Bytes,
    /// Its `cache-control` header, if any.
    pub cache_control: Option<String>,
}

/// The client every webhook shares.
#[derive(Clone)]
pub struct HttpClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl HttpClient {
    /// A client for `http://` and `https://`; `load_roots` reads the
    /// system's CA certificates (needed for `https://` only).
    pub fn new(load_roots: bool) -> Result<HttpClient, rustls::Error> {
        let mut roots = rustls::RootCertStore::empty();
        if load_roots {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::warn!(error = %e, "webhooks: reading system CA certificates");
            }
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                tracing::warn!("webhooks: no system CA certificates; https endpoints will fail");
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(POOL_IDLE)
            .build(connector);
        Ok(HttpClient { client })
    }

    /// POSTs `body` as JSON with the `vernemq-hook` header; everything,
    /// connecting included, within `timeout`.
    pub async fn post(
        &self,
        uri: &http::Uri,
        hook: &'static str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Answer, CallError> {
        let req = http::Request::post(uri.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header("vernemq-hook", hook)
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| CallError::Request(e.to_string()))?;
        let call = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| CallError::Request(error_chain(&e)))?;
            let status = resp.status().as_u16();
            let cache_control = resp
                .headers()
                .get(http::header::CACHE_CONTROL)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body = Limited::new(resp.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| CallError::Body(e.to_string()))?
                .to_bytes();
            if status != 200 {
                return Err(CallError::Status(status));
            }
            Ok(Answer {
                body,
                cache_control,
            })
        };
        tokio::time::timeout(timeout, call)
            .await
            .map_err(|_| CallError::Timeout(timeout))?
    }
}

/// The error and its causes on one line ("client error (Connect): tcp
/// connect error: Connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}
