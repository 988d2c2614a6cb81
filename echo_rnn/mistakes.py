r"""The catalogue of classic BPTT mistakes, each a small, named variation of the reference
kernel (:mod:`echo_rnn.reference`): the wrong gradients a learner's backward pass computes
when it makes that mistake. ``echo-rnn gradcheck --grads`` compares a learner's gradient that
disagrees with autograd's against every variation here, alone and times a constant (``sign``,
``scale``), and names the ones that reproduce it (:mod:`echo_rnn.learner`).

Same notation as the reference kernel: row vectors, steps t = 1..T, h_0 the initial state,
shapes in B, T, I, H. What the right kernel does, and what each variation changes::

    dJ/dh_t = local_t + carried_t       local_t = dJ/dyhat_t w^T   carried_t = dJ/dz_{t+1} U
    dJ/dz_t = dJ/dh_t * (1 - h_t^2)
    dU = sum_t dJ/dz_t^T h_{t-1}    dV = sum_t dJ/dz_t^T x_t    dw = sum_t h_t^T dJ/dyhat_t

A learner stores its states in arrays shifted by one from these (h of length T + 1 with h_0
first, or length T without it), so a step taken one off either lands on h_0 at the start or,
by Python's negative indexing, wraps around to h_T: both are variations.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from echo_rnn import reference


@dataclass(frozen=True)
class Mistake:
    """One entry of the catalogue, as the README's "common BPTT mistakes" table shows it."""

    code: str
    mistake: str
    fix: str


CATALOGUE = {m.code: m for m in (
    Mistake("sign", "opposite sign: the error taken as y - yhat while the update subtracts "
            "the gradient, so training climbs the loss",
            "take the error as yhat - y: dJ/dyhat_t = (yhat_t - y_t) / T"),
    Mistake("scale", "off by a constant factor: T (a sum over time where J takes the mean), "
            "B (a sum over the batch), 2 (the 1/2 of the cost forgotten) or their inverses",
            "dJ/dyhat_t = (yhat_t - y_t) / (B T): divide by T and by B once each, no factor 2"),
    Mistake("inner-product", "a scalar, or a matrix with every entry equal, where the sum of "
            "outer products belongs (np.dot of two vectors is their inner product)",
            "accumulate the outer product: dU += np.outer(dz_t, h_{t-1}) "
            "(batched: dz_t.T @ h_{t-1})"),
    Mistake("transposed", "the transpose of the right gradient (dU)",
            "dU += np.outer(dz_t, h_{t-1}), not np.outer(h_{t-1}, dz_t): row i is unit i's "
            "pre-activation"),
    Mistake("carry-transposed", "U where U^T belongs in the gradient carried back through "
            "time", "carry dJ/dh_{t-1} = U.T @ dz_t (column vectors), dz_t @ U (row vectors)"),
    Mistake("no-carry", "no gradient carried through time: each step's own loss only "
            "(truncation at 1)",
            "walk t from T down to 1 and add the carried term U.T @ dz_{t+1} to dJ/dh_t before "
            "multiplying by tanh'"),
    Mistake("no-tanh-derivative", "the factor tanh' = 1 - h_t^2 missing",
            "dz_t = dh_t * (1 - h_t**2), with h_t = tanh(z_t)"),
    Mistake("tanh-derivative-wrong-step", "tanh' taken at the neighbouring step: "
            "1 - h_{t-1}^2 or 1 - h_{t+1}^2 where 1 - h_t^2 belongs",
            "use the state the step itself made: dz_t = dh_t * (1 - h_t**2)"),
    Mistake("off-by-one", "a step off in time: h_{t-1} where h_t belongs (dw), h_t where "
            "h_{t-1} belongs (dU), x_{t-1} or x_{t+1} where x_t belongs (dV)",
            "yhat_t = w . h_t pairs dJ/dyhat_t with h_t; z_t = U h_{t-1} + V x_t pairs "
            "dJ/dz_t with h_{t-1} and x_t"),
    Mistake("last-step-only", "only the last step's loss differentiated, as if J were "
            "(yhat_T - y_T)^2 / 2",
            "J sums every step's loss: add dJ/dyhat_t w to dJ/dh_t at every t, not only at T"),
)}


@dataclass(frozen=True)
class Variation:
    """One way of making a catalogue mistake, as a change to the reference backward pass.

    ``says`` and ``fix`` map a gradient's name ("U", "V", "w", "b", "h0", "dh", or "*" for
    the rest) to what went wrong in it and how to put it right, in the learner's words.
    """

    code: str
    says: dict[str, str]
    fix: dict[str, str] = field(default_factory=dict)
    carry: str = "U"  # the matrix carrying dJ/dz_t back to h_{t-1}: "U", "U^T" or "none"
    tanh_at: int | None = 0  # the step tanh' is taken at, relative to t; None: no tanh'
    wrap: bool = False  # a step before the first is h_T / x_T (Python's [-1]), not h_0 / 0
    last_only: bool = False  # only step T's loss differentiated
    w_at: int = 0  # dw pairs dJ/dyhat_t with h_{t + w_at}
    U_at: int = -1  # dU pairs dJ/dz_t with h_{t + U_at}
    V_at: int = 0  # dV pairs dJ/dz_t with x_{t + V_at}
    after: str | None = None  # a change to the result: "transpose" or "inner-product"

    def sentence(self, name: str) -> tuple[str, str]:
        """(what went wrong in gradient ``name``, how to fix it)."""
        says = self.says.get(name, self.says.get("*", CATALOGUE[self.code].mistake))
        fix = self.fix.get(name, self.fix.get("*", CATALOGUE[self.code].fix))
        return says, fix


