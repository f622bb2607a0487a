"""``zoo benchmark``: latency, throughput, peak memory, parameters and GFLOPs of a registry model.

Models are built with random weights (speed does not depend on the values, and nothing is downloaded).
Timing: ``warmup`` untimed calls (the first includes torch.compile's compilation and is reported apart
as ``first_call_ms``), then the median and the 10th / 90th percentiles of ``repeats`` timed calls, with the
device synchronised around each call. ``train`` times forward + backward of the sum of the outputs (a
proxy loss; no optimiser step). Peak memory: on CUDA the ``torch.cuda.max_memory_allocated`` peak of
the first call above what was allocated before it; on the CPU the growth of the process's peak resident
set during the first call (Linux VmHWM, reset through /proc/self/clear_refs) over what it held before, so
the inputs and weights are not counted and one-time allocations of the first call are; None where neither
is available. The first call is always made (``warmup`` counts it). GFLOPs: one forward of the same
batch, counted as in ``zoo.cards.stats`` (2 FLOPs per multiply-accumulate).
"""
from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils._pytree import tree_flatten

from zoo.errors import ZooError
from zoo.factory import create, example_inputs, model_info
from zoo.tasks import get_task

RUNTIMES = ("eager", "compile", "onnxruntime")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class BenchmarkError(ZooError):
    """The benchmark cannot run as asked (runtime, mode or entry)."""


@dataclass(frozen=True)
class BenchmarkResult:
    """One measurement (JSON-able with :func:`dataclasses.asdict`)."""

    model: str
    runtime: str
    device: str
    dtype: str
    batch: int
    size: tuple[int, int]
    channels_last: bool
    train: bool
    warmup: int
    repeats: int
    median_ms: float
    p10_ms: float
    p90_ms: float
    first_call_ms: float
    samples_per_second: float
    peak_memory_mb: float | None
    memory_method: str
    params_m: float
    gflops: float
    torch_version: str


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


class _PeakMemory:
    """Peak memory over a block: CUDA allocator statistics, or the growth of Linux's VmHWM on the CPU."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.method = "cuda max_memory_allocated" if device.type == "cuda" else "unavailable"
        if device.type == "cpu" and _reset_peak_rss():
            self.method = "cpu peak RSS growth (VmHWM)"

    def __enter__(self) -> _PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
        elif self.method.startswith("cpu"):
            _reset_peak_rss()
            self.base = _status_kb("VmRSS")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            self.peak_mb = (torch.cuda.max_memory_allocated(self.device) - self.base) / 2**20
        elif self.method.startswith("cpu"):
            self.peak_mb = max(0, _status_kb("VmHWM") - self.base) / 1024
        else:
            self.peak_mb = None


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise OSError(f"/proc/self/status has no {field}")


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        _status_kb("VmHWM")
        return True
    except OSError:
        return False


def _step(model: torch.nn.Module, inputs: tuple[Any, ...], train: bool) -> Callable[[], Any]:
    if not train:
        def forward() -> Any:
            with torch.no_grad():
                return model(*inputs)
        return forward

    def forward_backward() -> Any:
        model.zero_grad(set_to_none=True)
        outputs = [t for t in tree_flatten(model(*inputs))[0] if isinstance(t, torch.Tensor) and t.is_floating_point()]
        sum(t.float().sum() for t in outputs).backward()
    return forward_backward


def _onnxruntime_step(name: str, size: tuple[int, int], batch: int, inputs: tuple[Any, ...]) -> Callable[[], Any]:
    try:
        import onnxruntime
    except ImportError:
        raise BenchmarkError("--runtime onnxruntime needs onnxruntime: pip install 'dynzoo[export]'") from None
    from zoo.export import export

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        export(name, path, size=size, dynamic_batch=batch > 1, random_init=True)
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {i.name: t.numpy() for i, t in zip(session.get_inputs(), inputs)}
    return lambda: session.run(None, feeds)


def benchmark(name: str, *, batch: int = 1, size: tuple[int, int] | None = None, dtype: str = "float32",
              channels_last: bool = False, runtime: str = "eager", train: bool = False, device: str = "cpu",
              warmup: int = 3, repeats: int = 10) -> BenchmarkResult:
    """Measure ``name`` (random weights) on a batch of ``batch`` inputs of spatial ``size`` (default: the
    entry's ``input_size``). See the module docstring for what each number means."""
    from zoo.cards.stats import forward_flops

    info = model_info(name)
    if runtime not in RUNTIMES:
        raise BenchmarkError(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")
    if dtype not in DTYPES:
        raise BenchmarkError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    if batch < 1 or warmup < 0 or repeats < 1:
        raise BenchmarkError(f"need batch >= 1, warmup >= 0 and repeats >= 1, got {batch}, {warmup}, {repeats}")
    if train and get_task(info.task).detector:
        raise BenchmarkError(f"{info.name!r}: --train needs ground-truth boxes for a detector; time inference instead")
    if runtime == "onnxruntime" and (train or device != "cpu" or dtype != "float32" or channels_last):
        raise BenchmarkError("--runtime onnxruntime times float32 inference on the CPU only "
                             "(no --train, --device, --dtype or --channels-last)")
    size = tuple(size) if size is not None else tuple(info.input_size[-2:])
    target = torch.device(device)
    torch.manual_seed(0)
    model = create(info.name, device=target, dtype=DTYPES[dtype])
    model.train(train)
    inputs = example_inputs(info, size, batch=batch, device=target)
    inputs = tuple([t.to(DTYPES[dtype]) for t in x] if isinstance(x, list) else x.to(DTYPES[dtype]) for x in inputs)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        inputs = tuple(x.contiguous(memory_format=torch.channels_last) if isinstance(x, torch.Tensor) and x.dim() == 4
                       else x for x in inputs)
    if runtime == "onnxruntime":
        step = _onnxruntime_step(info.name, size, batch, inputs)
    else:
        step = _step(torch.compile(model) if runtime == "compile" else model, inputs, train)

    with _PeakMemory(target) as memory:
        start = time.perf_counter()
        step()
        _synchronize(target)
        first_ms = (time.perf_counter() - start) * 1e3
    for _ in range(max(0, warmup - 1)):
        step()
    samples = []
    for _ in range(repeats):
        _synchronize(target)
        start = time.perf_counter()
        step()
        _synchronize(target)
        samples.append((time.perf_counter() - start) * 1e3)
    params = sum(p.numel() for p in model.parameters())
    with torch.no_grad():  # after the timing, so its activations do not pre-warm the memory measurement
        gflops = forward_flops(model.eval(), inputs) / 1e9
    deciles = statistics.quantiles(samples, n=10, method="inclusive") if len(samples) > 1 else samples * 9
    median = statistics.median(samples)
    return BenchmarkResult(
        model=info.name, runtime=runtime, device=str(target), dtype=dtype, batch=batch, size=size,
        channels_last=channels_last, train=train, warmup=warmup, repeats=repeats, median_ms=median,
        p10_ms=deciles[0], p90_ms=deciles[-1], first_call_ms=first_ms, samples_per_second=batch / median * 1e3,
        peak_memory_mb=memory.peak_mb, memory_method=memory.method, params_m=params / 1e6, gflops=gflops,
        torch_version=torch.__version__,
    )


def as_json(results: list[BenchmarkResult]) -> list[dict[str, Any]]:
    return [asdict(r) for r in results]
