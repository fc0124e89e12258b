//! Reading messages back while the log is open: what a durable queue keeps on disk
//! instead of in memory (its backlog past its head) comes back from here when its
//! consumers get there.

use super::*;

/// Records of one read further apart than this in a segment are read separately.
const GAP: u64 = 64 * 1024;
/// The most bytes one read of a segment takes in.
const SPAN: u64 = 4 * 1024 * 1024;

impl<S: Storage> Log<S> {
    /// The live messages `ids` of queue number `queue`, from their latest `Enqueue`,
    /// with their delivery counts as logged, in the order given; an id that is not live
    /// (never enqueued, or acknowledged since) is left out. Records appended and not yet
    /// written come from the buffer; neighbouring records on disk are read with one
    /// call.
    ///
    /// A record that is not what was written (its checksum, or another record where the
    /// message's was) is damage, reported with its file and offset.
    pub fn read(&self, queue: u32, ids: &[u64]) -> Result<Vec<Stored>, LogError> {
        let found: Vec<(u64, live::LiveMsg)> = ids
            .iter()
            .filter_map(|&id| self.live.locate(queue, id).map(|m| (id, m)))
            .collect();
        // Records appended and not yet written (the disk may be full) are read from
        // the buffer.
        let written = self.active_len - self.buf.len() as u64;
        let unwritten = |m: &live::LiveMsg| m.seg == self.active_first && m.at >= written;
        let mut out = Vec::with_capacity(found.len());
        let mut i = 0;
        while i < found.len() {
            let first = found[i].1;
            if unwritten(&first) {
                let (id, m) = found[i];
                let bytes = self
                    .buf
                    .get((m.at - written) as usize..)
                    .unwrap_or_default();
                out.push(stored(id, m, bytes, self.active())?);
                i += 1;
                continue;
            }
            let mut end = first.at + first.bytes;
            let mut j = i + 1;
            while let Some((_, m)) = found.get(j) {
                let near = m.seg == first.seg && m.at >= end && m.at - end <= GAP && !unwritten(m);
                if !near || m.at + m.bytes - first.at > SPAN {
                    break;
                }
                end = m.at + m.bytes;
                j += 1;
            }
            let name = segment_name(first.seg);
            let data = self
                .storage
                .read_at(&name, first.at, (end - first.at) as usize)
                .map_err(io_err(&name))?;
            for &(id, m) in &found[i..j] {
                let from = (m.at - first.at) as usize;
                out.push(stored(id, m, data.get(from..).unwrap_or_default(), &name)?);
            }
            i = j;
        }
        Ok(out)
    }
}

/// Message `id` from the bytes of its record (`m`'s, in `file`).
fn stored(id: u64, m: live::LiveMsg, bytes: &[u8], file: &str) -> Result<Stored, LogError> {
    let damaged = |why: String| LogError::Damaged {
        file: file.to_owned(),
        offset: m.at,
        why,
    };
    match Record::decode(bytes) {
        Ok((
            Record::Enqueue {
                id: got,
                headers,
                payload,
                ..
            },
            _,
        )) if got == id => Ok(Stored {
            id,
            count: m.count,
            headers,
            payload,
        }),
        Ok((other, _)) => Err(damaged(format!(
            "message {id}'s record is not there (found {other:?})"
        ))),
        Err(bad) => Err(damaged(bad.to_string())),
    }
}