_PREV_WRAP = ("at the first step it reads h_T, index -1 of an array that holds h_1..h_T "
              "without h_0")
_OFF_BY_ONE_FIX = {
    "w": "dw += (yhat_t - y_t) / T * h_t, the state the prediction was read from",
    "U": "dU += np.outer(dz_t, h_{t-1}), the state step t started from",
    "V": "dV += np.outer(dz_t, x_t), the input of the same step"}
VARIATIONS = (
    Variation("inner-product", after="inner-product", says={
        "*": "it is one number, or a matrix with every entry equal: the inner product "
             "sum_t dz_t . h_{t-1} where the sum of outer products dz_t h_{t-1}^T belongs",
        "V": "it is one number, or a matrix with every entry equal: the inner product "
             "sum_t dz_t . x_t where the sum of outer products dz_t x_t^T belongs"},
        fix={"V": "accumulate the outer product: dV += np.outer(dz_t, x_t) "
                  "(batched: dz_t.T @ x_t)"}),
    Variation("transposed", after="transpose", says={
        "*": "it is the transpose of the right gradient: np.outer(h_{t-1}, dz_t) where "
             "np.outer(dz_t, h_{t-1}) belongs"}),
    Variation("carry-transposed", carry="U^T", says={
        "*": "the gradient carried back through time uses U where U^T belongs "
             "(dh_{t-1} = U @ dz_t instead of U.T @ dz_t)"}),
    Variation("no-carry", carry="none", says={
        "*": "no gradient is carried back through time: each step sees only its own loss, "
             "as if truncated at 1 step"}),
    Variation("no-tanh-derivative", tanh_at=None, says={
        "*": "the tanh derivative is missing: dz_t = dh_t where dz_t = dh_t * (1 - h_t^2) "
             "belongs"}),
    Variation("tanh-derivative-wrong-step", tanh_at=-1, says={
        "*": "the tanh derivative is taken at the previous step, 1 - h_{t-1}^2, where "
             "1 - h_t^2 belongs"}),
    Variation("tanh-derivative-wrong-step", tanh_at=-1, wrap=True, says={
        "*": "the tanh derivative is taken at the previous step, 1 - h_{t-1}^2, where "
             f"1 - h_t^2 belongs ({_PREV_WRAP})"}),
    Variation("tanh-derivative-wrong-step", tanh_at=1, says={
        "*": "the tanh derivative is taken at the next step, 1 - h_{t+1}^2, where "
             "1 - h_t^2 belongs"}),
    Variation("off-by-one", w_at=-1, U_at=0, V_at=-1, says={
        "w": "dw pairs the error at step t with h_{t-1}; yhat_t = w . h_t needs h_t",
        "U": "dU pairs dz_t with h_t; z_t = U h_{t-1} + V x_t needs h_{t-1}",
        "V": "dV pairs dz_t with x_{t-1}; z_t = U h_{t-1} + V x_t needs x_t"},
        fix=_OFF_BY_ONE_FIX),
    Variation("off-by-one", w_at=-1, U_at=0, V_at=-1, wrap=True, says={
        "w": f"dw pairs the error at step t with h_{{t-1}} ({_PREV_WRAP}); yhat_t = w . h_t "
             "needs h_t",
        "U": "dU pairs dz_t with h_t; z_t = U h_{t-1} + V x_t needs h_{t-1}",
        "V": "dV pairs dz_t with x_{t-1} (at the first step x_T, index -1); "
             "z_t = U h_{t-1} + V x_t needs x_t"},
        fix=_OFF_BY_ONE_FIX),
    Variation("off-by-one", w_at=1, U_at=0, V_at=1, says={
        "w": "dw pairs the error at step t with h_{t+1}; yhat_t = w . h_t needs h_t",
        "U": "dU pairs dz_t with h_t; z_t = U h_{t-1} + V x_t needs h_{t-1}",
        "V": "dV pairs dz_t with x_{t+1}; z_t = U h_{t-1} + V x_t needs x_t"},
        fix=_OFF_BY_ONE_FIX),
    Variation("last-step-only", last_only=True, says={
        "*": "only the last step's loss is differentiated; J sums the loss of every step"}),
)


