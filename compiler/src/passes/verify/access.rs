//! What each statement touches: its pointers, each with the elements it reaches beyond
//! the pointer's own address, and the checks of its fields that keep the emitter's own
//! arithmetic in range. Each arm follows the statement's emitter in
//! `backend/cranelift/` (named in the comments), so that nothing the code touches is
//! missed; where the emitter clips an access to an image it is the image's extent that
//! counts.

use super::product;
use crate::ir::kernel::{BSum, EInst, Inst, Ptr, Right, Stmt, Var, Window};

/// How a statement uses a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Use {
    Read,
    Write,
    /// Read back what it writes (accumulations, normalisations in place).
    Update,
}

/// One pointer of a statement and the elements it reaches from its address: every
/// `Σ stride · i` with `i < count` for each `(stride, count)` of `span`.
pub(super) struct Access<'a> {
    pub ptr: &'a Ptr,
    pub what: &'static str,
    pub used: Use,
    pub span: Vec<(usize, usize)>,
    /// A loop variable the statement binds itself (a reduction's outer loop) that this
    /// pointer may use, with its extent.
    pub inner: Option<(Var, usize)>,
}

/// A statement's accesses and the loop variables it uses outside any pointer.
pub(super) struct Accesses<'a> {
    pub list: Vec<Access<'a>>,
    pub vars: Vec<Var>,
    /// A variable the statement binds (it must not shadow an enclosing loop's).
    pub binds: Option<Var>,
}

fn size(factors: &[usize]) -> Result<usize, String> {
    product(factors).ok_or_else(|| format!("the sizes {factors:?} overflow"))
}

fn at<'a>(ptr: &'a Ptr, what: &'static str, used: Use, span: Vec<(usize, usize)>) -> Access<'a> {
    Access { ptr, what, used, span, inner: None }
}

/// The flat extents of a window: the image (`c·h·w`), the unfolded rows (`c·kh·kw`) and
/// the output plane (`oh·ow`), checked so that the emitter's products cannot overflow.
struct Extents {
    image: usize,
    taps: usize,
    out: usize,
    out_planes: usize,
}

fn extents(w: &Window) -> Result<Extents, String> {
    // The emitter multiplies these too (strides by widths, rows by widths).
    size(&[w.sh, w.w])?;
    size(&[w.kh, w.w])?;
    size(&[w.ow, w.sw])?;
    size(&[w.kh, w.dh])?;
    size(&[w.kw, w.dw])?;
    for f in [w.h, w.w] {
        f.checked_add(
            w.pad.iter().try_fold(0usize, |a, &p| a.checked_add(p)).ok_or("the padding overflows")?,
        )
        .ok_or("the padded size overflows")?;
    }
    Ok(Extents {
        image: size(&[w.c, w.h, w.w])?,
        taps: size(&[w.c, w.kh, w.kw])?,
        out: size(&[w.oh, w.ow])?,
        out_planes: size(&[w.c, w.oh, w.ow])?,
    })
}

/// Unfolding divides by the strides.
fn strides_positive(w: &Window) -> Result<(), String> {
    if w.sh == 0 || w.sw == 0 {
        return Err(format!("a window with stride {}×{}", w.sh, w.sw));
    }
    Ok(())
}

/// Every operand of an element-wise program names an earlier instruction that has a
/// value; the emitter indexes by them.
fn map_operands(insts: &[Inst]) -> Result<(), String> {
    for (k, inst) in insts.iter().enumerate() {
        let operands: &[usize] = match inst {
            Inst::Load(_) | Inst::Bcast(_) | Inst::Const(_) | Inst::Keep { .. } => &[],
            Inst::Prim(_, a) | Inst::Store(_, a) | Inst::Stream(_, a) => std::slice::from_ref(a),
            Inst::Bin(_, a, b) => &[*a, *b],
            Inst::Select(_, a, b, t, f) => &[*a, *b, *t, *f],
        };
        for &a in operands {
            if a >= k || matches!(insts[a], Inst::Store(..) | Inst::Stream(..)) {
                return Err(format!("instruction {k} uses {a}, which is not an earlier value"));
            }
        }
    }
    Ok(())
}

