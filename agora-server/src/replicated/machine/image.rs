//! A replicated queue's state as bytes: what a member compacts its log to, and what a
//! leader sends a member that is behind its compacted log (a Raft snapshot's data).
//!
//! ```text
//! image   = version:u8(3) count:u64 message* origins:u32 origin* ids:u32 id*
//!           returns:u32 return*
//! message = id:u64 at:u64 len:u32 body   ; an Enqueue's time (0: none) and body
//! origin  = member:u64 n:u32 seq:u64*    ; its latest proposal numbers, oldest first
//! id      = len:u32 byte*                ; the latest message ids, oldest first
//! return  = id:u64 n:u32                 ; how often a message came back
//! ```
//!
//! Integers are little-endian. Deliveries are not in it (they never are in the log).
//! An image of version 1 (before enqueues had a time) has no `at`; it is read as 0.
//! One of version 1 or 2 has no returns: none.

use super::*;

const VERSION: u8 = 3;

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

/// Reads an image's fields in order.
struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        let b = self
            .data
            .get(self.at..self.at.saturating_add(n))
            .ok_or("an image shorter than its fields")?;
        self.at += n;
        Ok(b)
    }

    fn u32(&mut self) -> Result<u32, &'static str> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }

    fn u64(&mut self) -> Result<u64, &'static str> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }

    fn bytes(&mut self) -> Result<&'a [u8], &'static str> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

/// A machine's state taken at one moment, to be encoded later, elsewhere: its
/// collections copied, the message bodies shared (a reference each, not a copy of
/// their bytes). Taking one costs a pass over the messages; [`Image::encode`], the copy
/// of every byte the queue holds, can then run on another thread while the queue goes
/// on (a compaction's snapshot).
pub(crate) struct Image {
    messages: Vec<(u64, u64, Bytes)>,
    bytes: usize,
    seen: Vec<(u64, Vec<u64>)>,
    ids: Vec<String>,
    returns: Vec<(u64, u32)>,
}

impl Image {
    /// The image's bytes, in the format above.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.bytes + 12 * self.messages.len());
        out.push(VERSION);
        out.extend_from_slice(&(self.messages.len() as u64).to_le_bytes());
        for (id, at, body) in &self.messages {
            out.extend_from_slice(&id.to_le_bytes());
            out.extend_from_slice(&at.to_le_bytes());
            put_bytes(&mut out, body);
        }
        out.extend_from_slice(&(self.seen.len() as u32).to_le_bytes());
        for (origin, order) in &self.seen {
            out.extend_from_slice(&origin.to_le_bytes());
            out.extend_from_slice(&(order.len() as u32).to_le_bytes());
            for seq in order {
                out.extend_from_slice(&seq.to_le_bytes());
            }
        }
        out.extend_from_slice(&(self.ids.len() as u32).to_le_bytes());
        for id in &self.ids {
            put_bytes(&mut out, id.as_bytes());
        }
        out.extend_from_slice(&(self.returns.len() as u32).to_le_bytes());
        for (id, n) in &self.returns {
            out.extend_from_slice(&id.to_le_bytes());
            out.extend_from_slice(&n.to_le_bytes());
        }
        out
    }
}

impl Machine {
    /// The state every member applied (its messages, the proposal numbers and message
    /// ids it remembers), as bytes.
    pub fn image(&self) -> Vec<u8> {
        self.take_image().encode()
    }

    /// The state every member applied, to be encoded later ([`Image::encode`] gives
    /// what [`image`](Machine::image) gives now); the bodies are shared, not copied.
    pub fn take_image(&self) -> Image {
        Image {
            messages: self
                .messages
                .iter()
                .map(|(&id, m)| (id, m.at, m.body.clone()))
                .collect(),
            bytes: self.bytes,
            seen: self
                .seen
                .iter()
                .map(|(&origin, r)| (origin, r.order.iter().copied().collect()))
                .collect(),
            ids: self.ids.order.iter().cloned().collect(),
            returns: self.returns.iter().map(|(&id, &n)| (id, n)).collect(),
        }
    }

