r"""A class made from the catalogue: student files with the catalogue's mistakes planted,
each in the layouts of ``examples/layouts/`` (the same function names, arguments, shapes,
orientation and returned keys as each example, and its layout file for ``echo-rnn grade``).
The tests grade such a class and check every planted mistake is named; a teacher can grade
one to see the reports before their own class hands anything in::

    from echo_rnn.grade.planted import write_class
    write_class("demo", "rows", [["no-carry"], ["sign", "off-by-one/w"], []])

Every file holds the same backward loop, written as a learner writes it (numpy, explicit
loops over t, h kept with h_0 first), with its mistakes as lines of code: the layout is the
function around it (its names, its shapes, its orientation, a step function for layered
code), so a mistake is planted in one place and checked in every layout. A placement is
``code/where`` when a mistake can sit in more than one place (:data:`PLACEMENTS`).
"""

from __future__ import annotations

from pathlib import Path

# Every placement of every mistake of the catalogue, as the loop below plants it: the
# catalogue's code, "/" and where, for a mistake with more than one place. The tanh'
# mistakes: at the previous step on the whole dJ/dh_t (from h kept with h_0 first, or from a
# list of h_1..h_T whose index -1 is h_T), at the next step, on the carried term only
# (carry-tanh-...), or on the step's own loss term only (local-tanh-...); an index one off:
# in the upstream gradient, the cache (every value the step reads), or the carry (the
# carried term reaching the wrong step).
PLACEMENTS = (
    "sign",
    "scale",
    "inner-product",
    "transposed",
    "carry-transposed",
    "no-carry",
    "no-tanh-derivative",
    "tanh-derivative-wrong-step/previous",
    "tanh-derivative-wrong-step/wrapped",
    "tanh-derivative-wrong-step/next",
    "local-tanh-derivative-wrong-step",
    "carry-tanh-derivative-wrong-step",
    "off-by-one/w",
    "off-by-one/U",
    "off-by-one/V",
    "last-step-only",
    "last-step-twice",
    "bias-skips-tanh-derivative",
    "upstream-off-by-one",
    "cache-off-by-one",
    "carry-off-by-one",
)
# A mistake outside the catalogue, planted to show (and test) the report on one it does not
# describe: wrong in a way the catalogue does not describe, and, from dJ/dh_t, where it
# departs. Every placement above has its record.
UNDESCRIBED = ("carry-doubled",)
# Placements that change only db: planted on a problem with a bias.
BIAS_ONLY = ("bias-skips-tanh-derivative",)
# Placements that write the same line a different way: one file cannot hold two of a group.
EXCLUSIVE = (
    {
        "no-tanh-derivative",
        "tanh-derivative-wrong-step/previous",
        "tanh-derivative-wrong-step/wrapped",
        "tanh-derivative-wrong-step/next",
        "local-tanh-derivative-wrong-step",
    },
    {"inner-product", "transposed"},
    {"no-carry", "carry-transposed", "carry-tanh-derivative-wrong-step", "carry-off-by-one"},
)


def pairs(placements: tuple[str, ...] = PLACEMENTS) -> list[tuple[str, str]]:
    """Every two placements one file can hold together."""
    return [
        (a, b)
        for i, a in enumerate(placements)
        for b in placements[i + 1 :]
        if not any(a in g and b in g for g in EXCLUSIVE)
    ]


