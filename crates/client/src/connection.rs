//! Opening one connection: TCP connect, INFO, TLS (when the URL, the options or the server
//! ask for it), CONNECT (with the nonce signed for nkey / JWT users), PING/PONG, all within the
//! connect timeout. The result is a [`RawConnection`] whose read buffer may already hold bytes
//! that followed the PONG.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use rustls_pki_types::ServerName;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use crate::error::{ConnectError, ConnectErrorKind};
use crate::options::{ConnectOptions, ServerAddr};
use crate::proto::{self, ServerOp};

/// What the server says about itself in INFO. Unknown fields are ignored, missing ones default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct ServerInfo {
    pub server_id: String,
    pub server_name: String,
    pub version: String,
    pub proto: i8,
    pub go: String,
    pub host: String,
    pub port: u16,
    pub headers: bool,
    pub max_payload: usize,
    pub auth_required: bool,
    pub tls_required: bool,
    pub tls_available: bool,
    pub client_id: u64,
    pub client_ip: String,
    pub nonce: Option<String>,
    pub cluster: Option<String>,
    pub connect_urls: Vec<String>,
    /// Lame duck mode: the server will close this connection soon.
    pub ldm: bool,
    pub jetstream: bool,
}

impl ServerInfo {
    pub fn parse(json: &[u8]) -> Result<ServerInfo, serde_json::Error> {
        serde_json::from_slice(json)
    }
}

/// The CONNECT object.
#[derive(Debug, Serialize)]
struct ConnectInfo<'a> {
    verbose: bool,
    pedantic: bool,
    tls_required: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    lang: &'static str,
    version: &'static str,
    protocol: u8,
    echo: bool,
    headers: bool,
    no_responders: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pass: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    auth_token: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nkey: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    jwt: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sig: Option<&'a str>,
}

/// The byte stream under a connection: plain TCP or TLS over TCP. Implements tokio's
/// `AsyncRead` and `AsyncWrite`.
pub struct Transport {
    inner: Inner,
}

enum Inner {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Transport {
    /// Wraps a plain TCP stream (for tools that do their own handshake).
    pub fn plain(tcp: TcpStream) -> Transport {
        Transport {
            inner: Inner::Plain(tcp),
        }
    }