fn epilogue_operands(insts: &[EInst]) -> Result<(), String> {
    for (k, inst) in insts.iter().enumerate() {
        let operands: &[usize] = match inst {
            EInst::Acc | EInst::Row(_) | EInst::Col(_) | EInst::Elem(..) | EInst::Const(_) => &[],
            EInst::Prim(_, a) => std::slice::from_ref(a),
            EInst::Bin(_, a, b) => &[*a, *b],
            EInst::Select(_, a, b, t, f) => &[*a, *b, *t, *f],
        };
        if let Some(a) = operands.iter().find(|&&a| a >= k) {
            return Err(format!("epilogue instruction {k} uses {a}, which is not an earlier value"));
        }
    }
    Ok(())
}

/// Ids and class counts are compared as 32-bit integers.
fn fits_i32(what: &str, n: usize) -> Result<(), String> {
    if n > i32::MAX as usize {
        return Err(format!("{what} {n} does not fit a 32-bit id"));
    }
    Ok(())
}

/// The extents of an image unfolded through `win` (from output row `var · rows` when
/// `first_row` is set, a variable the statement then binds).
fn unfolded(win: &Window, first_row: Option<(Var, usize)>, vars: &mut Vec<Var>) -> Result<Extents, String> {
    strides_positive(win)?;
    let e = extents(win)?;
    if let Some((var, rows)) = first_row {
        vars.push(var);
        size(&[rows, win.sh])?;
    }
    Ok(e)
}

