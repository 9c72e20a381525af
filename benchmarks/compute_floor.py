"""The compute floor of a training step: its kernels, called bare, with no framework around them.

One step of the blog's MLP is a fixed list of ATen kernels: the forward's addmm, relu and
dropout, the loss's log-softmax and NLL, their backward kernels, and Adam's update. Autograd,
`nn.Module` calls, the optimizer class and the training framework add Python and dispatch
work around them. This module calls the same kernels as autograd and torch's fused Adam would
(the backward written out by hand), on a preloaded batch, so its steps per second bound what
any loop around those kernels can reach: the distance of a loop to it is that loop's overhead.
"""

from __future__ import annotations

import time

import torch
from torch import Tensor, nn

_nll_loss_forward = torch.ops.aten.nll_loss_forward.default
_nll_loss_backward = torch.ops.aten.nll_loss_backward.default
_log_softmax_backward = torch.ops.aten._log_softmax_backward_data.default
_threshold_backward = torch.ops.aten.threshold_backward.default
_IGNORE_INDEX = -100  # F.cross_entropy's default
_MEAN = 1  # torch's reduction enum: Reduction::Mean


class BareStep:
    """One training step of an `nn.Sequential` MLP (Flatten, then [Linear, ReLU, Dropout?]*,
    Linear), on its own parameter tensors, as bare kernels plus `torch._fused_adam_`.

    The step reads and updates `net`'s parameters in place; gradients live in preallocated
    buffers. Dropout draws from torch's global generator as `nn.Dropout` does, so with the same
    seed a step matches autograd + `torch.optim.Adam(fused=True)` (tested).
    """

    def __init__(self, net: nn.Sequential, lr: float, betas: tuple[float, float],
                 eps: float, weight_decay: float = 0.0) -> None:
        self.layers: list[tuple[Tensor, Tensor, float]] = []  # (W, b, dropout p after it)
        modules = [m for m in net if not isinstance(m, nn.Flatten)]
        for m in modules:
            if isinstance(m, nn.Linear):
                self.layers.append((m.weight.detach(), m.bias.detach(), 0.0))
            elif isinstance(m, nn.Dropout):
                w, b, _ = self.layers[-1]
                self.layers[-1] = (w, b, m.p)
            elif not isinstance(m, nn.ReLU):
                raise TypeError(f"BareStep: no bare kernels written for {type(m).__name__}")
        self.params = [t for w, b, _ in self.layers for t in (w, b)]
        self.grads = [torch.empty_like(p) for p in self.params]
        self.exp_avgs = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sqs = [torch.zeros_like(p) for p in self.params]
        self.steps = [torch.zeros((), dtype=torch.float32) for _ in self.params]
        self.lr, self.betas, self.eps, self.weight_decay = lr, betas, eps, weight_decay
        self._one = torch.ones(())

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        """Forward, backward and one fused Adam update on (x, y); returns the loss."""
        last = len(self.layers) - 1
        inputs: list[Tensor] = []  # each layer's input
        relus: list[Tensor] = []  # each hidden layer's ReLU output (for threshold_backward)
        noises: list[Tensor | None] = []  # each hidden layer's dropout mask, scaled by 1/(1-p)
        h = x
        for i, (w, b, p) in enumerate(self.layers):
            inputs.append(h)
            h = torch.addmm(b, h, w.t())
            if i == last:
                break
            h = torch.relu(h)
            relus.append(h)
            noise = None
            if p > 0:  # what F.dropout runs on a CPU in training mode
                noise = torch.empty_like(h).bernoulli_(1 - p).div_(1 - p)
                h = h * noise
            noises.append(noise)
        log_p = torch._log_softmax(h, 1, False)
        loss, total_weight = _nll_loss_forward(log_p, y, None, _MEAN, _IGNORE_INDEX)

        g = _nll_loss_backward(self._one, log_p, y, None, _MEAN, _IGNORE_INDEX, total_weight)
        g = _log_softmax_backward(g, log_p, 1, log_p.dtype)
        for i in range(last, -1, -1):
            w = self.layers[i][0]
            torch.mm(g.t(), inputs[i], out=self.grads[2 * i])
            torch.sum(g, 0, out=self.grads[2 * i + 1])
            if i == 0:
                break  # the pixels need no gradient
            g = g.mm(w)
            noise = noises[i - 1]
            if noise is not None:
                g = g * noise
            g = _threshold_backward(g, relus[i - 1], 0)

        torch._foreach_add_(self.steps, 1)
        torch._fused_adam_(self.params, self.grads, self.exp_avgs, self.exp_avg_sqs, [],
                           self.steps, amsgrad=False, lr=self.lr, beta1=self.betas[0],
                           beta2=self.betas[1], weight_decay=self.weight_decay, eps=self.eps,
                           maximize=False, grad_scale=None, found_inf=None)
        return loss


def steps_per_s(step: BareStep, batches: list[tuple[Tensor, Tensor]]) -> float:
    """Steps per second of `step` over preloaded `batches` (float pixels, int64 labels)."""
    start = time.perf_counter()
    for x, y in batches:
        step(x, y)
    return len(batches) / (time.perf_counter() - start)
