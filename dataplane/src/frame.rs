//! A packet's bytes inside a larger buffer, with room to grow at both ends.
//!
//! Network functions work on a [`Frame`]: it is what an mbuf's first segment
//! looks like (headroom, data, tailroom) without any DPDK type, so the
//! functions are unit-tested and fuzzed on plain `Vec<u8>` buffers.

/// A window `[head, head + len)` over `buf`.
pub struct Frame<'a> {
    buf: &'a mut [u8],
    head: usize,
    len: usize,
}

impl<'a> Frame<'a> {
    /// A frame over `buf[head..head + len]`. Out-of-range values are clamped
    /// to the buffer. (The mbuf layer builds frames from offsets DPDK
    /// guarantees in range, with [`Frame::new_in_range`].)
    #[inline]
    pub fn new(buf: &'a mut [u8], head: usize, len: usize) -> Frame<'a> {
        let head = head.min(buf.len());
        let len = len.min(buf.len() - head);
        Frame { buf, head, len }
    }

    /// A frame whose offsets the caller guarantees: `head + len <= buf.len()`.
    /// Skipping the clamps lets the compiler see that a function which never
    /// moves the offsets leaves them equal, and drop the write-back.
    #[inline(always)]
    pub fn new_in_range(buf: &'a mut [u8], head: usize, len: usize) -> Frame<'a> {
        debug_assert!(head + len <= buf.len());
        Frame { buf, head, len }
    }

    #[inline]
    pub fn data(&self) -> &[u8] {
        &self.buf[self.head..self.head + self.len]
    }

    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.head..self.head + self.len]
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Offset of the first byte in the underlying buffer.
    #[inline]
    pub fn head(&self) -> usize {
        self.head
    }

    #[inline]
    pub fn headroom(&self) -> usize {
        self.head
    }

    #[inline]
    pub fn tailroom(&self) -> usize {
        self.buf.len() - self.head - self.len
    }

    /// Grows the frame by `n` bytes at the front. False if there is no room.
    #[inline]
    pub fn prepend(&mut self, n: usize) -> bool {
        if n > self.head {
            return false;
        }
        self.head -= n;
        self.len += n;
        true
    }

    /// Grows the frame by `n` bytes at the end. False if there is no room.
    #[inline]
    pub fn append(&mut self, n: usize) -> bool {
        if n > self.tailroom() {
            return false;
        }
        self.len += n;
        true
    }

    /// Drops `n` bytes from the front. False if the frame is shorter.
    #[inline]
    pub fn adj(&mut self, n: usize) -> bool {
        if n > self.len {
            return false;
        }
        self.head += n;
        self.len -= n;
        true
    }

    /// Cuts the frame to `len` bytes (no-op if already shorter).
    #[inline]
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }
}

/// A heap-backed frame for tests, fuzzing and benchmarks of pure code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedFrame {
    pub buf: Vec<u8>,
    pub head: usize,
    pub len: usize,
}

impl OwnedFrame {
    /// DPDK's default headroom, so tests see what an mbuf would give.
    pub const HEADROOM: usize = 128;
    pub const TAILROOM: usize = 256;

    pub fn from_bytes(bytes: &[u8]) -> OwnedFrame {
        let mut buf = vec![0u8; Self::HEADROOM + bytes.len() + Self::TAILROOM];
        buf[Self::HEADROOM..Self::HEADROOM + bytes.len()].copy_from_slice(bytes);
        OwnedFrame {
            buf,
            head: Self::HEADROOM,
            len: bytes.len(),
        }
    }

    pub fn data(&self) -> &[u8] {
        &self.buf[self.head..self.head + self.len]
    }

    /// Runs `f` over a [`Frame`] view and keeps the offsets it leaves.
    pub fn with_frame<R>(&mut self, f: impl FnOnce(&mut Frame<'_>) -> R) -> R {
        let mut frame = Frame::new(&mut self.buf, self.head, self.len);
        let r = f(&mut frame);
        self.head = frame.head();
        self.len = frame.len();
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepend_and_adj_move_the_head_within_the_buffer() {
        let mut f = OwnedFrame::from_bytes(&[1, 2, 3]);
        f.with_frame(|fr| {
            assert!(fr.prepend(2));
            fr.data_mut()[..2].copy_from_slice(&[9, 8]);
            assert!(!fr.prepend(OwnedFrame::HEADROOM));
        });
        assert_eq!(f.data(), &[9, 8, 1, 2, 3]);
        f.with_frame(|fr| assert!(fr.adj(3)));
        assert_eq!(f.data(), &[2, 3]);
    }

    #[test]
    fn append_is_bounded_by_tailroom_and_truncate_shortens() {
        let mut f = OwnedFrame::from_bytes(&[1, 2, 3, 4]);
        f.with_frame(|fr| {
            assert!(!fr.append(OwnedFrame::TAILROOM + 1));
            assert!(fr.append(1));
            fr.truncate(2);
        });
        assert_eq!(f.data(), &[1, 2]);
    }
}