def variation_grads(
    v: Variation,
    x: torch.Tensor,
    y: torch.Tensor,
    U: torch.Tensor,
    V: torch.Tensor,
    w: torch.Tensor,
    b: torch.Tensor | None = None,
    h0: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """The gradients of the echo cost that the reference backward pass gives when it makes
    mistake ``v``.

    Args:
        x: (B, T, I). y: (B, T). U, V, w, b: (H, H), (H, I), (H,), (H,) or None.
        h0: (B, H) or None for zeros.

    Returns:
        ``{"U", "V", "w", "b", "h0", "dh"}``: (H, H), (H, I), (H,), (H,), (B, H) and
        dJ/dh_t (B, T, H), as the mistaken kernel computes them.
    """
    B, T, _ = x.shape
    y_hat, _, caches = reference.forward(x, U, V, w, b, h0)
    dy_hat = (y_hat - y) / (B * T)
    if v.last_only:
        dy_hat = torch.cat([torch.zeros_like(dy_hat[:, :-1]), dy_hat[:, -1:]], dim=1)
    hs = [h0 if h0 is not None else torch.zeros_like(caches[0].h)] + [c.h for c in caches]

    # A lookup the mistake shifts reads h_T / x_T before the first step when v.wrap; the
    # lookups it leaves alone read h_0 as the right kernel does.
    def h_at(t: int, shifted: bool) -> torch.Tensor:  # h_t, t = 0..T; beyond T zeros
        if t > T:
            return torch.zeros_like(hs[0])
        return hs[T] if (t == 0 and v.wrap and shifted) else hs[t]

    def x_at(t: int) -> torch.Tensor:  # x_t, t = 1..T; outside zeros, or x_T (wrap)
        if t == 0 and v.wrap:
            return x[:, T - 1]
        return x[:, t - 1] if 1 <= t <= T else torch.zeros_like(x[:, 0])

    dU, dV, dw, db = (torch.zeros_like(p) for p in (U, V, w, w))
    dh = [None] * T
    carried = torch.zeros_like(hs[0])
    for t in range(T, 0, -1):
        dh[t - 1] = dy_hat[:, t - 1, None] * w + carried  # local_t + carried_t
        dz = dh[t - 1] if v.tanh_at is None else \
            dh[t - 1] * (1 - h_at(t + v.tanh_at, v.tanh_at != 0) ** 2)
        dU = dU + dz.T @ h_at(t + v.U_at, v.U_at != -1)
        dV = dV + dz.T @ x_at(t + v.V_at)
        db = db + dz.sum(0)
        dw = dw + h_at(t + v.w_at, v.w_at != 0).T @ dy_hat[:, t - 1]
        carried = {"U": dz @ U, "U^T": dz @ U.T, "none": torch.zeros_like(dz)}[v.carry]
    grads = {"U": dU, "V": dV, "w": dw, "b": db, "h0": carried, "dh": torch.stack(dh, dim=1)}
    if v.after == "transpose":
        grads["U"] = dU.T
        if V.shape[0] == V.shape[1]:
            grads["V"] = dV.T
    elif v.after == "inner-product":
        grads["U"] = torch.full_like(dU, dU.trace().item())  # sum_t dz_t . h_{t-1}
        if V.shape[0] == V.shape[1]:
            grads["V"] = torch.full_like(dV, dV.trace().item())
    return grads


def named_factors(B: int, T: int) -> dict[float, str]:
    """The constant factors ``scale`` names, {value: name}: T, B, 2, their inverses and
    products (a sum over time and a forgotten 1/2 at once is 2T), the simplest name first
    when two coincide (B = 1, or T = 2)."""
    names: dict[float, str] = {}
    terms = []
    for a in (0, 1, -1):
        for bb in (0, 1, -1):
            for c in (0, 1, -1):
                if (a, bb, c) != (0, 0, 0):
                    terms.append((abs(a) + abs(bb) + abs(c), a, bb, c))
    for _, a, bb, c in sorted(terms):
        value = float(T) ** a * float(B) ** bb * 2.0 ** c
        up = "".join(s for s, e in (("2", c), ("B", bb), ("T", a)) if e == 1)
        down = "".join(s for s, e in (("2", c), ("B", bb), ("T", a)) if e == -1)
        name = (up or "1") + (f"/{down}" if len(down) == 1 else f"/({down})" if down else "")
        if value != 1.0 and not any(abs(value / k - 1) < 1e-12 for k in names):
            names[value] = name
    return names


def factor_meaning(name: str) -> str:
    """What a named factor says about the code that made it."""
    up, _, down = name.partition("/")
    down = down.strip("()")
    said = []
    for symbol, missing, extra in (
        ("T", "the 1/T of the mean over time missing (a sum over t)", "divided by T once too often"),
        ("B", "the 1/B of the mean over the batch missing (a sum over sequences)",
         "divided by B once too often"),
        ("2", "the 1/2 of the cost forgotten (d/dyhat of (yhat - y)^2 is 2 (yhat - y), "
              "of (yhat - y)^2 / 2 it is yhat - y)", "halved once too often"),
    ):
        if symbol in up:
            said.append(missing)
        if symbol in down:
            said.append(extra)
    return "; ".join(said)
