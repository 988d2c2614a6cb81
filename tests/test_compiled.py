"""The compiled CPU kernel (echo_rnn.kernels.compiled): its gradients against autograd and the
reference kernel, its bits against themselves (alone or in a population, any thread count,
any build of the C source), its tanh's accuracy, and its random numbers against a pure-Python
re-implementation of the generator."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import struct
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch

from echo_rnn.compare import KERNELS_REL_F64, autograd_grads, autograd_hidden_grads
from echo_rnn.data import echo_targets
from echo_rnn.kernels import compiled as kc
from echo_rnn.kernels import reference
from echo_rnn.model import EchoRNN, bit_accuracy, echo_loss

pytestmark = pytest.mark.skipif(not kc.AVAILABLE, reason=kc.UNAVAILABLE_REASON or "")

F64 = torch.float64
# float32 against float64 on the same inputs, relative to each tensor's scale: float32 keeps
# ~7 digits and T = 50 steps of the recurrence and its sums over B T terms cost about two;
# ~1e-6 is seen, 1e-5 leaves a margin.
F32_VS_F64_REL = 1e-5
# The kernel's float64 tanh against torch.tanh (measured 3.5e-16: two ulps).
TANH_F64_REL = kc.TANH_F64_MAX_REL


def rel(got: torch.Tensor, want: torch.Tensor) -> float:
    """max |got - want| / max |want|: the error relative to the tensor's scale."""
    scale = want.abs().max().item()
    diff = (got.to(want.dtype) - want).abs().max().item()
    return diff / scale if scale > 0 else diff


def stack(models: list[EchoRNN]) -> tuple:
    """U (R, H, H), V (R, H, I), w (R, H), b (R, H) or None from R models."""
    names = ["U", "V", "w"] + (["b"] if models[0].bias else [])
    out = [torch.stack([getattr(m, n).detach() for m in models]).contiguous() for n in names]
    return tuple(out) + ((None,) if not models[0].bias else ())


def problem(R, B, T, I, H, bias, with_h0, seed, dtype=F64):
    """R float64 models drawn away from zero, inputs x (R, B, T, I), targets y (R, B, T) and
    h0 (R, B, H) or None."""
    gen = torch.Generator().manual_seed(seed)
    models = [EchoRNN(H, I, bias=bias, init_std=0.5, generator=gen).to(dtype) for _ in range(R)]
    x = torch.randn(R, B, T, I, generator=gen, dtype=dtype)
    y = torch.randn(R, B, T, generator=gen, dtype=dtype)
    h0 = torch.randn(R, B, H, generator=gen, dtype=dtype) if with_h0 else None
    return models, x, y, h0


# ---------------------------------------------------------------------------------------
# Gradients: float64 against autograd and the reference kernel, float32 against float64
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("with_h0", [False, True], ids=["h0=0", "h0"])
@pytest.mark.parametrize("I", [1, 3], ids=["I=1", "I=3"])
@pytest.mark.parametrize("truncate", [None, 1, 3], ids=["full", "k=1", "k=3"])
@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
def test_float64_matches_autograd_and_reference(bias, truncate, I, with_h0):
    R, B, T, H = 3, 5, 9, 4
    models, x, y, h0 = problem(R, B, T, I, H, bias, with_h0, seed=7)
    U, V, w, b = stack(models)
    out = kc.forward_backward(x, y, U, V, w, b, h0, truncate, want_dh=True)
    assert (out.b is None) == (not bias) and (out.h0 is None) == (not with_h0)
    for r, m in enumerate(models):
        h0_r = h0[r] if with_h0 else None
        want = autograd_grads(m, x[r], y[r], h0_r, truncate)
        y_hat, _ = m(x[r], h0_r, truncate=truncate)
        want["y_hat"] = y_hat.detach()
        got = {"U": out.U[r], "V": out.V[r], "w": out.w[r], "y_hat": out.y_hat[r]}
        if bias:
            got["b"] = out.b[r]
        if with_h0:
            got["h0"] = out.h0[r]
        # dJ/dh_t: the reference kernel's (any truncation), and autograd's (full BPTT)
        ref_yhat, _, caches = reference.forward(
            x[r], U[r], V[r], w[r], None if b is None else b[r], h0_r
        )
        want["dh"] = reference.backward((ref_yhat - y[r]) / (B * T), caches, w[r], truncate).h
        got["dh"] = out.dh[r]
        if truncate is None:
            want["dh autograd"] = autograd_hidden_grads(m, x[r], y[r], h0_r)
            got["dh autograd"] = out.dh[r]
        want["loss"] = echo_loss(y_hat, y[r]).detach().reshape(1)
        got["loss"] = out.loss[r].reshape(1)
        errors = {name: rel(got[name], want[name]) for name in want}
        bad = {n: e for n, e in errors.items() if not e <= KERNELS_REL_F64}
        assert not bad, f"member {r}: relative error above {KERNELS_REL_F64}: {bad}"


