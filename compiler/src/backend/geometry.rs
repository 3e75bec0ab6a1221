//! What scheduling must know of the back end that will generate its kernels' code.

/// The shapes a back end's code is fast for. Scheduling sizes blocks, padding and splits
/// by these numbers rather than by literals, so that a back end with other registers
/// gets kernels shaped for them without any change to scheduling; the back end is then
/// handed a [`Program`](crate::ir::kernel::Program) that records the geometry it was
/// scheduled for, and refuses one it cannot generate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Rows of a product's register tile. Scheduling splits a product's rows across
    /// threads in multiples of it, so that no thread's block ends in a partial tile, and
    /// processes this many recurrent sequences together, so that each step's recurrent
    /// product fills a tile's rows.
    pub rows: usize,
    /// Columns of a product's register tile (a whole number of vectors). A one-image
    /// convolution split across threads gives each block at least a few tiles' worth of
    /// pixels.
    pub columns: usize,
    /// `f32` lanes of a vector. Element-wise maps and column sums split across threads
    /// in multiples of it, so that every block's vectors start aligned; a product whose
    /// column count is a multiple of it has no scalar remainder columns.
    pub lanes: usize,
    /// The multiple to which scheduling rounds the row stride of a product's right
    /// operand when it lays that operand out itself (unfolded images, transposed
    /// gradients), so that column panels never straddle a row's end: the padding costs a
    /// few columns of memory and spares the slow remainder tiles.
    pub pad: usize,
    /// Whether products read a convolution's input through its window themselves
    /// ([`Operand::Unfolded`](crate::ir::kernel::Operand::Unfolded)); otherwise scheduling
    /// unfolds the image into scratch first.
    pub unfolds: bool,
}

impl std::fmt::Display for Geometry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}×{} tiles, {} lanes, padding to {} columns{}",
            self.rows,
            self.columns,
            self.lanes,
            self.pad,
            if self.unfolds { ", unfolding images in products" } else { "" }
        )
    }
}