CORE = '''
import numpy as np

MISTAKES = {mistakes!r}


def backward(U, V, w, x, y, b=None, h0=None, head=None, step_backward=None):
    """x (B, T, I), y (B, T), U (H, H), V (H, I), w (H,): the gradients of
    J = mean over the batch of sum_t (yhat_t - y_t)^2 / (2T), dJ/dh_t (B, T, H) and dJ/dh_0."""
    M = MISTAKES
    B, T, _ = x.shape
    H = len(w)
    hs = np.zeros((B, T + 1, H))  # hs[:, 0] is h_0, hs[:, t] is h_t
    if h0 is not None:
        hs[:, 0] = h0
    for t in range(1, T + 1):
        hs[:, t] = np.tanh(hs[:, t - 1] @ U.T + x[:, t - 1] @ V.T + (0 if b is None else b))
    yhat = hs[:, 1:] @ w
    errs = (yhat - y) / (B * T) if head is None else head(yhat - y)
    if "sign" in M:
        errs = -errs
    if "scale" in M:
        errs = errs * T  # summed over time
    if "last-step-only" in M:
        errs[:, :-1] = 0
    dU, dV, dw, db = np.zeros_like(U), np.zeros_like(V), np.zeros_like(w), np.zeros(H)
    dh_all = np.zeros((B, T, H))
    dh_next = np.zeros((B, H))
    carried_to = {{}}
    for t in range(T, 0, -1):
        err = errs[:, t - 1]
        dw += (hs[:, t - 1] if "off-by-one/w" in M else hs[:, t]).T @ err
        up = errs[:, t - 2] if "upstream-off-by-one" in M else err  # -1 wraps to step T
        carried = carried_to.pop(t, np.zeros((B, H))) if "carry-off-by-one" in M else dh_next
        if "last-step-twice" in M and t == T:  # the carried gradient started at dJ/dyhat_T w
            carried = carried + err[:, None] * w[None, :]
        own = up[:, None] * w[None, :]
        dh = own + carried
        if step_backward is not None:
            step_backward(dh)
        dh_all[:, t - 1] = dh
        s = (t - 1 if t > 1 else T) if "cache-off-by-one" in M else t  # caches[t - 2]
        if "no-tanh-derivative" in M:
            dz = dh
        elif "tanh-derivative-wrong-step/previous" in M:
            dz = dh * (1 - hs[:, t - 1] ** 2)
        elif "tanh-derivative-wrong-step/wrapped" in M:  # a list of h_1..h_T only
            dz = dh * (1 - hs[:, 1:][:, t - 2] ** 2)  # index -1 at t = 1: h_T
        elif "tanh-derivative-wrong-step/next" in M:
            dz = dh * (1 - (hs[:, t + 1] if t < T else 0) ** 2)
        elif "local-tanh-derivative-wrong-step" in M:
            dz = own * (1 - hs[:, t - 1] ** 2) + carried * (1 - hs[:, s] ** 2)
        else:
            dz = dh * (1 - hs[:, s] ** 2)
        h_prev = hs[:, t] if "off-by-one/U" in M else hs[:, s - 1]
        if "inner-product" in M:
            dU += np.sum(dz * h_prev)  # np.dot of two vectors: one number in every entry
        elif "transposed" in M:
            dU += h_prev.T @ dz
        else:
            dU += dz.T @ h_prev
        dV += dz.T @ (x[:, t - 2] if "off-by-one/V" in M else x[:, s - 1])
        db += (dh if "bias-skips-tanh-derivative" in M else dz).sum(0)
        if "carry-doubled" in M:
            dh_next = 2 * dz @ U
        elif "no-carry" in M:
            dh_next = np.zeros((B, H))
        elif "carry-transposed" in M:
            dh_next = dz @ U.T
        elif "carry-tanh-derivative-wrong-step" in M:
            dh_next = (dh * (1 - hs[:, t - 1] ** 2)) @ U
        else:
            dh_next = dz @ U
        carried_to[t - 2] = dh_next  # the carry sent one step too far back
    return {{"U": dU, "V": dV, "w": dw, "b": db, "dh": dh_all, "h0": dh_next}}
'''