@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
def test_float32_agrees_with_float64(bias):
    R, B, T, I, H = 2, 64, 50, 1, 6
    models, x, y, h0 = problem(R, B, T, I, H, bias, True, seed=3)
    x = (x > 0).to(F64)  # bits, as the echo task's inputs
    params64 = stack(models)
    out64 = kc.forward_backward(x, y, *params64, h0=h0, truncate=None, want_dh=True)
    f32 = [None if t is None else t.float() for t in (x, y, *params64, h0)]
    out32 = kc.forward_backward(f32[0], f32[1], *f32[2:6], h0=f32[6], want_dh=True)
    for name in ("loss", "y_hat", "U", "V", "w", "b", "h0", "dh"):
        want, got = getattr(out64, name), getattr(out32, name)
        if want is None:
            continue
        assert got.dtype == (F64 if name == "loss" else torch.float32)
        assert rel(got, want) <= F32_VS_F64_REL, f"{name}: {rel(got, want):.2e}"


def test_forward_is_the_pass_forward():
    models, x, y, h0 = problem(2, 4, 6, 2, 3, True, True, seed=5)
    U, V, w, b = stack(models)
    out = kc.forward_backward(x, y, U, V, w, b, h0)
    assert torch.equal(kc.forward(x, U, V, w, b, h0), out.y_hat)
    want = torch.stack([m(x[r], h0[r])[0] for r, m in enumerate(models)]).detach()
    assert rel(out.y_hat, want) <= KERNELS_REL_F64


# ---------------------------------------------------------------------------------------
# Training: one train_step against torch (Adam / SGD, clipping) in float64
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "optimizer,clip,truncate,I",
    [
        ("adam", 0.05, None, 1),
        ("adam", None, 3, 1),
        ("sgd", 0.05, None, 1),
        ("sgd", None, 2, 1),
        ("adam", 0.05, 2, 3),
    ],
)
def test_train_step_matches_torch(optimizer, clip, truncate, I):
    """train_step's draws, loss, norm, clipping and update, step after step, against EchoRNN
    trained by torch on the same batches (draw_bits + echo_targets of channel 0) in
    float64."""
    H, bias, B, T, k, lr, seed = 5, True, 8, 12, 2, 0.05, 21
    params = kc.init_params(seed, H, I, bias, 0.5, dtype=F64).unsqueeze(0)
    m, v = torch.zeros_like(params), torch.zeros_like(params)
    steps, counters = torch.zeros(1, dtype=torch.int64), torch.zeros(1, dtype=torch.int64)
    model = EchoRNN(H, I, bias=bias, generator=torch.Generator()).double()
    with torch.no_grad():
        for name, p in kc.unflatten(params[0], H, I, bias).items():
            getattr(model, name).copy_(p)
    opt = (
        torch.optim.Adam(model.parameters(), lr=lr)
        if optimizer == "adam"
        else torch.optim.SGD(model.parameters(), lr=lr)
    )
    clipped = 0
    for step in range(6):
        loss, norm, finite = kc.train_step(
            params,
            m,
            v,
            steps,
            torch.tensor([lr], dtype=F64),
            torch.tensor([seed]),
            counters,
            torch.tensor([k]),
            H=H,
            I=I,
            bias=bias,
            B=B,
            T=T,
            truncate=truncate,
            grad_clip=clip,
            optimizer=optimizer,
        )
        x = kc.draw_bits(seed, kc.STREAM_TRAIN, step, B, T, dtype=F64, I=I).view(B, T, I)
        opt.zero_grad()
        want_loss = echo_loss(model(x, truncate=truncate)[0], echo_targets(x[..., 0], k))
        want_loss.backward()
        want_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip or math.inf)
        clipped += clip is not None and want_norm.item() > clip
        opt.step()
        assert bool(finite[0])
        assert abs(loss.item() - want_loss.item()) <= KERNELS_REL_F64 * want_loss.item()
        assert abs(norm.item() - want_norm.item()) <= KERNELS_REL_F64 * want_norm.item()
        want_params = kc.flatten(*(p.detach() for p in model.parameters()))
        assert rel(params[0], want_params) <= KERNELS_REL_F64, f"step {step}"
    assert counters.item() == 6 and steps.item() == (6 if optimizer == "adam" else 0)
    assert clip is None or clipped > 0, "the test must exercise clipping"


