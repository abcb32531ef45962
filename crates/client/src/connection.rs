//! Opening one connection: TCP connect, INFO, CONNECT, PING/PONG, all within the connect
//! timeout. The result is an [`Established`] connection whose read buffer may already hold
//! bytes that followed the PONG.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
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
}

/// The byte stream under a connection. Plain TCP today; TLS becomes another variant.
pub(crate) enum Transport {
    Plain(TcpStream),
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Transport::Plain(s) => s.is_write_vectored(),
        }
    }
}

pub(crate) struct Established {
    pub stream: Transport,
    pub read_buf: BytesMut,
    pub info: ServerInfo,
    pub addr: ServerAddr,
}

/// Connects to `addr` and completes the handshake, all within `opts.connect_timeout`.
pub(crate) async fn handshake(
    addr: &ServerAddr,
    opts: &ConnectOptions,
) -> Result<Established, ConnectError> {
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

async fn handshake_inner(
    addr: &ServerAddr,
    opts: &ConnectOptions,
) -> Result<Established, ConnectError> {
    let io_err =
        |e: io::Error| ConnectError::with_source(ConnectErrorKind::Io, format!("{addr}: {e}"));
    let tcp = TcpStream::connect((addr.host.as_str(), addr.port))
        .await
        .map_err(io_err)?;
    let _ = tcp.set_nodelay(true);
    let mut stream = Transport::Plain(tcp);
    let mut buf = BytesMut::with_capacity(8192);

    let info = match read_op(&mut stream, &mut buf, addr).await? {
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
    if info.tls_required || addr.tls {
        return Err(ConnectError::with_source(
            ConnectErrorKind::TlsRequired,
            format!("{addr}: TLS is not supported by this client yet"),
        ));
    }

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
    let connect = ConnectInfo {
        verbose: false,
        pedantic: false,
        tls_required: false,
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
    };
    let json = serde_json::to_vec(&connect).expect("CONNECT serializes");
    let mut out = BytesMut::with_capacity(json.len() + 16);
    proto::encode_connect(&mut out, &json);
    out.extend_from_slice(proto::PING);
    stream.write_all(&out).await.map_err(io_err)?;

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
            ServerOp::Ping => stream.write_all(proto::PONG).await.map_err(io_err)?,
            ServerOp::Ok | ServerOp::Msg { .. } => {}
        }
    }
    Ok(Established {
        stream,
        read_buf: buf,
        info,
        addr: addr.clone(),
    })
}

async fn read_op(
    stream: &mut Transport,
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
        };
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(
            json,
            r#"{"verbose":false,"pedantic":false,"tls_required":false,"lang":"rust","version":"0","protocol":1,"echo":true,"headers":true,"no_responders":true,"auth_token":"t"}"#
        );
    }
}
