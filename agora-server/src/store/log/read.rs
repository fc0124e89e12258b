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
    /// (never enqueued, or acknowledged since) is left out. Appended records not yet
    /// written are written first. Neighbouring records are read with one call.
    ///
    /// A record that is not what was written (its checksum, or another record where the
    /// message's was) is damage, reported with its file and offset.
    pub fn read(&mut self, queue: u32, ids: &[u64]) -> Result<Vec<Stored>, LogError> {
        let found: Vec<(u64, live::LiveMsg)> = ids
            .iter()
            .filter_map(|&id| self.live.locate(queue, id).map(|m| (id, m)))
            .collect();
        if !self.buf.is_empty() && found.iter().any(|(_, m)| m.seg == self.active_first) {
            self.write()?;
        }
        let mut out = Vec::with_capacity(found.len());
        let mut i = 0;
        while i < found.len() {
            let first = found[i].1;
            let mut end = first.at + first.bytes;
            let mut j = i + 1;
            while let Some((_, m)) = found.get(j) {
                let near = m.seg == first.seg && m.at >= end && m.at - end <= GAP;
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
                let damaged = |why: String| LogError::Damaged {
                    file: name.clone(),
                    offset: m.at,
                    why,
                };
                let from = (m.at - first.at) as usize;
                let bytes = data.get(from..).unwrap_or_default();
                match Record::decode(bytes) {
                    Ok((
                        Record::Enqueue {
                            id: got,
                            headers,
                            payload,
                            ..
                        },
                        _,
                    )) if got == id => out.push(Stored {
                        id,
                        count: m.count,
                        headers,
                        payload,
                    }),
                    Ok((other, _)) => {
                        return Err(damaged(format!(
                            "message {id}'s record is not there (found {other:?})"
                        )))
                    }
                    Err(bad) => return Err(damaged(bad.to_string())),
                }
            }
            i = j;
        }
        Ok(out)
    }
}
