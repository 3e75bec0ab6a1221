//! `conv`: 2-D convolution (cross-correlation), as PyTorch's `Conv2d`.

use super::args::{ArgSpec, ArgType, ArgValue, Args, Padding};
use super::window::Window;
use super::{Arity, Gain, Layer, LayerSpec, ParamInit, ParamRole, ParamSpec, ShapeError, needs_image};
use crate::ir::init::Init;
use crate::ir::ops::{Layout, Op, TensorId};
use crate::ir::shape::Shape;
use crate::passes::lower::{Lower, batched};
use crate::support::diagnostic::Diagnostic;

pub static SPEC: LayerSpec = LayerSpec {
    name: "conv",
    doc: "2-D convolution over an image",
    shape_rule: "[c, h, w] → [out, h', w'] with h' = ⌊(h + pad_top + pad_bottom − dilation·(kernel − 1) − 1) / stride⌋ + 1, likewise w'",
    arity: Arity::One,
    gain: Gain::Other,
    args: &[
        ArgSpec::required("out", ArgType::Int, "number of output channels"),
        ArgSpec::required("kernel", ArgType::Size, "kernel size, `k` or `[kh, kw]`"),
        ArgSpec::named("stride", ArgType::Size, ArgValue::Size(1, 1), "step between windows"),
        ArgSpec::named(
            "pad",
            ArgType::Padding,
            ArgValue::Padding(Padding::Explicit { top: 0, bottom: 0, left: 0, right: 0 }),
            "zero padding: `p`, `[ph, pw]`, `[top, bottom, left, right]`, `same` or `valid`",
        ),
        ArgSpec::named("dilation", ArgType::Size, ArgValue::Size(1, 1), "spacing between kernel taps"),
        ArgSpec::named(
            "groups",
            ArgType::Int,
            ArgValue::Int(1),
            "split channels into this many independent groups",
        ),
        ArgSpec::named("bias", ArgType::Bool, ArgValue::Bool(true), "add a learnt bias per output channel"),
        ArgSpec::optional(
            "init",
            ArgType::Init,
            "weight initialiser (default: from the activation that follows)",
        ),
    ],
    build,
};

#[derive(Debug, Clone, PartialEq)]
pub struct Conv {
    pub out: u64,
    pub window: Window,
    pub groups: u64,
    pub bias: bool,
    pub init: Option<Init>,
}

fn build(args: &Args) -> Result<Box<dyn Layer>, Diagnostic> {
    let out = args.int_at_least("out", 1);
    let groups = args.int_at_least("groups", 1);
    if args.in_range() && !out.is_multiple_of(groups) {
        return Err(args.error(
            "groups",
            format!("`conv` output channels ({out}) must be divisible by `groups` ({groups})"),
            format!("{out} is not a multiple of {groups}"),
        ));
    }
    let size = |name| args.size(name).expect("schema gives a default");
    Ok(Box::new(Conv {
        out,
        window: Window {
            kernel: size("kernel"),
            stride: size("stride"),
            dilation: size("dilation"),
            pad: args.padding("pad"),
            ceil: false,
        },
        groups,
        bias: args.bool("bias"),
        init: args.init("init"),
    }))
}

impl Layer for Conv {
    fn infer(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        let Shape::Image { c, h, w } = inputs[0] else {
            return Err(needs_image("conv", &inputs[0]));
        };
        if c % self.groups != 0 {
            return Err(ShapeError::new(
                format!("`conv` input channels ({c}) must be divisible by `groups` ({})", self.groups),
                format!("input has {c} channels"),
            ));
        }
        let p = self.window.place("conv", h, w)?;
        Ok(Shape::Image { c: self.out, h: p.out.0, w: p.out.1 })
    }

    fn params(&self, inputs: &[Shape]) -> Vec<ParamSpec> {
        let c = inputs[0].channels().unwrap_or(0);
        let (kh, kw) = self.window.kernel;
        let mut ps = vec![ParamSpec::weight("weight", vec![self.out, c / self.groups, kh, kw], self.init)];
        if self.bias {
            ps.push(ParamSpec {
                name: "bias",
                dims: vec![self.out],
                role: ParamRole::Trainable,
                init: ParamInit::Fixed(Init::Zeros),
            });
        }
        ps
    }

    fn macs(&self, inputs: &[Shape], output: &Shape) -> Option<u64> {
        let c = inputs[0].channels().unwrap_or(0);
        let (kh, kw) = self.window.kernel;
        output.elements().checked_mul(c / self.groups)?.checked_mul(kh.checked_mul(kw)?)
    }

    fn lower(&self, cx: &mut Lower<'_>, inputs: &[TensorId], shapes: &[Shape], output: &Shape) -> TensorId {
        let Shape::Image { c, h, w } = shapes[0] else { unreachable!("checked: conv reads images") };
        let win = self.window.batched(cx.batch(), c, h, w);
        let dims = batched(cx.batch(), output);
        let k = self.out as usize;
        // A window that covers the whole unpadded input once (LeNet's C5) is a dense layer
        // over the flattened image: one product over the batch instead of one
        // single-column product per image.
        let whole = win.oh == 1 && win.ow == 1 && win.pad == [0; 4] && (win.kh, win.kw) == (win.h, win.w);
        let (y, inner) = if whole && self.groups == 1 && win.dh == 1 && win.dw == 1 {
            let weight = cx.param(0, Layout::Transposed);
            let op = Op::MatMul { m: cx.batch(), k: win.c * win.h * win.w, n: k, ta: false };
            (cx.op(op, vec![inputs[0], weight], dims.clone()), 1)
        } else {
            let weight = cx.param(0, Layout::Same);
            let op = Op::Conv2d { win, k, groups: self.groups as usize };
            (cx.op(op, vec![inputs[0], weight], dims.clone()), win.oh * win.ow)
        };
        if !self.bias {
            return y;
        }
        let bias = cx.param(1, Layout::Same);
        let op = Op::AddChannel { outer: cx.batch(), channels: k, inner };
        cx.op(op, vec![y, bias], dims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(out: u64, k: u64, s: u64, p: u64, groups: u64) -> Conv {
        Conv {
            out,
            window: Window {
                kernel: (k, k),
                stride: (s, s),
                dilation: (1, 1),
                pad: Padding::Explicit { top: p, bottom: p, left: p, right: p },
                ceil: false,
            },
            groups,
            bias: true,
            init: None,
        }
    }

    #[test]
    fn lenet_c1_keeps_28_with_padding_2() {
        let l = conv(6, 5, 1, 2, 1);
        let x = Shape::Image { c: 1, h: 28, w: 28 };
        let y = l.infer(&[x]).unwrap();
        assert_eq!(y, Shape::Image { c: 6, h: 28, w: 28 });
        let params: u64 = l.params(&[x]).iter().map(ParamSpec::elements).sum();
        assert_eq!(params, 156);
        assert_eq!(l.macs(&[x], &y), Some(6 * 28 * 28 * 25));
    }

    #[test]
    fn grouped_conv_divides_weights() {
        let l = conv(64, 3, 1, 1, 32);
        let x = Shape::Image { c: 32, h: 8, w: 8 };
        assert_eq!(l.params(&[x])[0].dims, vec![64, 1, 3, 3]);
        let bad = Shape::Image { c: 30, h: 8, w: 8 };
        assert!(l.infer(&[bad]).is_err());
    }

    #[test]
    fn rejects_vectors_with_a_hint() {
        let e = conv(6, 5, 1, 0, 1).infer(&[Shape::Vector { n: 10 }]).unwrap_err();
        assert!(e.help.unwrap().contains("dense"));
    }
}
