//! What the MQTT front door keeps beyond a connection: retained messages and persistent
//! session records, shared by the MQTT port and WebSocket's `/mqtt`; with a data
//! directory, written to `<data-dir>/mqtt/` and read back at start.
//!
//! Each is one file, written whole: `retained` and `sessions`, each
//! `AGORA-MQTT-1\n`, a CRC-32 (little-endian) of the body, the body. A write goes to a
//! temporary file, is synced, and replaces the old one by a rename (then the directory
//! is synced), so a crash leaves the old file or the new one, never half of one. The
//! keeper writes the session records as soon as they change and the retained messages
//! at most once a second (their file may be tens of MiB); both at shutdown. A file that
//! does not read back (bad magic, checksum, or body) is moved aside to `<name>.bad` and
//! the broker starts without it, saying so in the log.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use agora_protocol::bytes::Bytes;
use agora_protocol::mqtt::QoS;
use agora_protocol::{Destination, Headers};
use async_channel::Receiver;

use super::persistent::{now_secs, Record, Records};
use super::retained::{Kept, Retained};
use crate::manager::ManagerCmd;
use crate::Broker;

const MAGIC: &[u8] = b"AGORA-MQTT-1\n";

/// The least time between two writes of the retained messages.
const RETAINED_EVERY: Duration = Duration::from_secs(1);

/// How often the keeper looks for expired sessions when nothing changes.
const TICK: Duration = Duration::from_secs(1);

/// See the module documentation.
pub(crate) struct MqttState {
    pub retained: Retained,
    pub sessions: Records,
    /// `<data-dir>/mqtt`, when there is a data directory.
    dir: Option<PathBuf>,
    wake: Receiver<()>,
    /// The longest a session is kept once its client is gone, in seconds.
    pub max_expiry: u32,
}

impl MqttState {
    /// In memory only: nothing is written.
    pub(crate) fn in_memory(max_bytes: usize, max_topics: usize, max_expiry: u32) -> MqttState {
        let (tx, wake) = async_channel::bounded(1);
        MqttState {
            retained: Retained::new(max_bytes, max_topics).with_wake(tx.clone()),
            sessions: Records::new(Some(tx)),
            dir: None,
            wake,
            max_expiry,
        }
    }

    /// The broker's, with what its data directory holds, if it has one.
    pub(crate) fn open(config: &crate::Config) -> io::Result<MqttState> {
        let max_expiry = u32::try_from(config.mqtt_session_expiry.as_secs()).unwrap_or(u32::MAX);
        let mut st = MqttState::in_memory(
            config.mqtt_retained_bytes,
            config.mqtt_retained_topics,
            max_expiry,
        );
        let Some(data) = &config.data_dir else {
            return Ok(st);
        };
        let dir = data.join(crate::store::MQTT_DIR);
        std::fs::create_dir_all(&dir)?;
        if let Some(body) = read(&dir.join("retained"))? {
            match decode_retained(&body) {
                Some(all) => {
                    log::info!("MQTT: {} retained messages read back", all.len());
                    st.retained.load(all);
                }
                None => set_aside(&dir.join("retained"), "its body does not decode")?,
            }
        }
        if let Some(body) = read(&dir.join("sessions"))? {
            match serde_json::from_slice::<Vec<Record>>(&body) {
                Ok(all) => {
                    log::info!("MQTT: {} persistent sessions read back", all.len());
                    st.sessions.load(all);
                }
                Err(e) => set_aside(&dir.join("sessions"), &e.to_string())?,
            }
        }
        st.dir = Some(dir);
        Ok(st)
    }

