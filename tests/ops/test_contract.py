"""The operator contract: the checks every operator in zoo.ops shares (CONTRIBUTING.md, "Operator tests"),
run over the case table in tests/support/op_table.py, one ``Family`` per module of zoo/ops.

fast == reference (float32 and float64, several shapes), backward == reference backward, gradcheck (float64,
tiny inputs), meta device, bfloat16 forward, torch.compile / torch.export. A new operator adds its family to
the table; what only one family has (hand-worked values, paper facts, edge cases, error messages) stays in
tests/ops/test_<family>.py.
"""
from __future__ import annotations

import contextlib
import itertools
import pkgutil

import pytest
import torch

import zoo.ops
from support.op_table import CHECKS, FAMILIES, Call, ident, seed

TINY = 1024  # gradcheck inputs: at most this many elements in all (finite differences cost one forward each)


def _case_id(family, case) -> str:
    how = getattr(case, "how", None)  # traced cases: the same subject may be exported and compiled
    return f"{family.name}-{case.id}" + (f"-{how}" if how else "")


def _cases(check: str) -> list:
    return [pytest.param(case, id=_case_id(family, case), marks=_marks(case))
            for family in FAMILIES for case in getattr(family, check)]


def _marks(case) -> list:
    # inductor's C++ build takes 20-60 s on 2 shared cores
    slow = getattr(case, "how", None) == "inductor" or getattr(case, "slow", False)
    return [pytest.mark.slow] if slow else []


def _floating(obj):
    """The floating-point tensors in a (nested) output."""
    if isinstance(obj, torch.Tensor):
        return [obj] if obj.is_floating_point() else []
    if isinstance(obj, (list, tuple)):
        return [t for o in obj for t in _floating(o)]
    return []


def _module_tensors(call: Call):
    return [t for m in call.owned_modules() for t in itertools.chain(m.parameters(), m.buffers())]


@pytest.fixture(autouse=True)
def _seeded():
    seed(0)


# --- the table itself -----------------------------------------------------------------------------------
def test_every_zoo_ops_module_has_a_family():
    modules = {m.name for m in pkgutil.iter_modules(zoo.ops.__path__) if not m.name.startswith("_")}
    names = [family.name for family in FAMILIES]
    assert len(names) == len(set(names))
    assert set(names) == modules


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_family_has_every_check(family):
    """Cases or (only) a reason for each check, unique case ids, fast == reference in float32 and float64."""
    for check in CHECKS:
        has_cases, reason = bool(getattr(family, check)), family.missing.get(check)
        assert has_cases != bool(reason), f"{family.name}: {check} needs cases or (only) a reason in missing"
    assert set(family.missing) <= set(CHECKS)
    ids = [(check, _case_id(family, case)) for check in (*CHECKS, "backward") for case in getattr(family, check)]
    assert len(ids) == len(set(ids)), f"{family.name}: case ids repeat"
    assert {d for case in family.reference for d in case.dtypes} >= {torch.float32, torch.float64}
    for case in family.reference:
        _assert_settings_cover_odd_non_square_and_batch(case)


def _assert_settings_cover_odd_non_square_and_batch(case):
    """Across its settings, each comparison sees batch > 1, H != W and an odd H or W (the first 4-D input)."""
    shapes = []
    for setting in case.settings:
        for pair in case.pairs(setting, case.dtypes[0]):
            assert pair.fast.fn is not pair.reference.fn, pair.label
            shapes.append(next(t.shape for t in _floating(pair.fast.args) if t.dim() == 4))
    assert any(s[0] > 1 for s in shapes), (case.id, shapes)
    assert any(s[2] != s[3] for s in shapes), (case.id, shapes)
    assert any(s[2] % 2 or s[3] % 2 for s in shapes), (case.id, shapes)


# --- 3. fast == reference -------------------------------------------------------------------------------
REFERENCE = [pytest.param(case, setting, dtype, id=f"{family.name}-{case.id}-{ident(setting)}-{ident(dtype)}")
             for family in FAMILIES for case in family.reference for setting in case.settings
             for dtype in case.dtypes]


@pytest.mark.parametrize("case,setting,dtype", REFERENCE)
def test_fast_matches_reference(case, setting, dtype):
    pairs = case.pairs(setting, dtype)
    assert pairs
    for label, fast, reference, check in pairs:
        expected = reference()
        out = fast()
        assert _floating(out) and all(t.dtype == dtype for t in _floating(out)), label
        if check is not None:
            assert check(out), label
        torch.testing.assert_close(out, expected, **case.tol[dtype], msg=lambda m, label=label: f"{label}: {m}")


BACKWARD = [pytest.param(case, setting, id=f"{family.name}-{case.id}-{ident(setting)}")
            for family in FAMILIES for case in family.backward for setting in case.settings]


@pytest.mark.parametrize("case,setting", BACKWARD)
def test_backward_matches_reference(case, setting):
    fast, reference, leaves = case.build(setting)
    grads = []
    for fn in (fast, reference):
        xs = [t.detach().clone().requires_grad_() for t in leaves]
        out = fn(*xs)
        if case.loss is not None:
            loss = case.loss(out)
        else:
            weight = torch.randn(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(4))
            loss = (out * weight).sum()
        loss.backward()
        assert all(x.grad is not None for x in xs)
        grads.append([x.grad for x in xs])
    for i, (g_fast, g_ref) in enumerate(zip(*grads)):
        torch.testing.assert_close(g_fast, g_ref, **case.tol, msg=lambda m, i=i: f"input {i}: {m}")


# --- 5. gradcheck ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", _cases("gradcheck"))
def test_gradcheck(case):
    call = case.call()
    tensors = _floating(call.args)
    assert all(t.dtype == torch.float64 for t in tensors + _module_tensors(call) if t.is_floating_point())
    assert any(t.requires_grad for t in tensors)
    assert sum(t.numel() for t in tensors) <= TINY
    assert torch.autograd.gradcheck(call.fn, call.args, fast_mode=case.fast_mode)


# --- 6. meta device -------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", _cases("meta"))
def test_meta_device(case):
    with torch.device("meta") if case.context else contextlib.nullcontext():
        call = case.call()
        out = call()
    assert out.device.type == "meta" and tuple(out.shape) == case.shape
    assert all(t.is_meta for t in _module_tensors(call))


# --- 7. bfloat16 ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", _cases("bfloat16"))
def test_bfloat16_forward(case):
    call = case.call()
    assert all(t.dtype == torch.float32 for t in _floating(call.args))
    expected = call() if case.expected is None else None
    low = call.to(torch.bfloat16)
    if case.expected is not None:
        expected = case.expected(low)
    out = low()
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    atol = case.atol * expected.abs().max().item() if case.atol_of_max else case.atol
    torch.testing.assert_close(out.float(), expected, rtol=case.rtol, atol=atol)


# --- 8. torch.compile / torch.export --------------------------------------------------------------------
@pytest.mark.parametrize("case", _cases("traced"))
def test_traced(case):
    call = case.call()
    if case.how == "export":
        shapes = case.dynamic_shapes() if case.dynamic_shapes is not None else None
        traced = torch.export.export(call.fn, tuple(call.args), dict(call.kwargs), dynamic_shapes=shapes).module()
    else:
        traced = torch.compile(call.fn, backend=case.how, fullgraph=case.fullgraph)
    for args in case.inputs() if case.inputs is not None else [call.args]:
        expected = case.expected(*args) if case.expected is not None else call.fn(*args, **call.kwargs)
        torch.testing.assert_close(traced(*args, **call.kwargs), expected, **case.tol)
