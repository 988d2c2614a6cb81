"""``echo-rnn train``: the flags are TrainConfig's fields (echo_rnn/config.py); the run is
:func:`echo_rnn.engine.train.train`'s, which validates the config once, before anything is
written."""

from __future__ import annotations

import argparse
import dataclasses
import shlex

from echo_rnn.cli import Failed, UsageError
from echo_rnn.config import (
    PRESETS,
    RESUME_FLAGS,
    RESUME_OVERRIDES,
    add_config_flags,
    build_config,
    config_overrides,
)
from echo_rnn.console import strict_json
from echo_rnn.engine import distributed
from echo_rnn.engine.train import NonFiniteLoss, TrainingInterrupted, train
from echo_rnn.errors import ConfigError
from echo_rnn.run.checkpoint import CheckpointError
from echo_rnn.run.locks import Busy
from echo_rnn.run.rundir import StorageError, open_run


def add_setup_flags(p: argparse.ArgumentParser):
    """--config and --preset, shared by train and sweep; returns their group."""
    s = p.add_argument_group("setup")
    s.add_argument(
        "--config",
        metavar="FILE.toml",
        default=None,
        help="TOML file of settings (keys as the flags, with _ or -); flags override it",
    )
    s.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=None,
        help="a named set of settings: notebook = the notebook's own experiment "
        "(one fixed 50-bit sequence, SGD lr 0.01, an update per time step, "
        "at most 1000 epochs); frontier = the recipe for echoing as far back "
        "as there are hidden units, k = H (input weights at std 1.5, clipping, "
        "constant lr 0.005, 40000 steps; see the README)",
    )
    return s


def add_parser(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train the echo RNN, logging curves to TensorBoard",
        description=(
            "Train the echo RNN on the echo task and log to TensorBoard under "
            "LOGDIR/RUN_NAME/ (events, config.json, checkpoints/last.pt, summary.json). "
            "Settings come from the defaults, then --preset, then --config FILE.toml, then "
            "the flags. Ctrl-C, SIGTERM or SIGHUP finishes the step, saves a checkpoint "
            "and exits 130, 143 or 129; --resume continues from it."
        ),
        epilog=(
            "examples:\n"
            "  echo-rnn train                           # k=2, T=50, H=6: solved in ~100 steps\n"
            "  echo-rnn train --backend bptt --seed 3\n"
            "  echo-rnn train --preset notebook         # the notebook's experiment, done right\n"
            "  echo-rnn train --resume runs/NAME --steps 2000\n"
            "  tensorboard --logdir runs"
        ),
    )
    s = add_setup_flags(p)
    s.add_argument(
        "--resume",
        metavar="RUN_DIR",
        default=None,
        help="continue a run (its directory or a checkpoint file) with the config it "
        f"was started with; only {RESUME_FLAGS} may be given with it. A run that "
        "stopped before its first checkpoint starts again from step 0; one "
        "whose checkpoint is damaged is refused",
    )
    s.add_argument(
        "--json",
        action="store_true",
        help="print the result as one JSON object (the fields of TrainResult) "
        "instead of a line per evaluation",
    )
    add_config_flags(p)
    p.set_defaults(run=run)


def _resumed(args: argparse.Namespace, overrides: dict):
    """The run --resume names, read once (train continues from it), and its config with
    RESUME_OVERRIDES (neither changes the curve); the run's config is checked by train, with
    the rest."""
    extra = sorted(set(overrides) - set(RESUME_OVERRIDES))
    if extra or args.config or args.preset:
        given = [f"--{k.replace('_', '-')}" for k in extra]
        given += ["--config"] * bool(args.config) + ["--preset"] * bool(args.preset)
        raise UsageError(
            f"argument --resume: a resumed run keeps its config; only {RESUME_FLAGS} may be "
            f"given with it, got {' '.join(given)}"
        )
    try:
        resume = open_run(args.resume)
    except (ConfigError, CheckpointError) as exc:
        raise UsageError(f"argument --resume: {exc}") from None
    except OSError as exc:  # a run directory or checkpoints/ without read permission
        raise UsageError(
            f"argument --resume: cannot read {exc.filename or args.resume}: {exc.strerror or exc}"
        ) from None
    return resume, dataclasses.replace(resume.config, **overrides)


def run(args: argparse.Namespace) -> int:
    overrides = config_overrides(args)
    if args.resume is not None:
        resume, config = _resumed(args, overrides)
    else:
        resume, config = None, build_config(args.preset, args.config, overrides)

    d = distributed.init(config.device)  # joins torchrun's process group, if launched by it
    try:
        result = train(config, resume=resume, verbose=not args.json)
    except ConfigError as exc:
        if resume is not None and exc.setting not in overrides:  # the run's, not a flag's
            raise UsageError(f"argument --resume: {exc}") from None
        raise  # --steps 0 on a resume: the flag is wrong, not the run
    except CheckpointError as exc:
        raise UsageError(f"argument --resume: {exc}") from None
    except (NonFiniteLoss, StorageError, Busy) as exc:
        raise Failed(f"error: {exc}") from None
    except TrainingInterrupted as exc:
        hint = (
            f"; continue with: echo-rnn train --resume {shlex.quote(str(exc.run_dir))}"
            if exc.step >= 0
            else ""
        )
        raise Failed(f"{exc}{hint}", 128 + exc.signum) from None
    finally:
        distributed.shutdown()
    if d.is_main:
        print(strict_json(result.to_dict()) if args.json else result.format(config))
    return 0
