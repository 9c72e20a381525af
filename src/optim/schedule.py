"""Step-size schedules: α_t, the step size of step t, for any torch optimizer.

    constant   α_t = α
    inv_sqrt   α_t = α/√t, t = 1, 2, … — Kingma & Ba's §6.1 (logistic regression), where it
               is what their convergence analysis (Theorem 4.1) assumes

The schedule sets each param group's `lr` before every step, from the group's initial `lr`
(kept as `initial_lr`, as torch's schedulers keep it) and the number of steps taken, so it
works for this project's optimizers and torch.optim's alike and needs nothing from the
training loop: it runs as the optimizer's own step post-hook.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch.optim import Optimizer

__all__ = ["SCHEDULE_FACTORS", "attach_schedule"]

# α_t / α as a function of t (1-based).
SCHEDULE_FACTORS = {
    "constant": lambda t: 1.0,
    "inv_sqrt": lambda t: 1.0 / math.sqrt(t),
}


def attach_schedule(optimizer: Optimizer, schedule: str) -> Optimizer:
    """`optimizer`, with its step size following `schedule` from its next step on.

    A LambdaLR advanced by a post-hook after every `optimizer.step()`: LambdaLR counts its
    own steps from 0 (the first optimizer step), hence the t + 1. "constant" attaches
    nothing, so the default costs nothing.
    """
    factor = SCHEDULE_FACTORS[schedule]
    if schedule == "constant":
        return optimizer
    # Here, not at the top: the config reads SCHEDULE_FACTORS before torch is imported.
    from torch.optim.lr_scheduler import LambdaLR

    scheduler = LambdaLR(optimizer, lambda steps_taken: factor(steps_taken + 1))
    optimizer.register_step_post_hook(lambda opt, args, kwargs: scheduler.step())
    optimizer.lr_schedule = scheduler  # type: ignore[attr-defined]  # for inspection
    return optimizer