def test_train_step_reports_non_finite():
    H, I, bias, B, T = 3, 1, False, 4, 6
    params = torch.stack([kc.init_params(s, H, I, bias, 0.3) for s in range(3)])
    params[1, 0] = float("nan")
    m, v = torch.zeros_like(params), torch.zeros_like(params)
    _, _, finite = kc.train_step(
        params,
        m,
        v,
        torch.zeros(3, dtype=torch.int64),
        torch.full((3,), 0.01, dtype=F64),
        torch.arange(3),
        torch.zeros(3, dtype=torch.int64),
        torch.ones(3, dtype=torch.int64),
        H=H,
        I=I,
        bias=bias,
        B=B,
        T=T,
        truncate=None,
        grad_clip=None,
        optimizer="adam",
    )
    assert finite.tolist() == [True, False, True]


# ---------------------------------------------------------------------------------------
# Bits: a member's depend on nothing but its own config and inputs
# ---------------------------------------------------------------------------------------

FRONTIER = {"H": 6, "I": 1, "bias": True, "B": 64, "T": 50}


def train_members(seeds, echo, lrs, steps, *, threads=1, **shape):
    """Train members (seed, echo step, lr) from init_params with train_step (Adam, clip 1);
    returns every tensor of the state and every step's loss and norm, stacked."""
    shape = {**FRONTIER, **shape}
    H, I, bias = shape["H"], shape["I"], shape["bias"]
    R = len(seeds)
    params = torch.stack([kc.init_params(s, H, I, bias, 0.3) for s in seeds])
    m, v = torch.zeros_like(params), torch.zeros_like(params)
    state = {
        "params": params,
        "m": m,
        "v": v,
        "steps": torch.zeros(R, dtype=torch.int64),
        "counters": torch.zeros(R, dtype=torch.int64),
    }
    losses, norms = [], []
    for _ in range(steps):
        loss, norm, _ = kc.train_step(
            params,
            m,
            v,
            state["steps"],
            torch.tensor(lrs, dtype=F64),
            torch.tensor(seeds),
            state["counters"],
            torch.tensor(echo),
            truncate=None,
            grad_clip=1.0,
            optimizer="adam",
            threads=threads,
            **shape,
        )
        losses.append(loss)
        norms.append(norm)
    return {**state, "loss": torch.stack(losses, 1), "norm": torch.stack(norms, 1)}


def row(state: dict, r: int) -> dict:
    return {name: t[r] for name, t in state.items()}


def assert_same_bits(a: dict, b: dict, what: str) -> None:
    for name, value in a.items():
        assert value is None and b[name] is None or torch.equal(value, b[name]), (
            f"{what}: {name} differs"
        )


@pytest.mark.parametrize("R,place", [(7, 0), (7, 6), (32, 0), (32, 31)])
def test_member_bits_do_not_depend_on_the_population(R, place):
    me = (11, 3, 0.01)  # seed, echo step, lr
    others = [(100 + r, 1 + r % 9, 0.001 * (1 + r)) for r in range(R - 1)]
    pop = others[:place] + [me] + others[place:]
    alone = train_members([me[0]], [me[1]], [me[2]], steps=3)
    together = train_members(*map(list, zip(*pop)), steps=3)
    assert_same_bits(row(alone, 0), row(together, place), f"train_step at {place} of {R}")

    # forward_backward: the same member's pass alone and at that place, float32
    models, x, y, h0 = problem(R, 16, 20, 1, 6, True, True, seed=R + place, dtype=torch.float32)
    params = stack(models)
    full = kc.forward_backward(x, y, *params, h0=h0, truncate=3, want_dh=True)
    one = kc.forward_backward(
        x[place : place + 1].clone(),
        y[place : place + 1].clone(),
        *(t[place : place + 1].clone() for t in params),
        h0=h0[place : place + 1].clone(),
        truncate=3,
        want_dh=True,
    )
    assert_same_bits(
        {n: getattr(one, n)[0] for n in one._fields},
        {n: getattr(full, n)[place] for n in full._fields},
        f"forward_backward at {place} of {R}",
    )


def test_threads_do_not_change_bits():
    seeds, echo, lrs = [1, 2, 3, 4, 5, 6, 7], [1, 2, 3, 4, 5, 6, 7], [0.01] * 7
    one = train_members(seeds, echo, lrs, steps=3, threads=1)
    two = train_members(seeds, echo, lrs, steps=3, threads=2)
    assert_same_bits(one, two, "train_step, 1 against 2 threads")
    models, x, y, h0 = problem(5, 8, 10, 2, 4, True, True, seed=9, dtype=torch.float32)
    a = kc.forward_backward(x, y, *stack(models), h0=h0, want_dh=True, threads=1)
    b = kc.forward_backward(x, y, *stack(models), h0=h0, want_dh=True, threads=2)
    assert_same_bits(a._asdict(), b._asdict(), "forward_backward, 1 against 2 threads")


# ---------------------------------------------------------------------------------------
# Builds: the C source compiled for a baseline x86-64 and for this CPU gives the same bits
# ---------------------------------------------------------------------------------------

SOURCE = Path(kc.__file__).with_name("_compiled.c")