    /// Runs for the broker's life: deletes the queues of expired sessions, writes what
    /// changed.
    pub(crate) async fn keep(&self, broker: &Broker) {
        let mut retained_at = Instant::now() - RETAINED_EVERY;
        loop {
            futures_lite::future::or(
                async {
                    let _ = self.wake.recv().await;
                },
                async {
                    smol::Timer::after(TICK).await;
                },
            )
            .await;
            for queue in self.sessions.expire(now_secs(), self.max_expiry) {
                log::info!("MQTT: session {queue} expired; its queue is deleted");
                delete(broker, &queue).await;
            }
            self.write_sessions().await;
            if retained_at.elapsed() >= RETAINED_EVERY && self.write_retained().await {
                retained_at = Instant::now();
            }
        }
    }

    /// Writes whatever changed (at shutdown).
    pub(crate) async fn flush(&self) {
        self.write_sessions().await;
        self.write_retained().await;
    }

    async fn write_sessions(&self) {
        let Some(dir) = self.dir.clone() else {
            let _ = self.sessions.take_dirty();
            return;
        };
        let Some(all) = self.sessions.take_dirty() else {
            return;
        };
        let body = serde_json::to_vec(&all).unwrap_or_default();
        if let Err(e) = blocking::unblock(move || write(&dir.join("sessions"), &body)).await {
            log::error!("MQTT: writing the persistent sessions failed: {e}; trying again");
            self.sessions.mark_dirty();
        }
    }

    /// True if it wrote.
    async fn write_retained(&self) -> bool {
        let Some(dir) = self.dir.clone() else {
            let _ = self.retained.take_dirty();
            return false;
        };
        let Some(all) = self.retained.take_dirty() else {
            return false;
        };
        let body = encode_retained(&all);
        if let Err(e) = blocking::unblock(move || write(&dir.join("retained"), &body)).await {
            log::error!("MQTT: writing the retained messages failed: {e}; trying again");
            self.retained.mark_dirty();
        }
        true
    }
}

/// Deletes an expired session's queue.
async fn delete(broker: &Broker, queue: &str) {
    let Ok(dest) = Destination::queue(queue) else {
        return;
    };
    let (reply, rx) = async_channel::bounded(1);
    if broker
        .manager
        .send(ManagerCmd::Delete { dest, reply })
        .await
        .is_ok()
    {
        let _ = rx.recv().await;
    }
}

/// A file's body, `None` when there is no file.
fn read(path: &Path) -> io::Result<Option<Vec<u8>>> {
    let all = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let head = MAGIC.len() + 4;
    if all.len() < head || &all[..MAGIC.len()] != MAGIC {
        set_aside(path, "it does not start as an Agora MQTT file")?;
        return Ok(None);
    }
    let crc = u32::from_le_bytes(all[MAGIC.len()..head].try_into().expect("4 bytes"));
    if crc32fast::hash(&all[head..]) != crc {
        set_aside(path, "its checksum does not match")?;
        return Ok(None);
    }
    Ok(Some(all[head..].to_vec()))
}

fn set_aside(path: &Path, why: &str) -> io::Result<()> {
    let bad = path.with_extension("bad");
    log::error!(
        "MQTT: {} is unreadable ({why}); moved to {} and not used",
        path.display(),
        bad.display()
    );
    std::fs::rename(path, bad)
}

/// Writes `body` as `path`, whole or not at all.
fn write(path: &Path, body: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(MAGIC)?;
    f.write_all(&crc32fast::hash(body).to_le_bytes())?;
    f.write_all(body)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// name, qos, headers, payload; lengths little-endian.
fn encode_retained(all: &[(String, Kept)]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&(all.len() as u32).to_le_bytes());
    let text = |b: &mut Vec<u8>, s: &str| {
        b.extend_from_slice(&(s.len() as u32).to_le_bytes());
        b.extend_from_slice(s.as_bytes());
    };
    for (name, k) in all {
        text(&mut b, name);
        b.push(k.qos as u8);
        b.extend_from_slice(&(k.headers.iter().count() as u32).to_le_bytes());
        for (key, value) in k.headers.iter() {
            text(&mut b, key);
            text(&mut b, value);
        }
        b.extend_from_slice(&(k.payload.len() as u32).to_le_bytes());
        b.extend_from_slice(&k.payload);
    }
    b
}

