"""torch's own test cases for Adam, AdamW and Adamax, run against src.optim: the OptimizerInfo
entries of torch.testing._internal.common_optimizers (shipped in the torch wheel; it needs the
`expecttest` package). Every CPU input of `optim_inputs_func` (with torch's foreach and fused
variants) must give torch's trajectory over 1000 steps, on the flat path and per tensor, and
every error input of `optim_error_inputs_func` (none on CPU needs fused, capturable or
differentiable) must raise torch's exception type with a message matching torch's regex."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.nn import Parameter

from src.optim import Adam, AdaMax, AdamW
from tests import optim_helpers as h

common_optimizers = pytest.importorskip("torch.testing._internal.common_optimizers")
# Importing torch's test utilities calls torch.backends.disable_global_flags() for the whole
# process; Lightning's Trainer then cannot set cudnn.deterministic, and every training test
# collected after this file fails. Undo it: these tests need none of torch's harness globals.
# torch.backends is a wrapper module: the flag lives in its functions' globals.
torch.backends.flags_frozen.__globals__["__allow_nonbracketed_mutation_flag"] = True

_one_thread = h.one_thread

OURS = {"Adam": Adam, "AdamW": AdamW, "Adamax": AdaMax}
INFOS = {info.name: info for info in common_optimizers.optim_db if info.name in OURS}
# Flags whose error inputs test torch's CUDA kernels, not the algorithm.
DEVICE_ONLY = ("fused", "capturable", "differentiable")


def _trajectory_cases() -> list[pytest.param]:
    cases = []
    for name, info in INFOS.items():
        for dtype in (torch.float32, torch.float64):
            inputs = common_optimizers._get_optim_inputs_including_global_cliquey_kwargs(
                "cpu", dtype, info, skip=("differentiable",))
            # torch leaves foreach out on CPU (its foreach kernels are for accelerators), but
            # CPU accepts foreach=True, which picks the per-tensor path here: add it.
            inputs += [
                common_optimizers.OptimizerInput(
                    params=None, kwargs={**x.kwargs, "foreach": True}, desc=f"{x.desc} & foreach")
                for x in info.optim_inputs_func("cpu", dtype)
            ]
            for optim_input in inputs:
                assert optim_input.params is None  # torch's CPU inputs leave params to tests
                cases.append(pytest.param(name, dtype, optim_input.kwargs,
                                          id=f"{name}-{str(dtype)[6:]}-{optim_input.desc}"))
    return cases


def _error_cases() -> list[pytest.param]:
    cases = []
    for name, info in INFOS.items():
        for error_input in info.optim_error_inputs_func(device="cpu", dtype=torch.float32):
            kwargs = error_input.optimizer_error_input.kwargs
            if any(kwargs.get(flag) for flag in DEVICE_ONLY):
                continue
            cases.append(pytest.param(name, error_input,
                                      id=f"{name}-{error_input.optimizer_error_input.desc}"))
    return cases


TRAJECTORY_CASES = _trajectory_cases()
ERROR_CASES = _error_cases()


def test_torchs_cases_are_all_here():
    """The generators give what the issue names: default, lr, weight_decay, maximize and
    amsgrad inputs for Adam in both dtypes, and error inputs for every class."""
    adam_descs = {case.id.split("-", 2)[2] for case in TRAJECTORY_CASES
                  if case.values[0] == "Adam"}
    for desc in ("default", "non-default lr", "nonzero weight_decay", "maximize", "amsgrad",
                 "amsgrad & foreach", "amsgrad & fused"):
        assert desc in adam_descs
    assert {case.values[0] for case in ERROR_CASES} == set(OURS)
    assert len(ERROR_CASES) >= 20


@h.FLAT
@pytest.mark.parametrize(("name", "dtype", "kwargs"), TRAJECTORY_CASES)
def test_trajectory_matches_torch(name, dtype, kwargs, flat):
    """Pre-drawn gradients: ≤ 1e-6 relative over 1000 steps in float64 (float32, 300 steps:
    the two orderings of the arithmetic differ in the last bits, so ≤ 2e-5)."""
    ours = h.make_params(h.SHAPES, dtype=dtype)
    ref = h.clone(ours)
    steps = h.STEPS if dtype == torch.float64 else 300
    grads = [h.grad_sequence(s, steps, seed=i) for i, s in enumerate(h.SHAPES)]
    torch_cls = INFOS[name].optim_cls
    h.run(OURS[name](ours, **copy.deepcopy(kwargs), flat=flat), ours, grads)
    h.run(torch_cls(ref, **copy.deepcopy(kwargs)), ref, grads)
    if dtype == torch.float64:
        h.assert_close(ours, ref, rtol=h.RTOL)
    else:
        h.assert_close(ours, ref, rtol=2e-5, atol=1e-6)


def _raises(cls, error_input, make_params):
    optim_input = error_input.optimizer_error_input
    params = optim_input.params if optim_input.params is not None else make_params()
    kwargs = copy.deepcopy(optim_input.kwargs)
    expected = error_input.error_type
    check = (pytest.warns if issubclass(expected, Warning) else pytest.raises)(
        expected, match=error_input.error_regex)
    if error_input.error_on == common_optimizers.OptimizerErrorEnum.CONSTRUCTION_ERROR:
        with check:
            cls(params, **kwargs)
    else:
        opt = cls(params, **kwargs)
        for group in opt.param_groups:
            for p in group["params"]:
                p.grad = torch.rand_like(p)
        with check:
            opt.step()


@pytest.mark.parametrize(("name", "error_input"), ERROR_CASES)
def test_bad_input_raises_torchs_error(name, error_input):
    def make_params():
        return [Parameter(torch.randn(2, 3))]

    _raises(INFOS[name].optim_cls, error_input, make_params)  # what torch does ...
    _raises(OURS[name], error_input, make_params)  # ... and so do we


def test_importing_torchs_test_cases_leaves_the_backend_flags_settable() -> None:
    assert not torch.backends.flags_frozen()  # else Trainer(deterministic=True) fails later