def build(directory: Path, flags: list[str], load: bool = True):
    """Compile _compiled.c with gcc and these flags (after -O3 -ffp-contract=off) into
    ``directory`` and load it (unless not ``load``); skip when gcc or Python's headers are
    absent."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not on PATH: the kernel cannot be compiled here")
    include = sysconfig.get_paths()["include"]
    if not Path(include, "Python.h").exists():
        pytest.skip(f"Python's headers are not installed ({include}/Python.h)")
    directory.mkdir(parents=True, exist_ok=True)
    out = directory / "_compiled.so"
    cmd = [
        gcc,
        "-shared",
        "-fPIC",
        "-O3",
        "-ffp-contract=off",
        "-std=gnu11",
        *flags,
        f"-I{include}",
        str(SOURCE),
        "-o",
        str(out),
        "-lm",
        "-lpthread",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode and "-march=native" in flags and "march" in done.stderr:
        pytest.skip(f"gcc does not take -march=native here: {done.stderr.strip()[:200]}")
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stderr}"
    if not load:
        return out
    spec = importlib.util.spec_from_file_location(f"{directory.name}._compiled", out)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    """The package's build (AVX2 picked at load time where the CPU has it), a baseline
    x86-64 build without the AVX2 clones (SSE2 only), and one for this CPU (-march=native,
    AVX-512 where present)."""
    if sys.platform != "linux" or not sysconfig.get_platform().endswith("x86_64"):
        pytest.skip("the build comparison is written for x86-64 Linux")
    root = tmp_path_factory.mktemp("kernel_builds")
    return {
        "package": kc._compiled,
        "baseline": build(root / "baseline", ["-march=x86-64", "-DECHO_NO_CLONES"]),
        "native": build(root / "native", ["-march=native"]),
    }


def frontier_training(module, steps, monkeypatch) -> dict:
    """A frontier-shaped training (B = 64, T = 50, H = 6, bias, Adam, clipping) of two
    members with different echo steps, through ``module``; every state tensor and every
    step's loss and norm, then a held-out evaluation."""
    with monkeypatch.context() as patch:
        patch.setattr(kc, "_compiled", module)
        out = train_members([5, 6], [3, 9], [0.01, 0.003], steps=steps)
        x = kc.draw_bits(5, kc.STREAM_VAL, 0, 256, 50)
        y = torch.stack([echo_targets(x, 3), echo_targets(x, 9)])
        out["eval loss"], out["eval accuracy"] = kc.evaluate(
            out["params"], x, y, torch.tensor([3, 9]), 6, 1, True
        )
    return out


@pytest.mark.slow  # seconds: the quick tier stays under a minute
def test_builds_train_to_the_same_bits(builds, monkeypatch):
    runs = {name: frontier_training(m, 300, monkeypatch) for name, m in builds.items()}
    for name in ("baseline", "native"):
        assert_same_bits(runs["package"], runs[name], f"300 steps, package against {name}")


@pytest.mark.slow
def test_builds_train_to_the_same_bits_full_length(builds, monkeypatch):
    runs = {name: frontier_training(m, 40000, monkeypatch) for name, m in builds.items()}
    for name in ("baseline", "native"):
        assert_same_bits(runs["package"], runs[name], f"40000 steps, package against {name}")


