"""``zoo benchmark`` (zoo/benchmark.py): the numbers it reports are there, consistent and labelled; bad
requests are refused by name. Timings are never asserted (benchmarks/ records them)."""
from __future__ import annotations

import dataclasses
import json

import pytest

import zoo

from zoo.benchmark import BenchmarkError, benchmark
from zoo.cards.stats import model_stats
from zoo.cli import main


def test_an_inference_run_reports_every_field():
    result = benchmark("dy-resnet-digits", batch=3, size=(32, 32), warmup=1, repeats=3)
    assert (result.model, result.runtime, result.batch, result.size, result.repeats) == ("dy-resnet-digits", "eager", 3,
                                                                                        (32, 32), 3)
    assert 0 < result.p10_ms <= result.median_ms <= result.p90_ms
    assert result.samples_per_second == pytest.approx(3 / result.median_ms * 1e3)
    assert result.params_m == pytest.approx(model_stats(zoo.model_info("dy-resnet-digits")).params / 1e6)
    assert result.gflops > 0 and result.first_call_ms > 0
    assert result.peak_memory_mb is None or result.peak_memory_mb >= 0
    json.dumps(dataclasses.asdict(result))


def test_flops_scale_with_the_batch_and_training_runs_backward():
    one = benchmark("deeplabv2-lsdfn-small", size=(64, 64), warmup=1, repeats=1)
    two = benchmark("deeplabv2-lsdfn-small", batch=2, size=(64, 64), warmup=1, repeats=1, train=True,
                    channels_last=True)
    assert two.gflops == pytest.approx(2 * one.gflops, rel=1e-6)
    assert two.train and two.channels_last and not one.train


@pytest.mark.parametrize("kwargs, message", [
    ({"runtime": "tensorrt"}, "unknown runtime 'tensorrt'"),
    ({"dtype": "int8"}, "unknown dtype 'int8'"),
    ({"batch": 0}, "need batch >= 1"),
    ({"runtime": "onnxruntime", "train": True}, "float32 inference on the CPU only"),
])
def test_bad_requests_are_refused(kwargs, message):
    with pytest.raises(BenchmarkError, match=message):
        benchmark("dy-resnet-digits", **kwargs)


def test_training_a_detector_is_refused():
    with pytest.raises(BenchmarkError, match="needs ground-truth boxes"):
        benchmark("faster-rcnn-r50-dcn", train=True)


@pytest.mark.slow
@pytest.mark.parametrize("runtime", ["compile", "onnxruntime"])
def test_other_runtimes(runtime):
    result = benchmark("dy-resnet-digits", batch=2, size=(32, 32), warmup=2, repeats=2, runtime=runtime)
    assert result.runtime == runtime and result.median_ms > 0


def test_cli_table_and_json(tmp_path, capsys):
    out = tmp_path / "b.json"
    assert main(["benchmark", "dy-resnet-digits", "--size", "32", "32", "--repeats", "2", "--warmup", "1",
                 "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "median ms" in text and "dy-resnet-digits" in text
    rows = json.loads(out.read_text())
    assert rows[0]["model"] == "dy-resnet-digits" and rows[0]["repeats"] == 2 and rows[0]["warmup"] == 1


def test_cli_all_with_a_pattern(capsys):
    assert main(["benchmark", "--all", "--pattern", "dy-resnet-dig*", "--size", "32", "32", "--repeats", "1",
                 "--warmup", "1"]) == 0
    assert "dy-resnet-digits" in capsys.readouterr().out


def test_cli_needs_a_name_or_all(capsys):
    assert main(["benchmark"]) == 2
    assert "give a model name or --all" in capsys.readouterr().err
