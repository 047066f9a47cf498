"""The ``velora-ens`` command line.

Subcommands:

* ``demo``: train a liquid network on an irregularly sampled sequence task and print
  its metrics (the README's main job until agent training lands).

User mistakes (bad options, bad values) end with one clear line on stderr and exit
code 2, not a traceback.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from collections.abc import Sequence

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
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.add_argument("--neurons", type=int, default=16, help="inter + command neurons")
    demo.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    demo.add_argument("--json", action="store_true", help="print the metrics as JSON")
    return parser


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
    ratio = result.persistence_mse / max(result.test_mse, 1e-12)
    print(f"  parameters              {result.n_parameters}")
    print(f"  training time           {result.seconds:.1f} s")
    print(f"  test MSE (untrained)    {result.untrained_mse:.4f}")
    print(f"  test MSE (persistence)  {result.persistence_mse:.4f}")
    print(f"  test MSE (liquid)       {result.test_mse:.4f}   "
          f"({ratio:.1f}x lower than persistence)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``velora-ens``; returns the exit code."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from velora_ens import __version__

        print(__version__)
        return 0
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return _demo(args)
    except ValueError as err:
        print(f"velora-ens: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("velora-ens: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
