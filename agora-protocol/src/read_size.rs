//! How much a connection reads at a time, and where in its buffer.

use bytes::BytesMut;

/// How many bytes to ask the socket for next, for a decoder's read buffer. It starts at
/// [`ReadSize::MIN`], doubles while reads fill it and halves while they come back less
/// than a quarter full, up to [`ReadSize::MAX`]: an idle peer costs little (a safe `read`
/// needs the new part of the buffer initialised, so a big request costs a big `memset`
/// even when one small frame arrives) and a busy one is read in bulk. The broker's
/// connections and the client's reader both size their reads with it.
///
/// ```
/// let mut size = agora_protocol::ReadSize::default();
/// assert_eq!(size.get(), agora_protocol::ReadSize::MIN);
/// size.after_read(size.get()); // filled: ask for more next time
/// assert_eq!(size.get(), 2 * agora_protocol::ReadSize::MIN);
/// size.after_read(1); // far from full: ask for less
/// assert_eq!(size.get(), agora_protocol::ReadSize::MIN);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadSize(usize);

impl ReadSize {
    /// The smallest read asked for.
    pub const MIN: usize = 4 * 1024;
    /// The largest read asked for.
    pub const MAX: usize = 64 * 1024;

    /// Bytes to ask for in the next read.
    pub fn get(self) -> usize {
        self.0
    }

    /// The shortest tail of a held buffer worth a read of its own (see
    /// [`with_spare`](ReadSize::with_spare)).
    pub const MIN_TAIL: usize = 512;

    /// Bytes to ask for when the buffer cannot make room for [`get`](ReadSize::get)
    /// without allocating (parts of it are still held elsewhere) and has `spare` bytes
    /// free past what it holds: the rest of the buffer, up to `get()`, when that is at
    /// least [`MIN_TAIL`](ReadSize::MIN_TAIL); otherwise `get()` (and a new buffer is
    /// taken). A broker keeps the payloads it queues as slices of its read buffers, so a
    /// buffer stays whole while any of them is held: filling each one before taking
    /// another keeps the unused tail of a held buffer under `MIN_TAIL` bytes. (Asking
    /// for `get()` whenever the tail was shorter left up to a whole read's worth unused
    /// in every held buffer: a third of the memory of a queue flooded over loopback.)
    ///
    /// ```
    /// use agora_protocol::ReadSize;
    /// let mut size = ReadSize::default();
    /// size.after_read(size.get()); // 8 KiB now
    /// assert_eq!(size.with_spare(5000), 5000); // fill the buffer's tail first
    /// assert_eq!(size.with_spare(100), 8192); // too little left: a new buffer
    /// assert_eq!(size.with_spare(1 << 20), 8192);
    /// ```
    pub fn with_spare(self, spare: usize) -> usize {
        if spare >= Self::MIN_TAIL {
            spare.min(self.0)
        } else {
            self.0
        }
    }

    /// Adapts to a read that returned `n` bytes. (A read asked for less than
    /// [`get`](ReadSize::get), to fill a buffer's tail, says nothing about the peer and
    /// is not reported.)
    pub fn after_read(&mut self, n: usize) {
        if n >= self.0 {
            self.0 = (self.0 * 2).min(Self::MAX);
        } else if n < self.0 / 4 {
            self.0 = (self.0 / 2).max(Self::MIN);
        }
    }
}

impl Default for ReadSize {
    fn default() -> ReadSize {
        ReadSize(Self::MIN)
    }
}

