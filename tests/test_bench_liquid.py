"""bench_liquid's cases and report: the fused and unfused variants really differ in their
path, and the targets are judged only at the shape they are set for."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "benchmarks"))
    import bench_liquid

    return bench_liquid


def test_each_unfused_case_runs_the_step_loop(bench):
    cases = {c.name: c.model for c in bench.build_cases(include_ncps=False)}
    for name, model in cases.items():
        if not name.startswith("velora_ens") or "LTC" in name:
            continue
        fused = "unfused" not in name
        cell = model if hasattr(model, "fused") else model.command
        assert cell.fused is fused, name
    assert {"velora_ens GatedNetwork(32, 20, 1, cell='gru')",
            "velora_ens GatedNetwork(32, 20, 1, cell='lstm'), unfused autograd loop",
            "velora_ens LiquidNCPNetwork (CfC, mixed memory)"} <= set(cases)


def test_targets_are_judged_at_the_pages_shape_only(bench):
    names = ("velora_ens LiquidNCPNetwork (CfC)", "torch.nn.LSTM(32, 20) + Linear")
    train = dict(zip(names, (0.010, 0.002), strict=True))  # ours: 5x the LSTM's time
    infer = dict(zip(names, (50e-6, 50e-6), strict=True))
    text, ok = bench.report(train, infer, 3)
    assert not ok and "| training step within 2x of the LSTM | 5.00x the LSTM's time | no |" in text
    text, ok = bench.report(train, infer, 3, batch=1, length=128)
    assert ok and "batch 1, sequence length 128" in text
    assert "The targets are judged at batch 64 and 32 steps only." in text
    assert "| target |" not in text
