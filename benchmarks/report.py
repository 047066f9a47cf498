"""The machine line and atomic page writes for the scripts in ``benchmarks/``: the same
helpers the packaged supervised benchmarks use (``velora_ens.bench.report``)."""

from velora_ens.bench.report import machine, write_atomic

__all__ = ["machine", "write_atomic"]