    /// Replaces its state with an [`image`](Machine::image)'s (nothing changes when
    /// the image is not whole). It serves no longer: returns the deliveries made void,
    /// (id, consumer).
    pub fn restore(&mut self, data: &[u8]) -> Result<Vec<(u64, u64)>, &'static str> {
        let mut r = Reader { data, at: 0 };
        let version = r.take(1)?[0];
        if !(1..=VERSION).contains(&version) {
            return Err("an image of an unknown version");
        }
        let mut messages = BTreeMap::new();
        let mut bytes = 0;
        for _ in 0..r.u64()? {
            let id = r.u64()?;
            let at = if version >= 2 { r.u64()? } else { 0 };
            let body = r.bytes()?;
            bytes += body.len();
            messages.insert(
                id,
                Stored {
                    at,
                    body: Bytes::copy_from_slice(body),
                },
            );
        }
        let mut seen = BTreeMap::new();
        for _ in 0..r.u32()? {
            let origin = r.u64()?;
            let mut recent = Recent::default();
            for _ in 0..r.u32()? {
                recent.insert(r.u64()?);
            }
            seen.insert(origin, recent);
        }
        let mut ids = Ids {
            cap: self.ids.cap,
            ..Ids::default()
        };
        for _ in 0..r.u32()? {
            let id = std::str::from_utf8(r.bytes()?).map_err(|_| "a message id not UTF-8")?;
            ids.insert(id);
        }
        let mut returns = BTreeMap::new();
        if version >= 3 {
            for _ in 0..r.u32()? {
                let id = r.u64()?;
                returns.insert(id, r.u32()?);
            }
        }
        if r.at != data.len() {
            return Err("an image longer than its fields");
        }
        let void = self.serve(false);
        self.messages = messages;
        self.returns = returns;
        self.bytes = bytes;
        self.seen = seen;
        self.ids = ids;
        Ok(void)
    }

    /// The bytes of the messages' bodies.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether member `origin`'s proposal `seq` was applied (among its latest ones).
    pub fn has_seen(&self, origin: u64, seq: u64) -> bool {
        self.seen.get(&origin).is_some_and(|r| r.set.contains(&seq))
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::enqueue;
    use super::*;

    #[test]
    fn an_image_of_version_1_is_read_with_no_times_and_no_returns() {
        let mut v1 = vec![1u8];
        v1.extend_from_slice(&1u64.to_le_bytes());
        v1.extend_from_slice(&9u64.to_le_bytes());
        put_bytes(&mut v1, b"old");
        v1.extend_from_slice(&0u32.to_le_bytes());
        v1.extend_from_slice(&0u32.to_le_bytes());
        let mut m = Machine::default();
        m.restore(&v1).unwrap();
        m.serve(true);
        assert_eq!(
            m.park_expired(u64::MAX, 1),
            Vec::<u64>::new(),
            "no time: never"
        );
        assert_eq!(m.next_for(1), Some((9, &b"old"[..])));
        assert_eq!(m.returned(9), 0);
        let mut v4 = v1.clone();
        v4[0] = 4;
        assert_eq!(
            Machine::default().restore(&v4),
            Err("an image of an unknown version")
        );
    }

    #[test]
    fn an_image_taken_shares_the_bodies_and_encodes_the_state_when_it_was_taken() {
        let mut a = Machine::with_ids(4);
        a.apply(1, &enqueue(1, 7, &[1; 1000]));
        a.apply(2, &enqueue(2, 9, b"bb"));
        let before = a.image();
        let taken = a.take_image();
        // The bodies are the machine's own (a reference each), not copies.
        assert_eq!(taken.messages.len(), 2);
        assert_eq!(taken.messages[0].2.as_ptr(), a.messages[&1].body.as_ptr());
        // The machine goes on; the image is still what it was when taken.
        a.apply(3, &enqueue(1, 8, b"ccc"));
        a.apply(4, &Op::Ack { id: 1 }.encode());
        let encoded = std::thread::spawn(move || taken.encode()).join().unwrap();
        assert_eq!(encoded, before);
        assert_ne!(a.image(), before);
        let mut b = Machine::with_ids(4);
        b.restore(&encoded).unwrap();
        assert_eq!(b.peek(9), vec![&[1; 1000][..], &b"bb"[..]]);
        assert!(b.has_seen(1, 7) && b.has_seen(2, 9) && !b.has_seen(1, 8));
    }

    #[test]
    fn an_image_restores_the_same_queue_and_a_cut_one_changes_nothing() {
        let mut a = Machine::with_ids(4);
        a.apply(1, &enqueue(1, 7, b"a"));
        a.apply(2, &enqueue(2, 9, b"bb"));
        a.apply(3, &enqueue(1, 8, b"ccc"));
        a.apply(4, &Op::Ack { id: 2 }.encode());
        a.serve(true);
        a.next_for(5);
        let image = a.image();
        let mut b = Machine::with_ids(4);
        b.apply(1, &enqueue(3, 1, b"old"));
        // Every cut of the image is refused, and leaves the machine as it was.
        for cut in 0..image.len() {
            assert!(b.restore(&image[..cut]).is_err(), "cut at {cut}");
            assert_eq!(b.peek(9), vec![&b"old"[..]]);
        }
        assert_eq!(b.restore(&image), Ok(vec![]));
        assert_eq!(b.peek(9), vec![&b"a"[..], &b"ccc"[..]]);
        assert_eq!((b.depth(), b.bytes()), (2, 4));
        assert!(b.has_seen(1, 7) && b.has_seen(2, 9) && !b.has_seen(3, 1));
        // What it remembers works as before: a duplicate is caught, ids keep acks.
        assert_eq!(
            b.apply(5, &enqueue(1, 8, b"ccc")),
            Applied::Duplicate { origin: 1, seq: 8 }
        );
        assert_eq!(
            b.apply(6, &Op::Ack { id: 1 }.encode()),
            Applied::Acked {
                id: 1,
                was_there: true,
                held_by: None,
                bytes: 1
            }
        );
        assert_eq!(
            b.image()[..],
            {
                let mut c = Machine::with_ids(4);
                c.restore(&image).unwrap();
                c.apply(6, &Op::Ack { id: 1 }.encode());
                c.image()
            }[..]
        );
        // A serving member restored stops serving: what it handed out is void.
        let mut c = Machine::default();
        c.apply(1, &enqueue(1, 1, b"x"));
        c.serve(true);
        c.next_for(8);
        assert_eq!(c.restore(&image), Ok(vec![(1, 8)]));
        assert!(!c.serving());
    }
}
