"""Benchmark: a full training step (forward, loss, backward; no optimizer) of the EchoRNN
backends (the compiled kernel on a CPU, the bptt kernel, autograd) against the reference
users would pick instead, ``torch.nn.RNN`` + a bias-free ``nn.Linear`` readout, all with the
same weights.

Timing is interleaved (A B C A B C ...) after a warm-up, and reported as medians; ratios are
to nn.RNN measured in the same process. Before timing, the gradients of every candidate are
compared with nn.RNN's and a candidate that disagrees is not reported.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch

from echo_rnn.compare import BENCH_REL_F32, compare_grads
from echo_rnn.data import make_echo_batch
from echo_rnn.devices import cpu_threads
from echo_rnn.engine.backends import training_backend
from echo_rnn.engine.graphs import capture
from echo_rnn.kernels import compiled
from echo_rnn.model import EchoRNN, echo_loss, to_nn_rnn

SHAPES: dict[str, tuple[int, int, int]] = {  # name: (B, T, H)
    "notebook": (1, 50, 6),
    "batch": (64, 50, 6),
    "wide": (256, 200, 64),
    "long": (32, 2000, 16),
    "long-500": (32, 500, 16),  # with "long": does the cost grow linearly in T?
}
SCALING = ("long-500", "long")  # (short, long): the time ratio should be about 2000/500 = 4
REFERENCE = "nn.RNN"


@dataclass
class Candidate:
    """A way to run the training step, with its parameters named like EchoRNN's."""

    name: str
    step: Callable[[], torch.Tensor]  # forward, loss, backward; returns the loss
    grads: Callable[[], dict[str, torch.Tensor]]
    forward_loss: Callable[[], torch.Tensor]  # forward and loss only, to count saved bytes
    params: list[torch.Tensor]
    # bytes kept for backward where autograd does not see them (the compiled kernel's states)
    saved: int | None = None


@dataclass
class BenchRow:
    shape: str
    B: int
    T: int
    H: int
    backend: str
    ms_per_step: float
    seq_per_s: float
    ratio_to_nn_rnn: float
    saved_bytes: int
    reps: int
    grad_max_rel_diff: float


@dataclass
class BenchReport:
    device: str
    threads: int
    torch_version: str
    cuda_graph: bool
    rows: list[BenchRow] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            **{k: v for k, v in asdict(self).items() if k != "rows"},
            "rows": [asdict(r) for r in self.rows],
        }

    def format(self, adam: dict, markdown: bool = False) -> str:
        """The report as ``echo-rnn bench`` prints it: a table (or Markdown, whose lines are
        paragraphs that paste as they print), the cost in T, and the Adam step's time
        (``adam``: :func:`time_adam`'s)."""
        lines = [
            f"echo-rnn bench: device={self.device} threads={self.threads} "
            f"torch={self.torch_version} cuda_graph={self.cuda_graph}; medians of "
            "interleaved steps (forward, loss, backward)",
            format_markdown(self) if markdown else format_table(self),
        ]
        scaling_line = format_scaling(self)
        if scaling_line:
            lines.append(scaling_line)
        lines.append(
            f"Adam step at H=6 (the trainer's optimizer): fused "
            f"{adam['fused'] * 1e6:.1f} us, unfused {adam['unfused'] * 1e6:.1f} us "
            f"({adam['unfused'] / adam['fused']:.2f}x)"
        )
        # In Markdown a line right after a table is one more row of it: paragraphs apart.
        return ("\n\n" if markdown else "\n").join(lines)