impl ReadSize {
    /// Makes room in `buf` for the next read and says how many bytes to ask for.
    /// `filled`: the last read came back with all it asked for (the peer had more).
    ///
    /// - [`get`](ReadSize::get) bytes when the buffer can take them without
    ///   allocating (nothing else holds its earlier bytes, so they can be dropped);
    /// - [`get`](ReadSize::get) bytes too after a read that `filled` what it asked
    ///   for: the buffer had no free tail left then, so if it has one now, its bytes
    ///   were moved to the front of their allocation (or into a new one) since, which
    ///   only a buffer nothing else holds allows, and growing it leaves nothing behind;
    ///   if it has none, another buffer is taken as in the last case;
    /// - otherwise its tail, by [`with_spare`](ReadSize::with_spare): while payloads
    ///   taken from it keep it alive elsewhere (a queue holds them), it is filled
    ///   before another buffer is taken.
    ///
    /// The buffer's length is unchanged; the caller resizes it by the answer before
    /// reading into the new part. (Without the second case, a connection whose buffer
    /// began at [`MIN`](ReadSize::MIN) bytes could read a tail at a time forever: the
    /// decoder moves a partial frame to the front of a buffer nothing else holds, the
    /// tail that leaves is read into, and a read that asked for less than `get` never
    /// makes it grow. A broker fed by one fast publisher read 3,978 bytes per system
    /// call.)
    ///
    /// ```
    /// use agora_protocol::{bytes::BytesMut, ReadSize};
    /// let mut size = ReadSize::default();
    /// let mut buf = BytesMut::with_capacity(ReadSize::MIN);
    /// buf.extend_from_slice(b"part of a frame");
    /// // A tail, the first time; the whole read once a read came back full.
    /// assert_eq!(size.make_room(&mut buf, false), ReadSize::MIN - 15);
    /// assert_eq!(size.make_room(&mut buf, true), ReadSize::MIN);
    /// assert!(buf.capacity() >= buf.len() + ReadSize::MIN);
    /// ```
    pub fn make_room(self, buf: &mut BytesMut, filled: bool) -> usize {
        if buf.try_reclaim(self.0) {
            return self.0;
        }
        if filled {
            buf.reserve(self.0);
            return self.0;
        }
        self.with_spare(buf.capacity() - buf.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A buffer of `cap` bytes whose first `held` were split off (returned, to keep or
    /// drop), then `left` bytes of a partial frame.
    fn buffer(cap: usize, held: usize, left: usize) -> (BytesMut, bytes::Bytes) {
        let mut buf = BytesMut::with_capacity(cap);
        buf.resize(held + left, b'x');
        let front = buf.split_to(held).freeze();
        (buf, front)
    }

    #[test]
    fn a_buffer_too_small_for_a_whole_read_grows_once_a_read_came_back_full() {
        let size = ReadSize(64 * 1024);
        // What the decoder leaves after a full read: the partial frame moved to the
        // front of a 4 KiB buffer nothing else holds.
        let mut buf = BytesMut::with_capacity(ReadSize::MIN);
        buf.extend_from_slice(&[b'x'; 118]);
        assert_eq!(size.make_room(&mut buf, false), ReadSize::MIN - 118);
        assert_eq!(size.make_room(&mut buf, true), 64 * 1024);
        assert!(buf.capacity() >= buf.len() + 64 * 1024);
        assert_eq!(&buf[..], &[b'x'; 118][..], "the partial frame is kept");
    }

    #[test]
    fn a_held_buffer_is_read_into_its_tail_then_left_for_a_new_one() {
        let size = ReadSize(64 * 1024);
        // 3000 bytes held (a queued payload), 118 left, 978 free at the end.
        let (mut buf, front) = buffer(ReadSize::MIN, 3000, 118);
        let at = buf.as_ptr();
        assert_eq!(size.make_room(&mut buf, false), ReadSize::MIN - 3000 - 118);
        assert_eq!(buf.as_ptr(), at, "not moved, not reallocated");
        // Less than MIN_TAIL free: a whole read (in a new buffer, once resized).
        let (mut buf, _front2) = buffer(ReadSize::MIN, 3700, 118);
        assert_eq!(size.make_room(&mut buf, false), 64 * 1024);
        drop(front);
    }

    #[test]
    fn a_buffer_with_room_is_reused_in_place() {
        let size = ReadSize::default();
        let (mut buf, front) = buffer(64 * 1024, 3000, 118);
        drop(front);
        let start = buf.as_ptr();
        for filled in [false, true] {
            assert_eq!(size.make_room(&mut buf, filled), ReadSize::MIN);
            assert_eq!(buf.as_ptr(), start, "room was there: nothing moved");
        }
    }
}
