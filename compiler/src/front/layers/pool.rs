//! `maxpool` and `avgpool`: windowed reductions over each channel.

use super::args::{ArgSpec, ArgType, ArgValue, Args, Padding};
use super::window::Window;
use super::{Arity, Gain, Layer, LayerSpec, ShapeError, needs_image};
use crate::ir::ops::{Op, TensorId};
use crate::ir::shape::Shape;
use crate::passes::lower::{Lower, batched};
use crate::support::diagnostic::Diagnostic;

const ARGS: &[ArgSpec] = &[
    ArgSpec::required("kernel", ArgType::Size, "window size, `k` or `[kh, kw]`"),
    ArgSpec::optional("stride", ArgType::Size, "step between windows (default: the kernel size)")
        .positional(),
    ArgSpec::named(
        "pad",
        ArgType::Padding,
        ArgValue::Padding(Padding::Explicit { top: 0, bottom: 0, left: 0, right: 0 }),
        "padding, at most half the kernel: `p`, `[ph, pw]`, `[top, bottom, left, right]`, `same` or `valid`",
    ),
    ArgSpec::named(
        "ceil",
        ArgType::Bool,
        ArgValue::Bool(false),
        "round the output size up (Caffe and GoogLeNet)",
    ),
];

const RULE: &str = "[c, h, w] → [c, h', w'] with h' = ⌊(h + pad_top + pad_bottom − kernel) / stride⌋ + 1 (⌈⌉ with `ceil: true`), likewise w'";

pub static MAXPOOL: LayerSpec = LayerSpec {
    name: "maxpool",
    doc: "maximum over each window (padding never wins)",
    shape_rule: RULE,
    arity: Arity::One,
    gain: Gain::Transparent,
    args: ARGS,
    build: build_max,
};

pub static AVGPOOL: LayerSpec = LayerSpec {
    name: "avgpool",
    doc: "mean over each window (padded zeros count towards the mean)",
    shape_rule: RULE,
    arity: Arity::One,
    gain: Gain::Transparent,
    args: ARGS,
    build: build_avg,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reduce {
    Max,
    Mean,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Pool {
    pub reduce: Reduce,
    pub window: Window,
}

fn build_max(args: &Args) -> Result<Box<dyn Layer>, Diagnostic> {
    build(args, Reduce::Max)
}

fn build_avg(args: &Args) -> Result<Box<dyn Layer>, Diagnostic> {
    build(args, Reduce::Mean)
}

fn build(args: &Args, reduce: Reduce) -> Result<Box<dyn Layer>, Diagnostic> {
    let kernel = args.size("kernel").expect("required");
    let pad = args.padding("pad");
    if let Padding::Explicit { top, bottom, left, right } = pad {
        let (kh, kw) = kernel;
        if top.max(bottom) > kh / 2 || left.max(right) > kw / 2 {
            return Err(args.error(
                "pad",
                format!("pooling padding must be at most half the {kh}×{kw} window"),
                format!("at most {} here", (kh / 2).min(kw / 2)),
            ));
        }
    }
    Ok(Box::new(Pool {
        reduce,
        window: Window {
            kernel,
            stride: args.size("stride").unwrap_or(kernel),
            dilation: (1, 1),
            pad,
            ceil: args.bool("ceil"),
        },
    }))
}

impl Layer for Pool {
    fn infer(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        let kind = match self.reduce {
            Reduce::Max => "maxpool",
            Reduce::Mean => "avgpool",
        };
        let Shape::Image { c, h, w } = inputs[0] else {
            return Err(needs_image(kind, &inputs[0]));
        };
        let p = self.window.place(kind, h, w)?;
        Ok(Shape::Image { c, h: p.out.0, w: p.out.1 })
    }

    fn lower(&self, cx: &mut Lower<'_>, inputs: &[TensorId], shapes: &[Shape], output: &Shape) -> TensorId {
        let Shape::Image { c, h, w } = shapes[0] else { unreachable!("checked: pools read images") };
        let win = self.window.batched(cx.batch(), c, h, w);
        let reduce = match self.reduce {
            Reduce::Max => crate::ir::ops::Reduce::Max,
            Reduce::Mean => crate::ir::ops::Reduce::Mean,
        };
        cx.op(Op::Pool2d { win, reduce }, vec![inputs[0]], batched(cx.batch(), output))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stride_defaults_to_kernel() {
        let l = Pool {
            reduce: Reduce::Mean,
            window: Window {
                kernel: (2, 2),
                stride: (2, 2),
                dilation: (1, 1),
                pad: Padding::Valid,
                ceil: false,
            },
        };
        assert_eq!(
            l.infer(&[Shape::Image { c: 6, h: 28, w: 28 }]).unwrap(),
            Shape::Image { c: 6, h: 14, w: 14 }
        );
        assert!(l.infer(&[Shape::Image { c: 6, h: 1, w: 1 }]).is_err());
    }
}
