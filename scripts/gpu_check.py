#!/usr/bin/env python3
"""The day a GPU is at hand: every CUDA path of echo-rnn in one command, one summary.

    python scripts/gpu_check.py [--out DIR]

1. the CUDA tests (``pytest -k cuda``: the CUDA cases of the kernel, model, data and trainer
   tests, CUDA-graph training included);
2. the GPU benchmark against cuDNN's ``torch.nn.RNN``, eager and with CUDA graphs
   (``echo-rnn bench --device cuda [--cuda-graph]``), JSON kept in ``--out``;
3. a CUDA-graph training run of each backend (``echo-rnn train --device cuda --cuda-graph``);
4. a population on the GPU: a small frontier sweep whose points train as one population
   (``echo-rnn sweep --device cuda --population 8``).

Prints one summary line per step and exits 0 only if all passed; without CUDA it says so
in one line and exits 2. ``--print-commands`` lists the commands without running them.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def commands(out: Path) -> list[tuple[str, list[str]]]:
    py, cli = sys.executable, [sys.executable, "-m", "echo_rnn"]
    runs = out / "runs"
    return [
        ("CUDA tests", [py, "-m", "pytest", "-q", "-k", "cuda", str(ROOT / "tests")]),
        ("bench, eager", [*cli, "bench", "--device", "cuda", "--output", str(out / "bench.json")]),
        (
            "bench, CUDA graphs",
            [
                *cli,
                "bench",
                "--device",
                "cuda",
                "--cuda-graph",
                "--output",
                str(out / "bench_graph.json"),
            ],
        ),
        (
            "train autograd, CUDA graph",
            [
                *cli,
                "train",
                "--device",
                "cuda",
                "--cuda-graph",
                "--logdir",
                str(runs),
                "--run-name",
                "graph-autograd",
            ],
        ),
        (
            "train bptt, CUDA graph",
            [
                *cli,
                "train",
                "--device",
                "cuda",
                "--cuda-graph",
                "--backend",
                "bptt",
                "--logdir",
                str(runs),
                "--run-name",
                "graph-bptt",
            ],
        ),
        (
            "population sweep",
            [
                *cli,
                "sweep",
                "--device",
                "cuda",
                "--preset",
                "frontier",
                "--bias",
                "--echo-steps",
                "1-4",
                "--hidden-sizes",
                "6",
                "--seeds",
                "0-1",
                "--steps",
                "500",
                "--population",
                "8",
                "--workers",
                "1",
                "--logdir",
                str(runs),
                "--name",
                "population",
            ],
        ),
    ]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=None, help="where results go (default: a temp directory)")
    p.add_argument("--print-commands", action="store_true", help="list the commands and stop")
    args = p.parse_args()
    if args.print_commands:  # nothing made: the commands name OUT where a run would put it
        for name, cmd in commands(Path(args.out or "OUT")):
            print(f"{name}: {' '.join(cmd)}")
        return 0
    out = Path(args.out or tempfile.mkdtemp(prefix="echo-rnn-gpu-"))
    import torch

    if not torch.cuda.is_available():
        print("gpu_check: CUDA is not available on this machine; nothing to check", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    device = torch.cuda.get_device_name(0)
    summary = []
    for name, cmd in commands(out):
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        (out / f"{name.replace(' ', '_').replace(',', '')}.log").write_text(
            " ".join(cmd) + "\n\n" + proc.stdout + "\n" + proc.stderr
        )
        lines = [l for l in (proc.stdout + proc.stderr).splitlines() if l.strip()]
        summary.append(
            (name, proc.returncode, time.perf_counter() - t0, lines[-1] if lines else "")
        )
    print(f"echo-rnn GPU check on {device}, torch {torch.__version__}; logs in {out}")
    for name, rc, secs, last in summary:
        print(f"  {'PASS' if rc == 0 else 'FAIL'}  {name:<28} {secs:6.1f}s  {last[:100]}")
    for f in ("bench.json", "bench_graph.json"):
        if (out / f).exists():
            rows = json.loads((out / f).read_text())["rows"]
            ratios = ", ".join(
                f"{r['shape']}/{r['backend']} {r['ratio_to_nn_rnn']:.2f}x"
                for r in rows
                if r["backend"] != "nn.RNN"
            )
            print(f"  {f}: time vs cuDNN nn.RNN: {ratios}")
    return 0 if all(rc == 0 for _, rc, _, _ in summary) else 1


if __name__ == "__main__":
    sys.exit(main())
