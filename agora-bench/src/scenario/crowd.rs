//! `wildcard-fanout`'s crowd: subscriptions that match nothing the run publishes.

use super::*;

/// Subscriptions no message of the run matches, made on plain sockets of the system's
/// protocol (1,000 to a connection: Agora's default limit is 1,024), held open while
/// the guard lives. They are what a subscription index must not scan.
pub(super) fn crowd(server: &ServerView, patterns: &[String]) -> Result<Vec<TcpStream>> {
    use std::io::{Read, Write};
    let agora = matches!(
        server.system,
        System::Agora | System::AgoraDedicated | System::AgoraLean
    );
    let nats = matches!(server.system, System::Nats | System::NatsLean);
    if !agora && !nats {
        return Err(format!("{} has no wildcard crowd", server.system.name()));
    }
    let mut held = Vec::new();
    for (c, chunk) in patterns.chunks(1000).enumerate() {
        let e = |e: std::io::Error| format!("crowd connection {c}: {e}");
        let mut s = TcpStream::connect(&server.addr).map_err(e)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(e)?;
        let mut out = Vec::new();
        if nats {
            out.extend_from_slice(b"CONNECT {\"verbose\":false}\r\n");
        }
        for (i, p) in chunk.iter().enumerate() {
            let line = match agora {
                true => format!("SUB topic:{p} {}\r\n", i + 1),
                false => format!("SUB {p} {}\r\n", i + 1),
            };
            out.extend_from_slice(line.as_bytes());
        }
        let until: &[u8] = match agora {
            true => b"PINGRESP #1\r\n",
            false => b"PONG\r\n",
        };
        out.extend_from_slice(if agora {
            b"PINGREQ #1\r\n"
        } else {
            b"PING\r\n"
        });
        s.write_all(&out).map_err(e)?;
        // Everything before the ping's answer: an error there is a refused subscription.
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let deadline = Instant::now() + Duration::from_secs(10);
        while !got.windows(until.len()).any(|w| w == until) {
            if Instant::now() > deadline {
                return Err(format!("crowd connection {c}: no answer to its ping"));
            }
            match s.read(&mut buf) {
                Ok(0) => return Err(format!("crowd connection {c}: closed by the server")),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => return Err(format!("crowd connection {c}: {e}")),
            }
        }
        let text = String::from_utf8_lossy(&got);
        if let Some(l) = text
            .lines()
            .find(|l| l.starts_with("ERR") || l.starts_with("-ERR"))
        {
            return Err(format!("crowd connection {c}: {l}"));
        }
        held.push(s);
    }
    Ok(held)
}