fn decode_retained(mut b: &[u8]) -> Option<Vec<(String, Kept)>> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (h, t) = (b.get(..n)?, b.get(n..)?);
        *b = t;
        Some(h)
    }
    fn len(b: &mut &[u8]) -> Option<usize> {
        Some(u32::from_le_bytes(take(b, 4)?.try_into().ok()?) as usize)
    }
    fn text(b: &mut &[u8]) -> Option<String> {
        let n = len(b)?;
        String::from_utf8(take(b, n)?.to_vec()).ok()
    }
    let n = len(&mut b)?;
    let mut all = Vec::with_capacity(n.min(1 << 16));
    for _ in 0..n {
        let name = text(&mut b)?;
        let qos = match take(&mut b, 1)?[0] {
            0 => QoS::AtMostOnce,
            _ => QoS::AtLeastOnce,
        };
        let mut headers = Headers::new();
        for _ in 0..len(&mut b)? {
            let (k, v) = (text(&mut b)?, text(&mut b)?);
            headers.append(&k, &v).ok()?;
        }
        let p = len(&mut b)?;
        let payload = Bytes::copy_from_slice(take(&mut b, p)?);
        all.push((
            name,
            Kept {
                payload,
                headers,
                qos,
            },
        ));
    }
    b.is_empty().then_some(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(p: &'static str, h: &[(&str, &str)]) -> Kept {
        let mut headers = Headers::new();
        for (k, v) in h {
            headers.append(k, v).unwrap();
        }
        Kept {
            payload: Bytes::from_static(p.as_bytes()),
            headers,
            qos: QoS::AtLeastOnce,
        }
    }

    #[test]
    fn retained_messages_come_back_as_written() {
        let all = vec![
            ("a.b".to_owned(), kept("21.5", &[("unit", "C")])),
            ("c".to_owned(), kept("\0\u{1}bin", &[])),
        ];
        let b = encode_retained(&all);
        assert_eq!(decode_retained(&b).unwrap(), all);
        assert!(decode_retained(&b[..b.len() - 1]).is_none(), "cut short");
        let mut longer = b.clone();
        longer.push(0);
        assert!(decode_retained(&longer).is_none(), "trailing bytes");
    }

    #[test]
    fn a_file_is_replaced_whole_and_a_bad_one_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("retained");
        assert_eq!(read(&f).unwrap(), None);
        write(&f, b"one").unwrap();
        write(&f, b"two").unwrap();
        assert_eq!(read(&f).unwrap().as_deref(), Some(&b"two"[..]));
        let mut raw = std::fs::read(&f).unwrap();
        *raw.last_mut().unwrap() ^= 1;
        std::fs::write(&f, raw).unwrap();
        assert_eq!(read(&f).unwrap(), None, "checksum");
        assert!(dir.path().join("retained.bad").exists());
        assert!(!f.exists());
    }

    #[test]
    fn a_data_directory_keeps_both_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let config = crate::Config {
            data_dir: Some(dir.path().to_owned()),
            ..crate::Config::ephemeral()
        };
        let st = MqttState::open(&config).unwrap();
        st.retained.set("t".into(), kept("v", &[]));
        st.sessions.resume("$mqtt.session._.d", 1, 60);
        st.sessions
            .set_filter("$mqtt.session._.d", "a/+", Some(QoS::AtLeastOnce));
        futures_lite::future::block_on(st.flush());
        let back = MqttState::open(&config).unwrap();
        assert_eq!(back.retained.matching(&["t"]).len(), 1);
        let filters = back.sessions.resume("$mqtt.session._.d", 2, 60).unwrap();
        assert_eq!(filters, [("a/+".to_owned(), QoS::AtLeastOnce)]);
    }
}
