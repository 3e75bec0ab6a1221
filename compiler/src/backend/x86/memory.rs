//! Executable memory for generated code: written while mapped read-write, then remapped
//! read-and-execute (never both), and unmapped when dropped. `memmap2` does the mapping
//! and protection calls portably and safely.

use memmap2::{Mmap, MmapMut};

/// Code copied into its own executable mapping.
pub struct Executable {
    map: Mmap,
}

impl Executable {
    pub fn new(code: &[u8]) -> std::io::Result<Executable> {
        let mut map = MmapMut::map_anon(code.len().max(1))?;
        map[..code.len()].copy_from_slice(code);
        Ok(Executable { map: map.make_exec()? })
    }

    /// The address of byte `offset` of the code.
    pub fn at(&self, offset: usize) -> *const u8 {
        self.map[offset..].as_ptr()
    }
}

impl std::fmt::Debug for Executable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Executable({} bytes)", self.map.len())
    }
}