# Each layout of examples/layouts/: the function as the example writes its signature and
# return, and its layout file's [layout] table (the example's wrapper).
LAYOUTS = {
    "columns": (
        "bptt",
        '''

def bptt(Whh, Wxh, why, x, y):
    """x, y: (T,); Whh (H, H), Wxh (H, 1), why (H,)."""
    g = backward(Whh, Wxh, why, x.reshape(1, -1, 1), y.reshape(1, -1))
    return {"dWhh": g["U"], "dWxh": g["V"], "dwhy": g["w"], "dh": g["dh"][0]}
''',
        {"kind": "columns", "U": "Whh", "V": "Wxh", "w": "why"},
    ),
    "rows": (
        "rnn_bptt",
        '''

def rnn_bptt(Wh, Wx, Wy, x, y, b=None):
    """x (N, T, D), y (N, T); Wh (H, H), Wx (D, H), Wy (H,), b (H,) or None: h @ Wh."""
    g = backward(Wh.T, Wx.T, Wy, x, y, b)
    grads = {"Wh": g["U"].T, "Wx": g["V"].T, "Wy": g["w"], "dh": g["dh"]}
    if b is not None:
        grads["b"] = g["b"]
    return grads
''',
        {"kind": "rows", "U": "Wh", "V": "Wx", "w": "Wy"},
    ),
    "batch_middle": (
        "rnn_bptt",
        '''

def rnn_bptt(Waa, Wax, Wya, x, y, ba=None):
    """x (n_x, m, T_x), y (1, m, T_x); Waa (n_a, n_a), Wax (n_a, n_x), Wya (1, n_a)."""
    g = backward(Waa, Wax, Wya[0], np.transpose(x, (1, 2, 0)), y[0],
                 None if ba is None else ba[:, 0])
    grads = {"dWaa": g["U"], "dWax": g["V"], "dWya": g["w"][None, :],
             "da": np.transpose(g["dh"], (2, 0, 1))}
    if ba is not None:
        grads["dba"] = g["b"][:, None]
    return grads
''',
        {"kind": "batch-middle", "U": "Waa", "V": "Wax", "w": "Wya", "b": "ba", "dh": "da"},
    ),
    "loss_head": (
        "bptt",
        '''

def bptt(U, V, w, x, y):
    """x, y: (T,); the loss head dy = yhat - y: the gradients of the sum over steps."""
    g = backward(U, V, w, x.reshape(1, -1, 1), y.reshape(1, -1), head=lambda e: e)
    return {"U": g["U"], "V": g["V"], "w": g["w"]}
''',
        {"dy": "yhat - y"},
    ),
    "module_globals": (
        "lossFun",
        '''

hidden_size = 6
Wxh = np.random.randn(hidden_size, 1) * 0.1
Whh = np.random.randn(hidden_size, hidden_size) * 0.1
Why = np.random.randn(hidden_size) * 0.1


def lossFun(inputs, targets, hprev):
    """inputs, targets: T numbers; hprev (H,). The parameters are the module's globals."""
    g = backward(Whh, Wxh, Why, np.asarray(inputs, float).reshape(1, -1, 1),
                 np.asarray(targets, float).reshape(1, -1), h0=hprev[None, :])
    return 0.0, g["V"], g["U"], g["w"], None
''',
        {
            "globals": True,
            "U": "Whh",
            "V": "Wxh",
            "w": "Why",
            "args": ["x", "y", "h0"],
            "returns": ["loss", "dWxh", "dWhh", "dWhy", "hlast"],
        },
    ),
    "layered": (
        "loss",
        '''

def rnn_step_backward(dnext_h, cache):
    """What the step's backward is handed is dJ/dh_t (the wrapper records it)."""
    return None


def loss(x, y, Wx, Wh, Wy, b=None):
    """x (N, T, D), y (N, T); row vectors, h @ Wh."""
    g = backward(Wh.T, Wx.T, Wy, x, y, b,
                 step_backward=lambda dh: rnn_step_backward(dh, None))
    grads = {"Wx": g["V"].T, "Wh": g["U"].T, "Wy": g["w"]}
    if b is not None:
        grads["b"] = g["b"]
    return grads
''',
        {"kind": "rows", "U": "Wh", "V": "Wx", "w": "Wy", "record_dh": "rnn_step_backward"},
    ),
    "truncated": (
        "bptt",
        '''

def bptt(U, V, W, x, y):
    """The tutorial's names: U input to hidden (H, 1), V hidden to output (H,), W hidden to
    hidden (H, H); its loss head delta_o = o - y; its list of gradients."""
    g = backward(W, U, V, x.reshape(1, -1, 1), y.reshape(1, -1), head=lambda e: e)
    return [g["V"], g["w"], g["U"]]
''',
        {
            "kind": "columns",
            "U": "W",
            "V": "U",
            "w": "V",
            "returns": ["U", "V", "W"],
            "dy": "yhat - y",
        },
    ),
}
# The layouts that take a batch and a bias (the others are one sequence, as their examples).
BATCHED = ("rows", "batch_middle", "layered")


def source(layout: str, mistakes: list[str] | tuple[str, ...]) -> str:
    """A student's file: the loop with ``mistakes`` planted, in ``layout``."""
    for m in mistakes:
        if m not in PLACEMENTS + UNDESCRIBED:
            valid = ", ".join(PLACEMENTS + UNDESCRIBED)
            raise ValueError(f"unknown placement {m!r}; valid are {valid}")
    return CORE.format(mistakes=tuple(mistakes)) + LAYOUTS[layout][1]


def layout_toml(layout: str, problem: dict | None = None) -> str:
    """The layout file ``echo-rnn grade --layout`` takes for a class in ``layout``."""

    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, list):
            return "[" + ", ".join(value(a) for a in v) + "]"
        return f'"{v}"' if isinstance(v, str) else str(v)

    lines = ["[layout]"] + [f"{k} = {value(v)}" for k, v in LAYOUTS[layout][2].items()]
    if problem:
        lines += ["", "[problem]"] + [f"{k} = {value(v)}" for k, v in problem.items()]
    return "\n".join(lines) + "\n"


def student_name(mistakes: list[str] | tuple[str, ...]) -> str:
    """A file name that says what was planted: "no-carry", "sign+off-by-one_w", "correct"."""
    return "+".join(m.replace("/", "_") for m in mistakes) or "correct"


def write_class(
    folder: str | Path, layout: str, classes: list[list[str]], problem: dict | None = None
) -> tuple[str, Path]:
    """One .py file per entry of ``classes`` (the placements planted in it) in ``folder``,
    and ``folder``/../LAYOUT.toml; returns (the function's name, the layout file)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for mistakes in classes:
        (folder / f"{student_name(mistakes)}.py").write_text(source(layout, mistakes))
    toml = folder.parent / f"{folder.name}-layout.toml"
    toml.write_text(layout_toml(layout, problem))
    return LAYOUTS[layout][0], toml
