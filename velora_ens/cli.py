"""The ``velora-ens`` command line.

Subcommands:

* ``train``: train a NeuroFlow agent (default Pendulum-v1, a few minutes on a CPU), with
  periodic evaluation, the best model kept, TensorBoard logs and a video: the README's
  main job. ``evaluate`` and ``record`` take a saved agent.
* ``demo``: train a liquid network on an irregularly sampled sequence task and print
  its metrics.
* ``tune``: search an agent's settings for a task with Optuna (:mod:`velora_ens.tuning`),
  one study shared by any number of processes and machines.
* ``bench protein|cifar10|synthetic``: the supervised benchmarks of the ensemble heads
  (:mod:`velora_ens.bench`); each writes ``results.json``, ``index.md`` and PNG plots.

User mistakes (bad options, bad values) end with one clear line on stderr and exit
code 2, not a traceback.

This command is the one place where ``velora_ens`` imports the ``agents`` and ``envs``
packages: only inside the ``train``, ``evaluate``, ``record`` and ``tune`` subcommands
(:mod:`velora_ens.agent_cli`, :mod:`velora_ens.tuning.objective`), when they run, so
importing this module loads neither.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import sys
from collections.abc import Sequence

# integer_option lives in cli_options, which agent_cli imports too (no import circle)
from velora_ens.cli_options import integer_option

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit code 2
        self.exit(2, f"velora-ens: error: {message}\n")


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="velora-ens", description="Liquid neural networks with ensemble heads.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    demo = sub.add_parser(
        "demo", help="train a liquid network on an irregularly sampled oscillation",
        description="Train LiquidNCPNetwork to predict an irregularly sampled oscillation "
                    "and print its test error next to a persistence baseline.")
    demo.add_argument("--steps", type=int, default=1000, help="training steps (default 1000)")
    demo.add_argument("--cell", choices=("cfc", "ltc"), default="cfc", help="liquid cell")
    demo.add_argument("--seed", type=integer_option("--seed", 0), default=0,
                      help="random seed (default 0)")
    demo.add_argument("--neurons", type=int, default=16, help="inter + command neurons")
    demo.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    demo.add_argument("--json", action="store_true", help="print the metrics as JSON")
    _add_bench(sub)
    from velora_ens.agent_cli import add_agent_commands
    from velora_ens.tuning.cli import add_tune_command

    add_agent_commands(sub)
    add_tune_command(sub)
    return parser


_BENCHES = {"protein": "UCI protein regression, every head on 90/10 splits",
            "cifar10": "CIFAR-10 image classification, a CNN with each head",
            "synthetic": "two-regime 1-D regression: predictive mean and 80% band"}


def _add_bench(sub) -> None:
    from importlib import import_module

    bench = sub.add_parser("bench", help="supervised benchmarks of the ensemble heads",
                           description="Supervised benchmarks; each writes results.json, "
                                       "index.md (a Markdown page) and PNG plots to --out.")
    tasks = bench.add_subparsers(dest="task", parser_class=_Parser, required=True)
    for name, text in _BENCHES.items():
        # argparse %-formats help strings ("80% band" would crash --help)
        p = tasks.add_parser(name, help=text.replace("%", "%%"), description=text)
        p.add_argument("--data-root", default=None,
                       help="data folder (default $VELORA_ENS_DATA or ./data)")
        p.add_argument("--out", default=f"bench-results/{name}",
                       help=f"output folder (default bench-results/{name})")
        p.add_argument("--device", default=None,
                       help="auto, cpu, cuda, cuda:N or mps (default auto: CUDA, then MPS, "
                            "then CPU)")
        p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
        p.add_argument("--amp", action="store_true",
                       help="mixed precision (bfloat16 on the CPU, float16 or bfloat16 on CUDA)")
        p.add_argument("--compile", action="store_true", help="torch.compile the model")
        p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
        import_module(f"velora_ens.bench.{name}").add_arguments(p)


def _bench(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from importlib import import_module

    import torch

    if args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    args.command_line = "velora-ens " + shlex.join(argv)
    report = import_module(f"velora_ens.bench.{args.task}").run(args)
    print(f"velora-ens bench {args.task}: wrote {args.out}/index.md and results.json "
          f"(device {report['environment']['device']})")
    return 0


def _demo(args: argparse.Namespace) -> int:
    import torch

    from velora_ens.demo import run_demo

    if args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}")
    if args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    if not args.json:
        print(f"velora-ens demo: LiquidNCPNetwork(cell={args.cell!r}, n_neurons={args.neurons}) "
              f"on an irregularly sampled oscillation, {args.steps} steps, seed {args.seed}, "
              f"{args.threads} thread(s), {platform.machine()} CPU, torch {torch.__version__}",
              flush=True)
    result = run_demo(args.steps, cell=args.cell, seed=args.seed, n_neurons=args.neurons,
                      log_every=0 if args.json else max(args.steps // 5, 1))
    if args.json:
        print(json.dumps(result.as_dict()))
        return 0
    print(f"  parameters              {result.n_parameters}")
    print(f"  training time           {result.seconds:.1f} s")
    print(f"  test MSE (untrained)    {result.untrained_mse:.4f}")
    print(f"  test MSE (persistence)  {result.persistence_mse:.4f}")
    print(f"  test MSE (liquid)       {result.test_mse:.4f}   "
          f"({result.versus_persistence()})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``velora-ens``; returns the exit code."""
    parser = _build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if args.version:
        from velora_ens import __version__

        print(__version__)
        return 0
    if args.command is None:
        parser.print_help()
        return 0
    try:
        if args.command == "bench":
            return _bench(args, argv)
        if args.command in ("train", "evaluate", "record"):
            from velora_ens.agent_cli import run_agent_command

            return run_agent_command(args)
        if args.command == "tune":
            from velora_ens.tuning.cli import run_tune

            return run_tune(args)
        return _demo(args)
    except (ValueError, OSError) as err:  # user mistakes and what the system refused
        print(f"velora-ens: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("velora-ens: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