# Run under AddressSanitizer + UndefinedBehaviorSanitizer in a process of its own (ASan's
# runtime must be loaded first); no torch there, plain buffers from the array module. It
# prints every result, which the test compares with the package build's.
SANITIZED_SCRIPT = r"""
import array, importlib.util, json, sys
spec = importlib.util.spec_from_file_location("sanitized._compiled", sys.argv[1])
k = importlib.util.module_from_spec(spec)
spec.loader.exec_module(k)
ptr = lambda a: a.buffer_info()[0]
out = {}
# B = 67: a whole chunk of 64 lanes and a short one; H = 5: a block of 4 units and one more
for shape in ((3, 5, 7, 2, 4), (3, 67, 7, 1, 5)):
    R, B, T, I, H = shape
    P = H * H + H * I + 2 * H
    params = array.array("d", bytes(8 * R * P))
    for r in range(R):
        one = array.array("d", bytes(8 * P))
        k.init_params(r, H, I, 1, 0.5, 0.5, 0.9 if r == 1 else 0.0, ptr(one))
        params[r * P:(r + 1) * P] = one
    out[f"{shape} params"] = list(params)
    for dbl, code in ((1, "d"), (0, "f")):
        p = array.array(code, params)
        U = array.array(code, [p[r * P + n] for r in range(R) for n in range(H * H)])
        V = array.array(code, [p[r * P + H * H + n] for r in range(R) for n in range(H * I)])
        w = array.array(code, [p[r * P + H * H + H * I + n] for r in range(R) for n in range(H)])
        o = H * H + H * I + H
        b = array.array(code, [p[r * P + o + n] for r in range(R) for n in range(H)])
        x = array.array(code, bytes(array.array(code).itemsize * R * B * T * I))
        k.draw_bits(dbl, 4, 1, 2, R * B, T, I, ptr(x))
        y = array.array(code, [0.5 - x[n * I] for n in range(R * B * T)])
        h0 = array.array(code, [0.1 * (n % 7) - 0.3 for n in range(R * B * H)])
        bufs = {n: array.array(code, bytes(array.array(code).itemsize * s)) for n, s in (
            ("yhat", R * B * T), ("dU", R * H * H), ("dV", R * H * I), ("dw", R * H),
            ("db", R * H), ("dh0", R * B * H), ("dh", R * B * T * H))}
        loss = array.array("d", bytes(8 * R))
        k.forward_backward(dbl, R, B, T, I, H, ptr(x), ptr(y), ptr(U), ptr(V), ptr(w), ptr(b),
                           ptr(h0), 3, ptr(bufs["yhat"]), ptr(loss), ptr(bufs["dU"]),
                           ptr(bufs["dV"]), ptr(bufs["dw"]), ptr(bufs["db"]), ptr(bufs["dh0"]),
                           ptr(bufs["dh"]), 2)
        out[f"{shape} pass {code}"] = [list(loss)] + [list(v) for v in bufs.values()]
        m = array.array(code, bytes(len(p) * p.itemsize))
        v = array.array(code, bytes(len(p) * p.itemsize))
        steps, counters = array.array("q", [0] * R), array.array("q", [0] * R)
        lr = array.array("d", [0.01] * R)
        seeds, echo = array.array("q", [1, 2, 3]), array.array("q", [0, 1, 6])
        tl, tn = array.array("d", [0.0] * R), array.array("d", [0.0] * R)
        fin = array.array("B", [0] * R)
        for sgd in (0, 1):
            k.train_step(dbl, R, H, I, 1, B, T, 0, 0.5, 0.9, 0.999, 1e-8, sgd, ptr(p), ptr(m),
                         ptr(v), ptr(steps), ptr(lr), ptr(seeds), ptr(counters), ptr(echo),
                         ptr(tl), ptr(tn), ptr(fin), 2)
            out[f"{shape} train {code} {sgd}"] = [list(p), list(tl), list(tn), list(fin)]
        el, ea = array.array("d", [0.0] * R), array.array("d", [0.0] * R)
        k.evaluate(dbl, R, B, T, I, H, 1, ptr(p), 1, ptr(x), ptr(y), ptr(echo), ptr(el), ptr(ea), 2)
        out[f"{shape} eval {code}"] = [list(el), list(ea)]
        t = array.array(code, [float("nan"), float("inf"), -0.0, 1e-40, -3.0, 25.0])
        tt = array.array(code, bytes(len(t) * t.itemsize))
        k.tanh(dbl, len(t), ptr(t), ptr(tt))
        out[f"{shape} tanh {code}"] = [repr(v) for v in tt]
print(json.dumps(out))
"""


