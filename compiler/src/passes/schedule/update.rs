//! Optimizer updates as element-wise programs over the parameter, gradient and state
//! blocks: PyTorch's SGD (momentum, Nesterov, L2 decay), Adam and AdamW.

use crate::ir::kernel::{Inst, Insts, Prim, Ptr};
use crate::ir::ops::{Hyper, UpdateRule};

/// The optimizer step as an element-wise program over `params, grads, hyper, state…`,
/// each address passed through `at` (the block being updated).
pub(super) fn update_program(rule: UpdateRule, ptrs: &[Ptr], at: &dyn Fn(&Ptr) -> Ptr) -> Vec<Inst> {
    let (weights, g, hyper) = (&ptrs[0], &ptrs[1], &ptrs[2]);
    let mut p = Insts::default();
    let w = p.load(at(weights));
    let raw = p.load(at(g));
    let grad_scale = p.bcast(hyper.plus(Hyper::GRAD_SCALE));
    let g = p.mul(raw, grad_scale);
    let lr = p.bcast(hyper.plus(Hyper::LR));
    match rule {
        UpdateRule::Sgd { momentum, nesterov, weight_decay } => {
            let mut grad = g;
            if weight_decay != 0.0 {
                let decay = p.scale(w, weight_decay);
                grad = p.add(grad, decay);
            }
            let step = if momentum == 0.0 {
                grad
            } else {
                let v = p.load(at(&ptrs[3]));
                let mu = p.constant(momentum);
                let mv = p.mul(mu, v);
                let v = p.add(mv, grad);
                p.store(at(&ptrs[3]), v);
                if nesterov {
                    let mv = p.mul(mu, v);
                    p.add(grad, mv)
                } else {
                    v
                }
            };
            let delta = p.mul(lr, step);
            let w = p.sub(w, delta);
            p.store(at(weights), w);
        }
        UpdateRule::Adam { beta1, beta2, eps, weight_decay, decoupled } => {
            let mut weight = w;
            let mut grad = g;
            if weight_decay != 0.0 {
                let wd = p.constant(weight_decay);
                if decoupled {
                    // w ← w · (1 − lr · wd)
                    let lrwd = p.mul(lr, wd);
                    let one = p.constant(1.0);
                    let keep = p.sub(one, lrwd);
                    weight = p.mul(w, keep);
                } else {
                    let decay = p.mul(w, wd);
                    grad = p.add(grad, decay);
                }
            }
            let m = p.load(at(&ptrs[3]));
            let b1 = p.constant(beta1);
            let c1 = p.constant(1.0 - beta1);
            let mm = p.mul(b1, m);
            let mg = p.mul(c1, grad);
            let m = p.add(mm, mg);
            p.store(at(&ptrs[3]), m);
            let v = p.load(at(&ptrs[4]));
            let b2 = p.constant(beta2);
            let c2 = p.constant(1.0 - beta2);
            let vv = p.mul(b2, v);
            let gg = p.mul(grad, grad);
            let vg = p.mul(c2, gg);
            let v = p.add(vv, vg);
            p.store(at(&ptrs[4]), v);
            let bias1 = p.bcast(hyper.plus(Hyper::BIAS1));
            let bias2 = p.bcast(hyper.plus(Hyper::BIAS2));
            let mhat = p.mul(m, bias1);
            let vhat = p.mul(v, bias2);
            let root = p.prim(Prim::Sqrt, vhat);
            let e = p.constant(eps);
            let denom = p.add(root, e);
            let ratio = p.div(mhat, denom);
            let delta = p.mul(lr, ratio);
            let w = p.sub(weight, delta);
            p.store(at(weights), w);
        }
    }
    p.finish()
}
