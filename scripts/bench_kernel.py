#!/usr/bin/env python3
"""Time the compiled kernel's training step against the population's torch step, same shapes.

One training step of R members, two ways, on one CPU thread:

- torch: what the torch population kernel's stepper (``echo_rnn.engine.steppers``) does per
  step: each member's batch from its own generator, ``population_grads`` (forward, loss,
  backward), ``clip_grad_norms_`` and ``PopulationAdam``'s fused step;
- compiled: ``echo_rnn.kernels.compiled.train_step`` (the batch drawn in C as well).

and a held-out evaluation of the R members (every eval_every steps in a run): the
population's forward with ``population_loss`` / ``population_accuracy`` against
``compiled.evaluate``. Rounds alternate the candidates (interleaved), each round timing
``--steps`` calls; the figures are medians over rounds. Prints one table: ms per call, ms
per run-step (a call over R), and the ratio torch / compiled.

    python scripts/bench_kernel.py                 # frontier: B 64, T 50, H 6, bias, R 1 and 32
    python scripts/bench_kernel.py --runs 8 --rounds 30 --clock cpu
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from functools import partial

import torch

from echo_rnn.data import bits, echo_targets
from echo_rnn.kernels import compiled
from echo_rnn.kernels.population import (
    PopulationAdam,
    PopulationRNN,
    clip_grad_norms_,
    population_accuracy,
    population_forward,
    population_grads,
    population_loss,
)


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, nargs="+", default=[1, 32], help="R values to time")
    p.add_argument("--batch-size", type=int, default=64, help="B")
    p.add_argument("--seq-len", type=int, default=50, help="T")
    p.add_argument("--hidden-size", type=int, default=6, help="H")
    p.add_argument("--no-bias", action="store_true", help="without the bias b")
    p.add_argument("--val-size", type=int, default=256, help="N, held-out sequences")
    p.add_argument(
        "--eval-every",
        type=int,
        default=100,
        help="steps per evaluation, to charge a run-step its share",
    )
    p.add_argument("--rounds", type=int, default=15, help="interleaved rounds (median)")
    p.add_argument("--steps", type=int, default=20, help="calls timed per round")
    p.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall-clock time, or this thread's CPU time (steadier on a busy "
        "machine: time spent waiting for a core is not counted)",
    )
    args = p.parse_args(argv)
    for name in (
        "batch_size",
        "seq_len",
        "hidden_size",
        "val_size",
        "eval_every",
        "rounds",
        "steps",
    ):
        if getattr(args, name) <= 0:
            p.error(f"--{name.replace('_', '-')} must be a positive integer")
    if any(r <= 0 for r in args.runs):
        p.error("--runs must be positive integers")
    return args


def torch_step(R, B, T, H, bias, echo):
    """The population's step as PopulationStepper takes it, as a closure."""
    pop = PopulationRNN(R, H, 1, bias)
    with torch.no_grad():
        for p in pop.parameters():
            p.normal_(0, 0.1, generator=torch.Generator().manual_seed(0))
    opt = PopulationAdam(pop.parameters(), lr=1e-3, fused=True)
    gens = [torch.Generator().manual_seed(r) for r in range(R)]
    ks = echo.view(R, 1, 1)
    source = (torch.arange(T).view(1, 1, T) - ks).clamp_min(0).expand(R, B, T).contiguous()
    now = torch.arange(T).view(1, 1, T) >= ks

    def step():
        u = torch.stack([torch.rand(B, T, generator=g) for g in gens])
        x = bits(u)
        y = x.gather(2, source).mul_(now)
        population_grads(pop, x, y)
        clip_grad_norms_(pop, 1.0)
        opt.step()

    def evaluate(x, y):
        with torch.no_grad():
            y_hat, _ = population_forward(x.unsqueeze(-1), pop.U, pop.V, pop.w, pop.b)
            population_loss(y_hat, y)
            population_accuracy(y_hat, y, now[:, :, :])

    return step, evaluate


def compiled_step(R, B, T, H, bias, echo):
    params = torch.stack([compiled.init_params(r, H, 1, bias, 0.1) for r in range(R)])
    m, v = torch.zeros_like(params), torch.zeros_like(params)
    steps, counters = torch.zeros(R, dtype=torch.int64), torch.zeros(R, dtype=torch.int64)
    lr, seeds = torch.full((R,), 1e-3, dtype=torch.float64), torch.arange(R)

    def step():
        compiled.train_step(
            params,
            m,
            v,
            steps,
            lr,
            seeds,
            counters,
            echo,
            H=H,
            I=1,
            bias=bias,
            B=B,
            T=T,
            truncate=None,
            grad_clip=1.0,
            optimizer="adam",
        )

    def evaluate(x, y):
        compiled.evaluate(params, x, y, echo, H, 1, bias)

    return step, evaluate


def median_ms(fns: dict, rounds: int, calls: int, clock) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():  # warm up: first-call allocations, lazy imports
        fn()
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = clock()
            for _ in range(calls):
                fn()
            times[name].append((clock() - t0) / calls * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


def main(argv: list[str]) -> int:
    args = parse(argv)
    if not compiled.AVAILABLE:
        print(f"error: {compiled.UNAVAILABLE_REASON}", file=sys.stderr)
        return 2
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # both candidates on one thread
    try:
        B, T, H, N = args.batch_size, args.seq_len, args.hidden_size, args.val_size
        bias = not args.no_bias
        # torch runs its ops on the calling thread with one intra-op thread, so this
        # thread's CPU time is all of either candidate's
        clock = time.perf_counter if args.clock == "wall" else time.thread_time
        print(
            f"B {B}, T {T}, H {H}, bias {bias}, Adam, clip 1.0, one thread; held-out N {N}"
            f" every {args.eval_every} steps; medians of {args.rounds} interleaved rounds, "
            f"{args.clock} clock"
        )
        print(
            f"{'R':>4} {'what':<10} {'torch ms':>10} {'compiled ms':>12} {'ratio':>7} "
            f"{'ms/run-step torch':>18} {'compiled':>9}"
        )
        for R in args.runs:
            echo = torch.tensor([1 + r % min(9, T - 1) for r in range(R)])
            t_step, t_eval = torch_step(R, B, T, H, bias, echo)
            c_step, c_eval = compiled_step(R, B, T, H, bias, echo)
            step = median_ms({"torch": t_step, "compiled": c_step}, args.rounds, args.steps, clock)
            x = compiled.draw_bits(0, compiled.STREAM_VAL, 0, N, T)
            xs = x.expand(R, N, T).contiguous()
            y = torch.stack([echo_targets(x, int(k)) for k in echo])
            ev = median_ms(
                {"torch": partial(t_eval, xs, y), "compiled": partial(c_eval, x, y)},
                args.rounds,
                max(1, args.steps // 4),
                clock,
            )
            per = {k: (step[k] + ev[k] / args.eval_every) / R for k in step}
            for what, t in (("step", step), ("evaluate", ev)):
                print(
                    f"{R:>4} {what:<10} {t['torch']:>10.3f} {t['compiled']:>12.3f} "
                    f"{t['torch'] / t['compiled']:>7.1f}"
                    + (f" {per['torch']:>18.4f} {per['compiled']:>9.4f}" if what == "step" else "")
                )
    finally:
        torch.set_num_threads(threads)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
