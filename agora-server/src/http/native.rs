//! The console's actions as native commands: each goes through a native session of its
//! own (`conn::serve_client` over two in-process pipes, as an MQTT bridge's does), as
//! the HTTP user, so the broker's own rules, permissions and code carry it out and no
//! command logic exists twice.

use std::net::SocketAddr;
use std::sync::Arc;

use agora_protocol::bytes::BytesMut;
use agora_protocol::{decode_server_with, encode, ClientFrame, Limits, ServerFrame};
use futures_lite::{future, AsyncReadExt, AsyncWriteExt};

use crate::conn::{serve_client, Front, Input};
use crate::shipper::Writer;
use crate::Broker;

/// Sends `frames` as `user` (`None` with no users configured) and returns the answer to
/// the last one (each must carry a request id); `None` if the session ended first.
pub(crate) async fn ask(
    broker: &Broker,
    user: Option<Arc<crate::auth::User>>,
    peer: SocketAddr,
    frames: &[ClientFrame],
) -> Option<ServerFrame> {
    let want = frames.last()?.request_id();
    let pipe = broker.config.max_payload + broker.config.max_line + 4096;
    let (session_in, mut to_session) = piper::pipe(pipe);
    let (mut from_session, session_out) = piper::pipe(pipe);
    // Never closed: the session ends when its input does.
    let (_keep, stop) = async_channel::bounded::<()>(1);
    let native = serve_client(
        broker,
        Input::Pipe(session_in, user, Front::Http),
        Writer::Pipe(session_out),
        peer,
        stop,
    );
    let limits = Limits {
        max_line: broker.config.max_line,
        max_payload: broker.config.max_payload,
    };
    let client = async move {
        let mut b = BytesMut::new();
        for f in frames {
            encode(f, &mut b);
        }
        let write = async {
            let _ = to_session.write_all(&b).await;
            // Held open until the answer is read, then dropped: the session ends.
            future::pending::<()>().await;
        };
        let read = async {
            let mut buf = BytesMut::new();
            loop {
                while let Ok(Some(f)) = decode_server_with(&mut buf, &limits) {
                    let answers = match &f {
                        ServerFrame::Ok { rid }
                        | ServerFrame::PubAck { rid, .. }
                        | ServerFrame::ChainResp { rid, .. } => *rid == want,
                        ServerFrame::Err(e) => e.rid == want,
                        _ => false,
                    };
                    if answers {
                        return Some(f);
                    }
                }
                let len = buf.len();
                buf.resize(len + 16 * 1024, 0);
                match from_session.read(&mut buf[len..]).await {
                    Ok(n) if n > 0 => buf.truncate(len + n),
                    _ => return None,
                }
            }
        };
        future::or(read, async {
            write.await;
            None
        })
        .await
    };
    future::zip(native, client).await.1
}