/// The accesses of a statement that is not a loop; `Err` says which field is wrong.
pub(super) fn of(stmt: &Stmt) -> Result<Accesses<'_>, String> {
    let mut vars = Vec::new();
    let mut binds = None;
    let list = match stmt {
        // Loops are walked by the caller, which binds their variables; a barrier touches
        // no memory (where it may stand is the caller's check).
        Stmt::Loop { .. } | Stmt::Barrier => Vec::new(),
        // gemm.rs: tiles of `m × n` over `k`, `a` transposed when `ta`.
        Stmt::Gemm(g) => {
            epilogue_operands(&g.epilogue)?;
            let a = if g.ta { vec![(g.lda, g.k), (1, g.m)] } else { vec![(g.lda, g.m), (1, g.k)] };
            let b = match &g.b {
                Right::Matrix { ptr, ld } => at(ptr, "b", Use::Read, vec![(*ld, g.k), (1, g.n)]),
                // As `Im2col`'s image: reads clipped to the image; the product's shape must
                // be the unfolded matrix's.
                Right::Unfolded(u) => {
                    let e = unfolded(&u.win, u.first_row, &mut vars)?;
                    if g.k != e.taps || g.n > e.out {
                        return Err(format!(
                            "an unfolded b has {} rows of {} pixels, not {}×{}",
                            e.taps, e.out, g.k, g.n
                        ));
                    }
                    at(&u.src, "image", Use::Read, vec![(1, e.image)])
                }
            };
            let mut list =
                vec![at(&g.a, "a", Use::Read, a), b, at(&g.c, "c", Use::Write, vec![(g.ldc, g.m), (1, g.n)])];
            for inst in &g.epilogue {
                match inst {
                    EInst::Row(p) => list.push(at(p, "row operand", Use::Read, vec![(1, g.m)])),
                    EInst::Col(p) => list.push(at(p, "column operand", Use::Read, vec![(1, g.n)])),
                    EInst::Elem(p, ld) => {
                        list.push(at(p, "element operand", Use::Read, vec![(*ld, g.m), (1, g.n)]))
                    }
                    EInst::Acc | EInst::Const(_) | EInst::Prim(..) | EInst::Bin(..) | EInst::Select(..) => {}
                }
            }
            // gemm.rs: after the product, each sum over `k` of the matrix `b`.
            if !g.b_sums.is_empty() && !matches!(g.b, Right::Matrix { .. }) {
                return Err("sums of b need b to be a matrix".into());
            }
            for sum in &g.b_sums {
                match sum {
                    BSum::Columns { dst } => {
                        list.push(at(dst, "column sums of b", Use::Write, vec![(1, g.n)]))
                    }
                    BSum::OneHot { m, a, lda, c, ldc } => {
                        list.push(at(a, "one-hot a of a sum", Use::Read, vec![(*lda, g.k), (1, *m)]));
                        list.push(at(c, "one-hot sum of b", Use::Write, vec![(*ldc, *m), (1, g.n)]));
                    }
                }
            }
            list
        }
        // map.rs: `len` elements from each load and store, one element of a broadcast.
        Stmt::Map(m) => {
            map_operands(&m.insts)?;
            let mut list = Vec::new();
            for inst in &m.insts {
                match inst {
                    Inst::Load(p) => list.push(at(p, "load", Use::Read, vec![(1, m.len)])),
                    Inst::Store(p, _) | Inst::Stream(p, _) => {
                        list.push(at(p, "store", Use::Write, vec![(1, m.len)]))
                    }
                    Inst::Bcast(p) => list.push(at(p, "broadcast", Use::Read, vec![(1, 1)])),
                    Inst::Keep { seed, .. } => list.push(at(seed, "dropout seed", Use::Read, vec![(1, 1)])),
                    Inst::Const(_) | Inst::Prim(..) | Inst::Bin(..) | Inst::Select(..) => {}
                }
            }
            list
        }
        // unfold.rs: image reads are clipped to the image; every tap row is written
        // across all `oh · ow` columns.
        Stmt::Im2col(c) => {
            let e = unfolded(&c.win, c.first_row, &mut vars)?;
            vec![
                at(&c.src, "image", Use::Read, vec![(1, e.image)]),
                at(&c.dst, "columns", Use::Write, vec![(c.ld, e.taps), (1, e.out)]),
            ]
        }
        Stmt::Col2im(c) => {
            strides_positive(&c.win)?;
            let e = extents(&c.win)?;
            vec![
                at(&c.cols, "columns", Use::Read, vec![(c.ld, e.taps), (1, e.out)]),
                at(&c.image, "image", Use::Update, vec![(1, e.image)]),
            ]
        }
        // window.rs: windows clipped to the image.
        Stmt::Pool(p) => {
            let e = extents(&p.win)?;
            vec![
                at(&p.src, "input", Use::Read, vec![(1, e.image)]),
                at(&p.dst, "output", Use::Write, vec![(1, e.out_planes)]),
            ]
        }
        // backward.rs: a max window's gradient goes to its first pixel even when the
        // window is empty, so every window must start inside the image.
        Stmt::PoolBackward(p) => {
            let e = extents(&p.win)?;
            let w = &p.win;
            let starts_inside = |out: usize, stride: usize, pad: usize, size: usize| {
                out == 0 || (size > 0 && (out - 1).checked_mul(stride).is_some_and(|s| s < size + pad))
            };
            if e.out_planes > 0
                && !(starts_inside(w.oh, w.sh, w.pad[0], w.h) && starts_inside(w.ow, w.sw, w.pad[2], w.w))
            {
                return Err("a pooling window starts outside its image".into());
            }
            vec![
                at(&p.dy, "output gradient", Use::Read, vec![(1, e.out_planes)]),
                at(&p.x, "input", Use::Read, vec![(1, e.image)]),
                at(&p.dx, "input gradient", Use::Update, vec![(1, e.image)]),
            ]
        }
        // rows.rs
        Stmt::RowSum(r) => vec![
            at(&r.src, "rows", Use::Read, vec![(1, size(&[r.rows, r.len])?)]),
            at(&r.dst, "sums", Use::Write, vec![(1, r.rows)]),
        ],
        // sum.rs: strips of columns down every row.
        Stmt::ColumnSum(c) => vec![
            at(&c.src, "matrix", Use::Read, vec![(c.ld, c.rows), (1, c.cols)]),
            at(&c.dst, "sums", Use::Write, vec![(1, c.cols)]),
        ],
        Stmt::Softmax(s) => {
            let len = size(&[s.rows, s.cols])?;
            vec![
                at(&s.src, "input", Use::Read, vec![(1, len)]),
                at(&s.dst, "output", Use::Update, vec![(1, len)]),
            ]
        }
        Stmt::Lrn(l) => {
            let len = size(&[l.c, l.hw])?;
            vec![
                at(&l.src, "input", Use::Read, vec![(1, len)]),
                at(&l.dst, "output", Use::Write, vec![(1, len)]),
            ]
        }
        // rows.rs: ids outside the vocabulary give zeros.
        Stmt::Gather(g) => {
            fits_i32("a vocabulary of", g.vocab)?;
            vec![
                at(&g.ids, "ids", Use::Read, vec![(1, g.count)]),
                at(&g.table, "table", Use::Read, vec![(1, size(&[g.vocab, g.dim])?)]),
                at(&g.dst, "rows", Use::Write, vec![(1, size(&[g.count, g.dim])?)]),
            ]
        }
        // map.rs: the program runs at `len` elements for each value of `var` below
        // `outer`; broadcasts are loaded once, before that loop.
        Stmt::Reduce(r) => {
            map_operands(&r.insts)?;
            match r.insts.last() {
                None | Some(Inst::Store(..) | Inst::Stream(..)) => {
                    return Err("a reduction without a value to sum".into());
                }
                Some(_) => {}
            }
            binds = Some(r.var);
            let inner = Some((r.var, r.outer));
            let mut list = vec![at(&r.dst, "sum", Use::Write, vec![(1, 1)])];
            for inst in &r.insts {
                match inst {
                    Inst::Load(p) => {
                        list.push(Access { inner, ..at(p, "load", Use::Read, vec![(1, r.len)]) })
                    }
                    Inst::Store(p, _) | Inst::Stream(p, _) => {
                        list.push(Access { inner, ..at(p, "store", Use::Write, vec![(1, r.len)]) })
                    }
                    Inst::Bcast(p) => list.push(at(p, "broadcast", Use::Read, vec![(1, 1)])),
                    // The mask's lane numbers exist only in maps.
                    Inst::Keep { .. } => return Err("a dropout mask inside a reduction".into()),
                    Inst::Const(_) | Inst::Prim(..) | Inst::Bin(..) | Inst::Select(..) => {}
                }
            }
            list
        }
        // backward.rs
        Stmt::Transpose(t) => vec![
            at(&t.src, "input", Use::Read, vec![(t.lds, t.rows), (1, t.cols)]),
            at(&t.dst, "output", Use::Write, vec![(t.ldd, t.cols), (1, t.rows)]),
        ],
        // backward.rs: sums in f64 pairs in `acc`, then rounded into the table.
        Stmt::Scatter(s) => {
            fits_i32("a vocabulary of", s.vocab)?;
            let table = size(&[s.vocab, s.dim])?;
            vec![
                at(&s.ids, "ids", Use::Read, vec![(1, s.count)]),
                at(&s.src, "rows", Use::Read, vec![(1, size(&[s.count, s.dim])?)]),
                at(&s.acc, "accumulator", Use::Update, vec![(1, size(&[2, table])?)]),
                at(&s.table, "table", Use::Write, vec![(1, table)]),
            ]
        }
        Stmt::LrnBackward(l) => {
            let len = size(&[l.c, l.hw])?;
            vec![
                at(&l.dy, "output gradient", Use::Read, vec![(1, len)]),
                at(&l.x, "input", Use::Read, vec![(1, len)]),
                at(&l.dx, "input gradient", Use::Write, vec![(1, len)]),
                at(&l.scratch, "factors", Use::Update, vec![(1, size(&[2, len])?)]),
            ]
        }
        // loss.rs
        Stmt::CrossEntropy(c) => {
            fits_i32("a class count of", c.cols)?;
            let len = size(&[c.rows, c.cols])?;
            vec![
                at(&c.logits, "logits", Use::Read, vec![(1, len)]),
                at(&c.labels, "labels", Use::Read, vec![(1, c.rows)]),
                at(&c.grad, "gradient", Use::Update, vec![(1, len)]),
                at(&c.stats, "statistics", Use::Write, vec![(1, 2)]),
            ]
        }
    };
    Ok(Accesses { list, vars, binds })
}
