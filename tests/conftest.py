import os
import signal
import threading

import pytest
import torch

# torch imports torch._dynamo lazily (an optimizer's first step does), and that import sets
# TORCHINDUCTOR_CACHE_DIR in the environment: torch's own side effect, once per process.
# Importing it here, first, keeps it from being charged to whichever test comes first.
import torch._dynamo  # noqa: E402,F401


def pytest_configure(config):
    """Under pytest-xdist each worker's torch keeps to its share of the cores. At torch's
    default, a thread per core in each of 2 workers on 2 cores, OpenMP's threads fight the
    other worker for the cores: in the whole suite a float64 gradcheck of 0.4 s alone took
    130 s, and the slow tier 7 min 49 s (4 min 57 s with a thread a worker). The processes
    tests start get one thread for the same reason (helpers.python). Fewer threads, as
    OMP_NUM_THREADS=1 asks, stay as they are."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers > 1:
        share = max(1, (os.cpu_count() or 1) // workers)
        torch.set_num_threads(min(torch.get_num_threads(), share))


requires_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="CUDA is not available on this machine"
)

DEVICES = ["cpu", pytest.param("cuda", marks=requires_cuda)]


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(1234)


def _global_state() -> dict:
    return {
        "torch threads": torch.get_num_threads(),
        "default dtype": torch.get_default_dtype(),
        "SIGINT handler": signal.getsignal(signal.SIGINT),
        "SIGTERM handler": signal.getsignal(signal.SIGTERM),
        "cwd": os.getcwd(),
        "threading.excepthook": threading.excepthook,
        # pytest itself sets PYTEST_CURRENT_TEST for each phase of a test
        "environment": {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"},
    }


@pytest.fixture(autouse=True)
def no_leaked_global_state(request):
    """Fail, by name, a test that leaves the process's global state changed (and put it back,
    so that the next test is not the one that fails). Tests then pass in any order. The
    global RNG is restored silently: constructing a torch.nn layer draws from it, as
    documented, and no test may depend on what an earlier one drew."""
    before = _global_state()
    rng = torch.random.get_rng_state()
    yield
    after = _global_state()
    leaked = [k for k in before if before[k] != after[k]]
    torch.set_num_threads(before["torch threads"])
    torch.set_default_dtype(before["default dtype"])
    signal.signal(signal.SIGINT, before["SIGINT handler"])
    signal.signal(signal.SIGTERM, before["SIGTERM handler"])
    os.chdir(before["cwd"])
    threading.excepthook = before["threading.excepthook"]
    if after["environment"] != before["environment"]:
        for k in set(after["environment"]) - set(before["environment"]):
            del os.environ[k]
        os.environ.update(before["environment"])
    torch.random.set_rng_state(rng)
    if leaked:
        details = (
            "; ".join(f"{k}: {before[k]!r} -> {after[k]!r}" for k in leaked if k != "environment")
            or "environment changed"
        )
        pytest.fail(f"{request.node.name} leaked global state: {details}", pytrace=False)


# The test tiers. A test that starts a process (through helpers.python / cli, or a file's
# helper built on them) is marked ``subprocess``; those and the ``distributed`` ones are
# ``slow`` too, as are long trainings marked by hand. ``pytest -m "not slow"`` is the quick
# tier; plain ``pytest`` runs everything.
PROCESS_HELPERS = {"cli", "python", "torchrun", "sweep"}


def _calls_a_process_helper(function) -> bool:
    code = getattr(function, "__code__", None)
    return code is not None and bool(PROCESS_HELPERS & set(code.co_names))


def pytest_collection_modifyitems(config, items):
    for item in items:
        if _calls_a_process_helper(getattr(item, "function", None)):
            item.add_marker(pytest.mark.subprocess)
        if item.get_closest_marker("subprocess") or item.get_closest_marker("distributed"):
            item.add_marker(pytest.mark.slow)
