//! One allocation for every buffer of a compiled network, aligned to a cache line.

use std::fmt;

/// A zero-initialised block of bytes aligned to 64.
pub struct Arena {
    blocks: Vec<Block>,
    len: usize,
}

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Block([u8; 64]);

#[derive(Debug, thiserror::Error)]
#[error("cannot allocate {bytes} bytes for the network's buffers")]
pub struct AllocError {
    pub bytes: usize,
}

impl Arena {
    /// Allocates `len` zeroed bytes, or reports that the memory is not available (a
    /// network too large for this machine is an error, not an abort).
    pub fn new(len: usize) -> Result<Arena, AllocError> {
        let n = len.div_ceil(64);
        let mut blocks = Vec::new();
        blocks.try_reserve_exact(n).map_err(|_| AllocError { bytes: len })?;
        blocks.resize(n, Block([0; 64]));
        Ok(Arena { blocks, len })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.blocks.as_mut_ptr().cast()
    }

    pub fn bytes(&self) -> &[u8] {
        // SAFETY: the blocks are `len` (rounded up) initialised, contiguous bytes.
        unsafe { std::slice::from_raw_parts(self.blocks.as_ptr().cast(), self.len) }
    }

    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, and `&mut self` makes the borrow unique.
        unsafe { std::slice::from_raw_parts_mut(self.blocks.as_mut_ptr().cast(), self.len) }
    }

    /// `len` floats at byte `offset` (which the memory plan aligned to 64).
    pub fn floats(&self, offset: usize, len: usize) -> &[f32] {
        assert!(offset.is_multiple_of(4) && offset + len * 4 <= self.len, "buffer outside the arena");
        // SAFETY: in bounds and aligned (checked above); any bit pattern is a valid f32.
        unsafe { std::slice::from_raw_parts(self.bytes().as_ptr().add(offset).cast(), len) }
    }

    pub fn floats_mut(&mut self, offset: usize, len: usize) -> &mut [f32] {
        assert!(offset.is_multiple_of(4) && offset + len * 4 <= self.len, "buffer outside the arena");
        // SAFETY: as above; `&mut self` makes the borrow unique.
        unsafe { std::slice::from_raw_parts_mut(self.bytes_mut().as_mut_ptr().add(offset).cast(), len) }
    }
}

impl fmt::Debug for Arena {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Arena({} bytes)", self.len)
    }
}