def saved_bytes(fn: Callable[[], torch.Tensor], held: list[torch.Tensor]) -> int:
    """Bytes of the distinct storages that autograd saves for backward while ``fn`` runs.

    ``saved_tensors_hooks`` sees what nn.RNN, plain autograd ops and custom Functions save
    alike. Storages of ``held`` tensors (parameters and the step's inputs, which the caller
    keeps alive anyway) are not counted, and a storage saved twice counts once: the figure is
    the memory the graph alone keeps alive.
    """
    held_ptrs = {t.untyped_storage().data_ptr() for t in held}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor):
        st = t.untyped_storage()
        if st.data_ptr() not in held_ptrs:
            seen[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = fn()
    del loss
    return sum(seen.values())


def make_candidates(
    B: int, T: int, H: int, device: torch.device, seed: int = 0, cuda_graph: bool = False
) -> tuple[list[Candidate], list[torch.Tensor]]:
    """The three candidates on one batch, with identical weights."""
    gen = torch.Generator(device=device).manual_seed(seed)
    x, y = make_echo_batch(B, T, 2, generator=gen, device=device)  # (B, T)
    # Weights at 0.5/sqrt(H) keep U's spectral radius near 0.5: gradients neither vanish nor
    # explode over T steps, as in a network that trains.
    init_std = 0.5 / math.sqrt(H)
    ref = EchoRNN(H, 1, init_std=init_std)
    ref.reset_parameters(generator=torch.Generator().manual_seed(seed))
    ref.to(device)

    def echo_model(backend: str) -> Candidate:
        m = EchoRNN(H, 1, init_std=init_std, backend=backend).to(device)
        m.load_state_dict(ref.state_dict())
        params = list(m.parameters())
        fwd = lambda: echo_loss(m(x)[0], y)  # noqa: E731
        return Candidate(backend, _step(fwd, params), lambda: _named(m), fwd, params)

    rnn, lin = to_nn_rnn(ref)
    x3 = x.unsqueeze(-1)  # (B, T, 1)

    def rnn_fwd():
        out, _ = rnn(x3)  # (B, T, H)
        return echo_loss(lin(out).squeeze(-1), y)

    rnn_params = [rnn.weight_hh_l0, rnn.weight_ih_l0, lin.weight]
    rnn_grads = lambda: {  # noqa: E731
        "U": rnn.weight_hh_l0.grad,
        "V": rnn.weight_ih_l0.grad,
        "w": lin.weight.grad[0],
    }
    cands = [
        Candidate("nn.RNN", _step(rnn_fwd, rnn_params), rnn_grads, rnn_fwd, rnn_params),
        echo_model("autograd"),
        echo_model("bptt"),
    ]
    if device.type == "cpu" and compiled.AVAILABLE:
        cands.append(_compiled_candidate(ref, x, y))
    if cuda_graph:
        cands = [_graphed(c) for c in cands]
    return cands, [x, y, x3]


def _compiled_candidate(ref: EchoRNN, x: torch.Tensor, y: torch.Tensor) -> Candidate:
    """The compiled kernel's pass (forward, loss, backward in one call, a population of one)
    on the same weights and batch."""
    w = {n: p.detach()[None].contiguous() for n, p in ref.named_parameters()}  # (1, ...)
    x1, y1 = x[None, :, :, None].contiguous(), y[None].contiguous()  # (1, B, T, 1), (1, B, T)
    out: dict[str, torch.Tensor] = {}

    def step() -> torch.Tensor:
        p = compiled.forward_backward(x1, y1, w["U"], w["V"], w["w"], w.get("b"))
        out.update(U=p.U[0], V=p.V[0], w=p.w[0])
        return p.loss[0]

    B, T = x.shape
    # it keeps the states h_1..h_T, float32, for its backward
    return Candidate(
        "compiled",
        step,
        lambda: dict(out),
        step,
        list(w.values()),
        saved=B * T * ref.hidden_size * 4,
    )


def _named(m: EchoRNN) -> dict[str, torch.Tensor]:
    return {n: p.grad for n, p in m.named_parameters()}


def _step(
    fwd: Callable[[], torch.Tensor], params: list[torch.Tensor]
) -> Callable[[], torch.Tensor]:
    def step() -> torch.Tensor:
        for p in params:
            p.grad = None
        loss = fwd()
        loss.backward()
        return loss

    return step


def _graphed(c: Candidate) -> Candidate:
    """Capture the step in a CUDA graph: one launch replays every kernel of forward, loss and
    backward. The gradients land in the same buffers each replay (accumulated into zeros)."""
    for p in c.params:
        p.grad = torch.zeros_like(p)

    def step() -> torch.Tensor:
        for p in c.params:
            p.grad.zero_()
        loss = c.forward_loss()
        loss.backward()
        return loss

    graph = capture(step, after_warmup=lambda: [p.grad.zero_() for p in c.params])
    return Candidate(c.name, graph.replay, c.grads, c.forward_loss, c.params)


def check_agreement(cands: list[Candidate]) -> dict[str, float]:
    """Max relative (to the tensor's scale) gradient difference of each candidate to nn.RNN;
    ``inf`` for one that disagrees."""
    grads = {}
    for c in cands:
        c.step()
        grads[c.name] = {k: v.detach().clone() for k, v in c.grads().items()}
    ref = grads[REFERENCE]
    out = {}
    for name, g in grads.items():
        worst = max(r.max_rel_diff for r in compare_grads(g, ref))
        out[name] = worst if worst <= BENCH_REL_F32 else math.inf
    return out


def time_interleaved(
    cands: list[Candidate], device: torch.device, *, warmup: int, min_reps: int, budget_s: float
) -> dict[str, list[float]]:
    """Seconds per step of each candidate, interleaved A B C A B C ..., until ``min_reps``
    rounds are done and ``budget_s`` has passed."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        for c in cands:
            c.step()
    sync()
    times: dict[str, list[float]] = {c.name: [] for c in cands}
    start = time.perf_counter()
    while len(times[cands[0].name]) < min_reps or time.perf_counter() - start < budget_s:
        for c in cands:
            t0 = time.perf_counter()
            c.step()
            sync()  # the timed region ends when the device has finished the step
            times[c.name].append(time.perf_counter() - t0)
    return times


def run_benchmark(
    shapes: dict[str, tuple[int, int, int]],
    device: torch.device,
    *,
    threads: int = 1,
    warmup: int = 5,
    min_reps: int = 30,
    budget_s: float = 2.0,
    cuda_graph: bool = False,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> BenchReport:
    # The thread count and the global RNG (nn.RNN draws its initial weights there) are the
    # caller's again afterwards.
    forked = [device] if device.type == "cuda" else []
    with cpu_threads(threads), torch.random.fork_rng(devices=forked):
        return _run_benchmark(
            shapes,
            device,
            threads=threads,
            warmup=warmup,
            min_reps=min_reps,
            budget_s=budget_s,
            cuda_graph=cuda_graph,
            seed=seed,
            progress=progress,
        )


def _run_benchmark(
    shapes, device, *, threads, warmup, min_reps, budget_s, cuda_graph, seed, progress
) -> BenchReport:
    report = BenchReport(str(device), threads, torch.__version__, cuda_graph)
    for shape, (B, T, H) in shapes.items():
        if progress:
            progress(shape)
        cands, inputs = make_candidates(B, T, H, device, seed, cuda_graph)
        agreement = check_agreement(cands)
        ok = [c for c in cands if math.isfinite(agreement[c.name])]
        for c in cands:
            if c not in ok:
                report.refused.append(f"{shape}/{c.name}: gradients disagree with nn.RNN")
        if REFERENCE not in {c.name for c in ok}:
            continue
        mem = {
            c.name: c.saved
            if c.saved is not None
            else saved_bytes(c.forward_loss, c.params + inputs)
            for c in ok
        }
        for c in ok:  # leave the gradient buffers the timed steps will refill
            c.step()
        times = time_interleaved(ok, device, warmup=warmup, min_reps=min_reps, budget_s=budget_s)
        ref_ms = statistics.median(times[REFERENCE]) * 1e3
        for c in ok:
            ms = statistics.median(times[c.name]) * 1e3
            report.rows.append(
                BenchRow(
                    shape,
                    B,
                    T,
                    H,
                    c.name,
                    ms,
                    B / (ms / 1e3),
                    ms / ref_ms,
                    mem[c.name],
                    len(times[c.name]),
                    agreement[c.name],
                )
            )
    return report


def time_adam(
    H: int, device: torch.device, *, reps: int = 300, threads: int = 1, seed: int = 0
) -> dict[str, float]:
    """Median seconds of one Adam step over EchoRNN's parameters, fused (one kernel for the
    whole update, the trainer's default) and unfused (per-tensor ops), interleaved."""
    with cpu_threads(threads):
        gen = torch.Generator().manual_seed(seed)
        params = [
            torch.randn(shape, generator=gen).to(device).requires_grad_()
            for shape in ((H, H), (H, 1), (H,))
        ]
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen).to(device)
        opts = {
            "fused": torch.optim.Adam(params, lr=1e-9, fused=True),
            "unfused": torch.optim.Adam(params, lr=1e-9),
        }
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        times: dict[str, list[float]] = {k: [] for k in opts}
        for i in range(reps + 10):
            for name, opt in opts.items():
                t0 = time.perf_counter()
                opt.step()
                sync()
                if i >= 10:  # the first steps create the state
                    times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def scaling(report: BenchReport) -> dict[str, float]:
    """Per backend, ms per step at the ``long`` shape over ``long-500``: 4.0 is linear in T."""
    short, long_ = SCALING
    ms = {(r.shape, r.backend): r.ms_per_step for r in report.rows}
    return {
        b: ms[(long_, b)] / ms[(short, b)] for (sh, b) in ms if sh == long_ and (short, b) in ms
    }


