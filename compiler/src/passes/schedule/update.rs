//! Optimizer updates as element-wise programs over the parameter, gradient and state
//! blocks: PyTorch's SGD (momentum, Nesterov, L2 decay), Adam and AdamW.

use crate::ir::kernel::{BinOp::*, Inst, Inst::*, Ptr};
use crate::ir::ops::{Hyper, UpdateRule};

/// The optimizer step as an element-wise program over `params, grads, hyper, state…`,
/// each address passed through `at` (the block being updated).
pub(super) fn update_program(rule: UpdateRule, ptrs: &[Ptr], at: &dyn Fn(&Ptr) -> Ptr) -> Vec<Inst> {
    let (weights, g, hyper) = (&ptrs[0], &ptrs[1], &ptrs[2]);
    let mut p = vec![
        Load(at(weights)),                    // 0: w
        Load(at(g)),                          // 1
        Bcast(hyper.plus(Hyper::GRAD_SCALE)), // 2
        Bin(Mul, 1, 2),                       // 3: g
        Bcast(hyper.plus(Hyper::LR)),         // 4: lr
    ];
    let push = |p: &mut Vec<Inst>, i: Inst| {
        p.push(i);
        p.len() - 1
    };
    match rule {
        UpdateRule::Sgd { momentum, nesterov, weight_decay } => {
            let mut grad = 3;
            if weight_decay != 0.0 {
                let wd = push(&mut p, Const(weight_decay));
                let decay = push(&mut p, Bin(Mul, 0, wd));
                grad = push(&mut p, Bin(Add, grad, decay));
            }
            let step = if momentum == 0.0 {
                grad
            } else {
                let v = push(&mut p, Load(at(&ptrs[3])));
                let mu = push(&mut p, Const(momentum));
                let mv = push(&mut p, Bin(Mul, mu, v));
                let v = push(&mut p, Bin(Add, mv, grad));
                push(&mut p, Store(at(&ptrs[3]), v));
                if nesterov {
                    let mv = push(&mut p, Bin(Mul, mu, v));
                    push(&mut p, Bin(Add, grad, mv))
                } else {
                    v
                }
            };
            let delta = push(&mut p, Bin(Mul, 4, step));
            let w = push(&mut p, Bin(Sub, 0, delta));
            push(&mut p, Store(at(weights), w));
        }
        UpdateRule::Adam { beta1, beta2, eps, weight_decay, decoupled } => {
            let mut weight = 0;
            let mut grad = 3;
            if weight_decay != 0.0 {
                let wd = push(&mut p, Const(weight_decay));
                if decoupled {
                    // w ← w · (1 − lr · wd)
                    let lrwd = push(&mut p, Bin(Mul, 4, wd));
                    let one = push(&mut p, Const(1.0));
                    let keep = push(&mut p, Bin(Sub, one, lrwd));
                    weight = push(&mut p, Bin(Mul, 0, keep));
                } else {
                    let decay = push(&mut p, Bin(Mul, 0, wd));
                    grad = push(&mut p, Bin(Add, grad, decay));
                }
            }
            let m = push(&mut p, Load(at(&ptrs[3])));
            let b1 = push(&mut p, Const(beta1));
            let c1 = push(&mut p, Const(1.0 - beta1));
            let mm = push(&mut p, Bin(Mul, b1, m));
            let mg = push(&mut p, Bin(Mul, c1, grad));
            let m = push(&mut p, Bin(Add, mm, mg));
            push(&mut p, Store(at(&ptrs[3]), m));
            let v = push(&mut p, Load(at(&ptrs[4])));
            let b2 = push(&mut p, Const(beta2));
            let c2 = push(&mut p, Const(1.0 - beta2));
            let vv = push(&mut p, Bin(Mul, b2, v));
            let gg = push(&mut p, Bin(Mul, grad, grad));
            let vg = push(&mut p, Bin(Mul, c2, gg));
            let v = push(&mut p, Bin(Add, vv, vg));
            push(&mut p, Store(at(&ptrs[4]), v));
            let bias1 = push(&mut p, Bcast(hyper.plus(Hyper::BIAS1)));
            let bias2 = push(&mut p, Bcast(hyper.plus(Hyper::BIAS2)));
            let mhat = push(&mut p, Bin(Mul, m, bias1));
            let vhat = push(&mut p, Bin(Mul, v, bias2));
            let root = push(&mut p, Prim(crate::ir::kernel::Prim::Sqrt, vhat));
            let e = push(&mut p, Const(eps));
            let denom = push(&mut p, Bin(Add, root, e));
            let ratio = push(&mut p, Bin(Div, mhat, denom));
            let delta = push(&mut p, Bin(Mul, 4, ratio));
            let w = push(&mut p, Bin(Sub, weight, delta));
            push(&mut p, Store(at(weights), w));
        }
    }
    p
}