    /// Whether the stream is TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self.inner, Inner::Tls(_))
    }
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.is_tls() {
            "Transport(tls)"
        } else {
            "Transport(plain)"
        })
    }
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().inner {
            Inner::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Inner::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().inner {
            Inner::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Inner::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().inner {
            Inner::Plain(s) => Pin::new(s).poll_flush(cx),
            Inner::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().inner {
            Inner::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Inner::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().inner {
            Inner::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Inner::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.inner {
            Inner::Plain(s) => s.is_write_vectored(),
            Inner::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// A connection whose handshake is complete (INFO read, TLS if any, CONNECT sent, PONG
/// received): see [`ConnectOptions::connect_raw`].
#[derive(Debug)]
pub struct RawConnection {
    pub stream: Transport,
    /// Bytes the server sent after the PONG, not yet parsed.
    pub read_buf: BytesMut,
    /// The server's INFO (the latest one, if it sent another during the handshake).
    pub info: ServerInfo,
    pub addr: ServerAddr,
}

/// Connects to `addr` and completes the handshake, all within `opts.connect_timeout`.
pub(crate) async fn handshake(
    addr: &ServerAddr,
    opts: &ConnectOptions,
) -> Result<RawConnection, ConnectError> {
    match tokio::time::timeout(opts.connect_timeout, handshake_inner(addr, opts)).await {
        Ok(r) => r,
        Err(_) => Err(ConnectError::with_source(
            ConnectErrorKind::TimedOut,
            format!(
                "{addr} did not complete the handshake in {:?}",
                opts.connect_timeout
            ),
        )),
    }
}

/// Upgrades to TLS after INFO, verifying the server's certificate against `addr.host`.
async fn start_tls(
    tcp: TcpStream,
    addr: &ServerAddr,
    opts: &ConnectOptions,
) -> Result<Transport, ConnectError> {
    let config = crate::tls::client_config(&opts.tls)?;
    let name = ServerName::try_from(addr.host.clone()).map_err(|e| {
        ConnectError::with_source(
            ConnectErrorKind::Tls,
            format!(
                "{addr}: {:?} is not a valid TLS server name: {e}",
                addr.host
            ),
        )
    })?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| {
            ConnectError::with_source(
                ConnectErrorKind::Tls,
                format!("{addr}: TLS handshake failed: {e}"),
            )
        })?;
    Ok(Transport {
        inner: Inner::Tls(Box::new(tls)),
    })
}

async fn handshake_inner(
    addr: &ServerAddr,
    opts: &ConnectOptions,
) -> Result<RawConnection, ConnectError> {
    let io_err =
        |e: io::Error| ConnectError::with_source(ConnectErrorKind::Io, format!("{addr}: {e}"));
    let mut tcp = TcpStream::connect((addr.host.as_str(), addr.port))
        .await
        .map_err(io_err)?;
    let _ = tcp.set_nodelay(true);
    let mut buf = BytesMut::with_capacity(8192);

    let info = match read_op(&mut tcp, &mut buf, addr).await? {
        ServerOp::Info(json) => ServerInfo::parse(&json).map_err(|e| {
            ConnectError::with_source(ConnectErrorKind::Protocol, format!("{addr}: bad INFO: {e}"))
        })?,
        other => {
            return Err(ConnectError::with_source(
                ConnectErrorKind::Protocol,
                format!("{addr}: expected INFO, got {other:?}"),
            ));
        }
    };
    let want_tls = info.tls_required || addr.tls || opts.tls.configured();
    let mut stream = if want_tls {
        if !info.tls_required && !info.tls_available {
            return Err(ConnectError::with_source(
                ConnectErrorKind::TlsRequired,
                format!("{addr}: TLS was asked for, but the server does not offer it"),
            ));
        }
        if !buf.is_empty() {
            return Err(ConnectError::with_source(
                ConnectErrorKind::Protocol,
                format!("{addr}: unexpected data after INFO before the TLS handshake"),
            ));
        }
        start_tls(tcp, addr, opts).await?
    } else {
        Transport::plain(tcp)
    };

    let (user, pass) = match (&addr.user, &opts.user) {
        (Some(u), _) => (Some(u.as_str()), addr.password.as_deref()),
        (None, Some(u)) => (Some(u.as_str()), opts.password.as_deref()),
        (None, None) => (None, None),
    };
    // A URL with only a user part (`nats://token@host`) carries a token, as in nats.go.
    let (user, pass, token) = match (user, pass, &opts.token) {
        (Some(u), None, None) if addr.user.is_some() => (None, None, Some(u)),
        (u, p, t) => (u, p, t.as_deref()),
    };
    let signed = crate::auth::sign(opts, info.nonce.as_deref().filter(|n| !n.is_empty()))
        .map_err(|e| ConnectError::with_source(e.kind(), format!("{addr}: {e}")))?;
    let connect = ConnectInfo {
        verbose: false,
        pedantic: false,
        tls_required: stream.is_tls(),
        name: opts.name.as_deref(),
        lang: "rust",
        version: env!("CARGO_PKG_VERSION"),
        protocol: 1,
        echo: !opts.no_echo,
        headers: true,
        no_responders: true,
        user,
        pass,
        auth_token: token,
        nkey: signed.nkey.as_deref(),
        jwt: signed.jwt.as_deref(),
        sig: signed.sig.as_deref(),
    };
    let json = serde_json::to_vec(&connect).expect("CONNECT serializes");
    let mut out = BytesMut::with_capacity(json.len() + 16);
    proto::encode_connect(&mut out, &json);
    out.extend_from_slice(proto::PING);
    stream.write_all(&out).await.map_err(io_err)?;
    stream.flush().await.map_err(io_err)?;

    let mut info = info;
    loop {
        match read_op(&mut stream, &mut buf, addr).await? {
            ServerOp::Pong => break,
            ServerOp::Err(text) => {
                let kind = if text
                    .to_ascii_lowercase()
                    .starts_with("authorization violation")
                {
                    ConnectErrorKind::AuthorizationViolation
                } else {
                    ConnectErrorKind::ServerError
                };
                return Err(ConnectError::with_source(
                    kind,
                    format!("{addr}: -ERR '{text}'"),
                ));
            }
            ServerOp::Info(json) => {
                if let Ok(i) = ServerInfo::parse(&json) {
                    info = i;
                }
            }
            ServerOp::Ping => {
                stream.write_all(proto::PONG).await.map_err(io_err)?;
                stream.flush().await.map_err(io_err)?;
            }
            ServerOp::Ok | ServerOp::Msg { .. } => {}
        }
    }
    Ok(RawConnection {
        stream,
        read_buf: buf,
        info,
        addr: addr.clone(),
    })
}

async fn read_op(
    stream: &mut (impl AsyncRead + Unpin),
    buf: &mut BytesMut,
    addr: &ServerAddr,
) -> Result<ServerOp, ConnectError> {
    loop {
        match proto::parse_server_op(buf) {
            Ok(Some(op)) => return Ok(op),
            Ok(None) => {}
            Err(e) => {
                return Err(ConnectError::with_source(
                    ConnectErrorKind::Protocol,
                    format!("{addr}: {e}"),
                ));
            }
        }
        buf.reserve(8192);
        let n = stream
            .read_buf(buf)
            .await
            .map_err(|e| ConnectError::with_source(ConnectErrorKind::Io, format!("{addr}: {e}")))?;
        if n == 0 {
            return Err(ConnectError::with_source(
                ConnectErrorKind::Io,
                format!("{addr}: connection closed by the server during the handshake"),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_parses_with_unknown_and_missing_fields() {
        let i = ServerInfo::parse(
            br#"{"server_id":"N1","version":"2.11.0","proto":1,"headers":true,"max_payload":1048576,"connect_urls":["a:1"],"ldm":true,"xkey":"zzz"}"#,
        )
        .unwrap();
        assert_eq!(i.server_id, "N1");
        assert_eq!(i.connect_urls, ["a:1"]);
        assert!(i.ldm && i.headers && !i.auth_required);
        assert_eq!(i.max_payload, 1048576);
    }

    #[test]
    fn connect_json_omits_absent_credentials() {
        let c = ConnectInfo {
            verbose: false,
            pedantic: false,
            tls_required: false,
            name: None,
            lang: "rust",
            version: "0",
            protocol: 1,
            echo: true,
            headers: true,
            no_responders: true,
            user: None,
            pass: None,
            auth_token: Some("t"),
            nkey: None,
            jwt: None,
            sig: None,
        };
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(
            json,
            r#"{"verbose":false,"pedantic":false,"tls_required":false,"lang":"rust","version":"0","protocol":1,"echo":true,"headers":true,"no_responders":true,"auth_token":"t"}"#
        );
    }
}