def format_scaling(report: BenchReport) -> str:
    s = scaling(report)
    if not s:
        return ""
    T0, T1 = SHAPES[SCALING[0]][1], SHAPES[SCALING[1]][1]
    parts = ", ".join(f"{b} {v:.2f}x" for b, v in s.items())
    return f"cost in T: time at T={T1} over T={T0} (linear = {T1 / T0:.1f}x): {parts}"


def format_table(report: BenchReport) -> str:
    header = ("shape", "B", "T", "H", "backend", "ms/step", "seq/s", "vs nn.RNN", "saved KiB")
    body = [
        (
            r.shape,
            str(r.B),
            str(r.T),
            str(r.H),
            r.backend,
            f"{r.ms_per_step:.3f}",
            f"{r.seq_per_s:,.0f}",
            f"{r.ratio_to_nn_rnn:.2f}x",
            f"{r.saved_bytes / 1024:,.1f}",
        )
        for r in report.rows
    ]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    num = {1, 2, 3, 5, 6, 7, 8}
    fmt = lambda row: "  ".join(  # noqa: E731
        c.rjust(wd) if i in num else c.ljust(wd) for i, (c, wd) in enumerate(zip(row, widths))
    )
    return "\n".join([fmt(header), *map(fmt, body)])


def format_markdown(report: BenchReport) -> str:
    lines = [
        "| shape | B | T | H | backend | ms/step | seq/s | vs nn.RNN | saved for backward |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for r in report.rows:
        lines.append(
            f"| {r.shape} | {r.B} | {r.T} | {r.H} | {r.backend} | {r.ms_per_step:.3f} | "
            f"{r.seq_per_s:,.0f} | {r.ratio_to_nn_rnn:.2f}x | "
            f"{r.saved_bytes / 1024:,.1f} KiB |"
        )
    return "\n".join(lines)


def time_population(
    runs: int, steps: int = 2000, reps: int = 3, threads: int = 1, seed: int = 0, singles: int = 4
) -> dict:
    """Run-steps of a population of ``runs`` against single runs, at the frontier shape
    (``--preset frontier --hidden-size 6 --bias``: B = 64, T = 50, H = 6, Adam, clipping,
    40000 steps a run), each doing everything ``train`` does (data, evaluations,
    TensorBoard, checkpoints) into a temporary directory, stopped after its first ``steps``
    steps (as a signal stops it: a last checkpoint each). The runs are the sweep's: a run's
    pictures come at most ``PICTURES_PER_RUN`` times over its 40000 steps, and the window pays
    its share of them (more than its share: the first evaluation always draws them). k = 7 is
    never solved in ``steps``, so every run trains every step.

    Three ways alternate ``reps`` times in this process: the population and ``singles``
    single runs trained by the compiled kernel (what ``auto`` picks on a CPU), and the same
    population trained by the torch kernel (``--backend bptt``), the engine the compiled one
    replaced; the medians of ms per run-step are reported, and their ratios."""
    import tempfile
    from dataclasses import replace

    from echo_rnn.config import build_config
    from echo_rnn.engine.population_train import train_population
    from echo_rnn.engine.train import TrainingInterrupted, train

    base = build_config(
        "frontier", overrides={"hidden_size": 6, "bias": True, "echo_step": 7, "threads": threads}
    )
    if steps >= base.steps:
        raise ValueError(f"steps must be below the runs' {base.steps}, got {steps}")
    singles = min(singles, runs)
    timed: dict[str, list[float]] = {"population": [], "single": [], "torch_population": []}

    def after(n: int):
        """A stop callback (polled after every step) that stops after ``n`` steps."""
        done = [0]

        def stop() -> bool:
            done[0] += 1
            return done[0] >= n

        return stop

    def population(configs) -> float:
        start = time.perf_counter()
        try:
            train_population(configs, stop=after(steps))
        except TrainingInterrupted as stopped:
            assert stopped.step == steps, f"the population stopped at {stopped.step}"
        return (time.perf_counter() - start) / (len(configs) * steps)

    with tempfile.TemporaryDirectory() as tmp, cpu_threads(threads):
        for rep in range(reps):
            configs = [
                replace(base, seed=seed + i, logdir=f"{tmp}/pop{rep}", run_name=f"s{i}")
                for i in range(runs)
            ]
            timed["population"].append(population(configs))
            start = time.perf_counter()
            for c in configs[:singles]:
                try:
                    train(replace(c, logdir=f"{tmp}/one{rep}"), verbose=False, stop=after(steps))
                except TrainingInterrupted as stopped:
                    assert stopped.step == steps, f"a run stopped at {stopped.step}"
            timed["single"].append((time.perf_counter() - start) / (singles * steps))
            timed["torch_population"].append(
                population(
                    [replace(c, backend="bptt", logdir=f"{tmp}/torch{rep}") for c in configs]
                )
            )
    ms = {k: statistics.median(v) * 1e3 for k, v in timed.items()}
    return {
        "runs": runs,
        "steps": steps,
        "run_steps": base.steps,
        "reps": reps,
        "threads": threads,
        "backend": training_backend(base, torch.device("cpu")),
        "shape": {"B": base.batch_size, "T": base.seq_len, "H": base.hidden_size},
        "ms_per_run_step_population": ms["population"],
        "ms_per_run_step_single": ms["single"],
        "ms_per_run_step_torch_population": ms["torch_population"],
        "run_steps_per_s_population": 1e3 / ms["population"],
        "run_steps_per_s_single": 1e3 / ms["single"],
        "speedup": ms["single"] / ms["population"],
        "speedup_over_torch_population": ms["torch_population"] / ms["population"],
    }


def format_population(p: dict) -> str:
    s = p["shape"]
    return (
        f"population of {p['runs']} vs single runs, B={s['B']} T={s['T']} H={s['H']}, "
        f"the first {p['steps']} steps of {p['run_steps']}-step runs (evaluation, TensorBoard "
        f"and checkpoints included), "
        f"threads={p['threads']}, median of {p['reps']} interleaved rounds:\n"
        f"  population  {p['ms_per_run_step_population']:.3f} ms per run-step "
        f"({p['run_steps_per_s_population']:.0f} run-steps/s, {p['backend']} kernel)\n"
        f"  single run  {p['ms_per_run_step_single']:.3f} ms per run-step "
        f"({p['run_steps_per_s_single']:.0f} run-steps/s, {p['backend']} kernel)\n"
        f"  population  {p['ms_per_run_step_torch_population']:.3f} ms per run-step "
        f"(torch kernel, --backend bptt)\n"
        f"  speedup     {p['speedup']:.1f}x over single runs, "
        f"{p['speedup_over_torch_population']:.1f}x over the torch kernel's population"
    )