def run_sanitized_script(so: Path) -> dict:
    gcc = shutil.which("gcc")
    libasan = subprocess.run(
        [gcc, "-print-file-name=libasan.so"], capture_output=True, text=True, check=True
    ).stdout.strip()
    if not Path(libasan).is_file():
        pytest.skip("gcc's AddressSanitizer runtime (libasan.so) is not installed")
    # PYTHONMALLOC=malloc: Python's own allocator would hide the buffers from ASan
    env = {
        "LD_PRELOAD": libasan,
        "ASAN_OPTIONS": "detect_leaks=0",
        "PYTHONMALLOC": "malloc",
        "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
        "PATH": "/usr/bin:/bin",
    }
    done = subprocess.run(
        [sys.executable, "-c", SANITIZED_SCRIPT, str(so)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0 and "runtime error" not in done.stderr, done.stderr[-4000:]
    return json.loads(done.stdout)


@pytest.mark.slow
def test_sanitizers_find_nothing(tmp_path):
    """A debug build under ASan and UBSan runs every entry point (both real types, threads,
    truncation, h0, dh) without a report, and computes what the package build does."""
    sanitized = build(
        tmp_path / "sanitized",
        [
            "-O1",
            "-g",
            "-fno-omit-frame-pointer",
            "-DECHO_NO_CLONES",
            "-fsanitize=address,undefined",
            "-fno-sanitize-recover=undefined",
        ],
        load=False,
    )
    got = run_sanitized_script(sanitized)
    want = run_plain_script()
    assert got == want


def run_plain_script() -> dict:
    done = subprocess.run(
        [sys.executable, "-c", SANITIZED_SCRIPT, kc._compiled.__file__],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout)


# ---------------------------------------------------------------------------------------
# tanh
# ---------------------------------------------------------------------------------------


def float32_sweep() -> torch.Tensor:
    """Every 211th float32 in [0, 1] and their negatives, a dense sweep of [-10, 10] (2e6
    points), and edge values: ~1.2e7 inputs."""
    every = torch.arange(0, 0x3F800001, 211, dtype=torch.int64).to(torch.int32)
    x = every.view(torch.float32)
    edges = torch.tensor(
        [
            0.0,
            -0.0,
            1e-45,
            -1e-45,
            1.1754944e-38,
            1e-30,
            0.5,
            0.55,
            0.99,
            1.0,
            2.0,
            8.9,
            9.0,
            9.01,
            10.0,
            10.5,
            20.0,
            1e30,
            3.4e38,
        ]
    )
    dense = torch.linspace(-10, 10, 2_000_001, dtype=torch.float32)
    return torch.cat([x, -x, dense, edges, -edges])


def test_tanh_f32_ulps():
    x = float32_sweep()
    got = kc.tanh(x).double()
    exact = torch.tanh(x.double())
    nearest = exact.float()
    # one ulp of the float32 result: the gap to the next float32 away from zero (at 1.0 the
    # gap below, 2^-24, the finer of the two)
    up = torch.nextafter(nearest.abs(), torch.tensor(math.inf)).double() - nearest.abs().double()
    ulp = torch.where(nearest.abs() == 1, torch.full_like(up, 2.0**-24), up)
    ulps = ((got - exact).abs() / ulp).max().item()
    assert ulps <= kc.TANH_F32_MAX_ULP, f"worst error {ulps:.2f} ulp"
    assert (kc.tanh(x) == nearest).double().mean() > 0.9  # mostly correctly rounded


def test_tanh_f64_matches_torch():
    x = torch.cat(
        [
            torch.linspace(-25, 25, 1_000_001, dtype=F64),
            torch.logspace(-300, 1.4, 100_000, dtype=F64),
        ]
    )
    x = torch.cat([x, -x])
    got, want = kc.tanh(x), torch.tanh(x)
    worst = ((got - want).abs() / want.abs().clamp_min(1e-300)).max().item()
    assert worst <= TANH_F64_REL, f"worst relative error {worst:.2e}"


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_tanh_special_values(dtype):
    x = torch.tensor([math.nan, math.inf, -math.inf, 0.0, -0.0, 50.0, -50.0], dtype=dtype)
    got = kc.tanh(x)
    assert math.isnan(got[0]) and got[1:3].tolist() == [1.0, -1.0]
    assert got[3:5].tolist() == [0.0, 0.0]
    assert (
        math.copysign(1, got[3].item()) == 1 and math.copysign(1, got[4].item()) == -1
    )  # tanh(-0) = -0
    assert got[5:].tolist() == [1.0, -1.0]


# ---------------------------------------------------------------------------------------
# Random numbers: the generator, re-implemented in pure Python
# ---------------------------------------------------------------------------------------

M64 = 2**64 - 1
GOLDEN = 0x9E3779B97F4A7C15
LN2_HI, LN2_LO = 6.93147180369123816490e-01, 1.90821492927058770002e-10


def mix64(z: int) -> int:
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def py_key(seed: int, stream: int, counter: int) -> int:
    h = mix64((seed + GOLDEN) & M64)
    h = mix64((h + stream + GOLDEN) & M64)
    return mix64((h + (counter & M64) + GOLDEN) & M64)


def py_word(key: int, index: int) -> int:
    return mix64((key + index + GOLDEN) & M64)


def py_log(s: float) -> float:
    bits = struct.unpack("<Q", struct.pack("<d", s))[0]
    e = ((bits >> 52) & 0x7FF) - 1023
    m = struct.unpack("<d", struct.pack("<Q", (bits & (2**52 - 1)) | 0x3FF0000000000000))[0]
    if m > 1.4142135623730951:
        m *= 0.5
        e += 1
    f = (m - 1.0) / (m + 1.0)
    f2 = f * f
    series = 1.0 / 23.0
    for n in range(21, 0, -2):
        series = 1.0 / n + f2 * series
    return e * LN2_HI + (2.0 * f * series + e * LN2_LO)


def py_normal(key: int) -> float:
    a = 0
    while True:
        u = ((py_word(key, 2 * a) >> 11) | 1) * (1.0 / 4503599627370496.0) - 1.0
        v = ((py_word(key, 2 * a + 1) >> 11) | 1) * (1.0 / 4503599627370496.0) - 1.0
        s = u * u + v * v
        if 0.0 < s < 1.0:
            return u * math.sqrt(-2.0 * py_log(s) / s)
        a += 1


def py_init(seed, H, I, bias, std, input_std, gain):
    P = kc.param_count(H, I, bias)
    p = [
        (input_std if H * H <= n < H * H + H * I else std) * py_normal(py_key(seed & M64, 0, n))
        for n in range(P)
    ]
    if gain is not None:
        a = [py_normal(py_key(seed & M64, 0, n)) for n in range(H * H)]
        for j in range(H):  # modified Gram-Schmidt on the columns, as the C code
            for c in range(j):
                dot = 0.0
                for i in range(H):
                    dot += a[i * H + c] * a[i * H + j]
                for i in range(H):
                    a[i * H + j] -= dot * a[i * H + c]
            nrm = 0.0
            for i in range(H):
                nrm += a[i * H + j] * a[i * H + j]
            nrm = math.sqrt(nrm)
            for i in range(H):
                a[i * H + j] /= nrm
        p[: H * H] = [gain * value for value in a]
    return p


def test_generator_words_match_python():
    for seed, stream, counter, index in [
        (0, 0, 0, 0),
        (1, 2, 3, 4),
        (-5, 1, 2**40, 77),
        (2**63 - 1, 2, 0, 10**6),
    ]:
        assert kc._compiled.rng_word(seed, stream, counter, index) == py_word(
            py_key(seed & M64, stream, counter), index
        )


def test_draw_bits_match_python_and_differ_by_stream():
    B, T = 5, 29  # 145 bits: three words, the last one in part
    got = kc.draw_bits(42, kc.STREAM_TRAIN, 7, B, T)
    key = py_key(42, kc.STREAM_TRAIN, 7)

    def bit(n):
        return float((py_word(key, n // 64) >> (63 - n % 64)) & 1)

    want = torch.tensor([[bit(b * T + t) for t in range(T)] for b in range(B)])
    assert torch.equal(got, want)
    assert torch.equal(kc.draw_bits(42, kc.STREAM_TRAIN, 7, B, T, dtype=F64), want.double())
    assert torch.equal(kc.draw_bits(42, kc.STREAM_TRAIN, 7, B, T), got)  # equal arguments
    big = {s: kc.draw_bits(42, s, 0, 64, 50) for s in (kc.STREAM_TRAIN, kc.STREAM_VAL)}
    assert not torch.equal(big[kc.STREAM_TRAIN], big[kc.STREAM_VAL])
    assert not torch.equal(big[kc.STREAM_TRAIN], kc.draw_bits(42, kc.STREAM_TRAIN, 1, 64, 50))
    assert abs(big[kc.STREAM_TRAIN].mean().item() - 0.5) < 0.05  # 3200 fair bits
    three = kc.draw_bits(42, kc.STREAM_TRAIN, 7, B, T, I=3)
    assert three.shape == (B, T, 3) and three.flatten().tolist() == [
        bit(n) for n in range(B * T * 3)
    ]


def test_log_is_accurate():
    for s in [1e-300, 1e-20, 0.001, 0.3, 0.5, 0.7071, 0.7072, 0.9, 0.999999, 1.0]:
        assert py_log(s) == pytest.approx(math.log(s), rel=1e-15, abs=1e-300)


@pytest.mark.parametrize("gain", [None, 0.8], ids=["normal", "orthogonal"])
def test_init_params_match_python(gain):
    H, I, bias, seed = 5, 2, True, -3
    got = kc.init_params(seed, H, I, bias, 0.3, 0.7, gain, dtype=F64)
    assert got.tolist() == py_init(seed, H, I, bias, 0.3, 0.7, gain)
    assert torch.equal(kc.init_params(seed, H, I, bias, 0.3, 0.7, gain), got.float())
    assert not torch.equal(kc.init_params(seed + 1, H, I, bias, 0.3, 0.7, gain, dtype=F64), got)
    if gain is not None:
        U = kc.unflatten(got, H, I, bias)["U"]
        assert rel(U.T @ U, gain**2 * torch.eye(H, dtype=F64)) <= 1e-14


def test_normal_draws_are_standard_normal():
    z = torch.tensor([kc._compiled.normal(9, kc.STREAM_INIT, n) for n in range(20000)])
    assert abs(z.mean().item()) < 0.03 and abs(z.std().item() - 1) < 0.03  # 4 sigma
    assert abs((z.abs() < 1).double().mean().item() - 0.6827) < 0.015


def test_flatten_unflatten_round_trip():
    flat = torch.arange(2 * kc.param_count(3, 2, True), dtype=F64).view(2, -1)
    parts = kc.unflatten(flat, 3, 2, True)
    assert [tuple(t.shape) for t in parts.values()] == [(2, 3, 3), (2, 3, 2), (2, 3), (2, 3)]
    assert parts["U"][1, 0, 1].item() == flat[1, 1].item()  # row-major U[i, j]
    assert torch.equal(kc.flatten(**parts), flat)


# ---------------------------------------------------------------------------------------
# evaluate
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("I", [1, 2], ids=["I=1", "I=2"])
@pytest.mark.parametrize("shared", [True, False], ids=["shared x", "own x"])
def test_evaluate_matches_echo_loss_and_bit_accuracy(shared, I):
    R, N, T, H, bias = 3, 40, 15, 4, True
    params = torch.stack([kc.init_params(s, H, I, bias, 0.8, dtype=F64) for s in range(R)])
    echo = torch.tensor([0, 2, 5])
    xs = [
        kc.draw_bits(0 if shared else r, kc.STREAM_VAL, 0, N, T, dtype=F64, I=I) for r in range(R)
    ]  # (N, T) or (N, T, I)
    y = torch.stack([echo_targets(x.view(N, T, I)[..., 0], int(k)) for x, k in zip(xs, echo)])
    loss, acc = kc.evaluate(params, xs[0] if shared else torch.stack(xs), y, echo, H, I, bias)
    for r in range(R):
        p = kc.unflatten(params[r], H, I, bias)
        y_hat, _, _ = reference.forward(xs[r].view(N, T, I), p["U"], p["V"], p["w"], p["b"])
        assert loss[r].item() == pytest.approx(echo_loss(y_hat, y[r]).item(), rel=KERNELS_REL_F64)
        hits = ((y_hat[:, echo[r] :] > 0.5) == (y[r, :, echo[r] :] > 0.5)).double().mean()
        assert acc[r].item() == hits.item()
        assert acc[r].item() == pytest.approx(
            bit_accuracy(y_hat, y[r], int(echo[r])).item(), abs=1e-6
        )


# ---------------------------------------------------------------------------------------
# Bad input: one line naming the argument
# ---------------------------------------------------------------------------------------


def test_bad_input_is_named():
    models, x, y, _ = problem(2, 3, 4, 1, 3, False, True, seed=1)
    U, V, w, _ = stack(models)
    with pytest.raises(ValueError, match=r"^y must have shape \(2, 3, 4\)"):
        kc.forward_backward(x, y[:, :, :3].contiguous(), U, V, w)
    with pytest.raises(ValueError, match="^V must have dtype torch.float64"):
        kc.forward_backward(x, y, U, V.float(), w)
    with pytest.raises(ValueError, match="^truncate must be a positive integer"):
        kc.forward_backward(x, y, U, V, w, truncate=0)
    with pytest.raises(ValueError, match="^U must be contiguous"):
        kc.forward_backward(x, y, U.transpose(1, 2), V, w)
    params = torch.zeros(1, kc.param_count(3, 1, False))
    zero = torch.zeros(1, dtype=torch.int64)
    steps, counters = zero.clone(), zero.clone()
    before = params.clone()
    with pytest.raises(ValueError, match=r"^echo_step must be in \[0, T\) = \[0, 4\), got 4 "):
        kc.train_step(
            params,
            params.clone(),
            params.clone(),
            steps,
            torch.ones(1, dtype=F64),
            zero,
            counters,
            zero + 4,
            H=3,
            I=1,
            bias=False,
            B=2,
            T=4,
            truncate=None,
            grad_clip=None,
            optimizer="adam",
        )
    assert torch.equal(params, before) and steps.item() == counters.item() == 0  # untouched
    with pytest.raises(ValueError, match=r"^echo_step must be in \[0, T\) = \[0, 4\), got -2 "):
        kc.evaluate(params, torch.zeros(2, 4), torch.zeros(1, 2, 4), zero - 2, 3, 1, False)
    with pytest.raises(ValueError, match="^optimizer must be one of adam, sgd"):
        kc.train_step(
            params,
            params.clone(),
            params.clone(),
            steps,
            torch.ones(1, dtype=F64),
            zero,
            counters,
            zero,
            H=3,
            I=1,
            bias=False,
            B=2,
            T=4,
            truncate=None,
            grad_clip=None,
            optimizer="rmsprop",
        )


def test_without_the_extension_the_module_says_why(monkeypatch):
    """compiled.py loaded where _compiled cannot be imported: AVAILABLE is False, the reason
    is one line, the pure-Python helpers work and the kernel's functions raise it."""
    import echo_rnn.kernels

    monkeypatch.setitem(sys.modules, "echo_rnn.kernels._compiled", None)  # import fails
    monkeypatch.delattr(echo_rnn.kernels, "_compiled")
    spec = importlib.util.spec_from_file_location("compiled_unbuilt", kc.__file__)
    unbuilt = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(unbuilt)
    assert unbuilt.AVAILABLE is False
    reason = unbuilt.UNAVAILABLE_REASON
    assert reason.startswith("echo_rnn.kernels._compiled is not built") and "\n" not in reason
    assert unbuilt.param_count(6, 1, True) == kc.param_count(6, 1, True) == 54
    with pytest.raises(RuntimeError, match="is not built"):
        unbuilt.draw_bits(0, 0, 0, 2, 3)
