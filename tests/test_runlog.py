"""What a run writes to TensorBoard stays light and true: pictures at most PICTURES_PER_RUN
times a run, points every log_every steps, one event file per TensorBoard run."""

from pathlib import Path

import pytest

from echo_rnn.engine.train import train
from echo_rnn.run.events import EventFile, event_file_in
from echo_rnn.run.runlog import PICTURES_PER_RUN
from helpers import events, python, scalar_series, small_config


@pytest.mark.slow  # seconds: the quick tier stays under a minute
def test_pictures_are_bounded_per_run_and_scalars_per_point(tmp_path):
    # Before: every evaluation logged 6 histograms and 5 images; a 40000-step frontier run
    # (400 evaluations) wrote tens of megabytes, of which TensorBoard shows 10 images a tag.
    steps, eval_every, log_every = 1500, 5, 50
    run = train(
        small_config(
            tmp_path,
            run_name="long",
            steps=steps,
            eval_every=eval_every,
            log_every=log_every,
            echo_step=9,
            hidden_size=2,
            target_accuracy=1.0,
        ),
        verbose=False,
    )
    assert run.step == steps  # k = 9 with 2 units: never solved, every step ran
    acc = events(run.run_dir)
    for tag in acc.Tags()["images"]:
        shots = [e.step for e in acc.Images(tag)]
        assert 2 <= len(shots) <= PICTURES_PER_RUN + 2, (tag, len(shots))
        assert shots[0] == 0 and shots[-1] == steps  # the first and the last are there
    for tag in acc.Tags()["histograms"]:
        assert len(acc.Histograms(tag)) <= PICTURES_PER_RUN + 2, tag
    points = [s for s, _ in scalar_series(run.run_dir, "train loss")]
    assert len(points) == len(set(points)) <= steps // min(eval_every, log_every)
    total = sum(f.stat().st_size for f in Path(run.run_dir).rglob("events.out.tfevents.*"))
    assert total < 1_500_000, total


def test_an_event_file_is_appended_to_and_cut_back(tmp_path):
    log = EventFile(tmp_path)
    log.scalar("x", 1.0, 1)
    kept = log.size()
    log.scalar("x", 2.0, 2)  # after the "checkpoint": a killed session's last words
    log.close()
    again = EventFile(tmp_path, truncate_to=kept)
    again.scalar("x", 3.0, 2)
    again.close()
    assert [(e.step, e.value) for e in events(tmp_path).Scalars("x")] == [(1, 1.0), (2, 3.0)]
    assert list(tmp_path.glob("events.out.tfevents.*")) == [event_file_in(tmp_path)]


def test_a_fresh_event_file_replaces_the_directorys_files(tmp_path):
    for value in (1.0, 2.0):
        log = EventFile(tmp_path, fresh=True)
        log.scalar("x", value, 0)
        log.close()
    assert [e.value for e in events(tmp_path).Scalars("x")] == [2.0]


def test_the_largest_hidden_size_logs_within_bounded_memory(tmp_path):
    # Before: the weight heatmap drew 16 px per unit: at H = 2048 a 32768 x 32768 picture
    # and a float64 colour array of about 25 GB, and the out-of-memory killer ended the run.
    # And the memory check counts everything the run allocates: what the process grows by
    # once torch and echo-rnn are loaded stays within the estimate it refuses runs by.
    from echo_rnn.config import build_config, run_bytes

    code = (
        "import resource, sys; import torch, numpy, PIL.Image, echo_rnn.engine.train, "
        "echo_rnn.run.tblog, echo_rnn.run.runlog; from echo_rnn.cli import main; "
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; "
        "code = main(sys.argv[1:]); "
        "print('grew_kb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base); "
        "sys.exit(code)"
    )
    flags = {
        "hidden_size": 4096,
        "seq_len": 3,
        "batch_size": 2,
        "val_size": 2,
        "steps": 1,
        "eval_every": 1,
    }
    proc = python(
        "-c",
        code,
        "train",
        *[a for k, v in flags.items() for a in (f"--{k.replace('_', '-')}", str(v))],
        "--logdir",
        tmp_path,
        "--run-name",
        "big",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    grew = int(proc.stdout.split("grew_kb")[-1]) * 1024
    assert grew < 2.5 * 2**30, grew  # the weights, Adam's state and the histograms' copies
    estimate = run_bytes(build_config(None, overrides=flags))
    assert grew <= estimate, (
        f"the run grew by {grew / 2**20:.0f} MiB, the check counts {estimate / 2**20:.0f} MiB"
    )
    acc = events(tmp_path / "big")
    for name in ("U", "V", "w"):
        (*_, last) = acc.Images(f"weights/{name} heatmap")
        assert last.width <= 640 and last.height <= 640, (name, last.width, last.height)


def tensorboard_smoothing(values, weight=0.6):
    """TensorBoard's default smoothing: an exponential moving average, debiased."""
    out, last = [], 0.0
    for i, v in enumerate(values, 1):
        last = last * weight + (1 - weight) * v
        out.append(last / (1 - weight**i))
    return out


def test_the_default_runs_held_out_accuracy_reaches_one_under_tensorboards_smoothing(tmp_path):
    # Before: five held-out points (one per evaluation); smoothed, the last read 0.8363
    # where the value was 1.
    from echo_rnn.config import TrainConfig

    run = train(TrainConfig(logdir=str(tmp_path)), verbose=False)
    assert run.solved_step is not None
    accuracy = [v for _, v in scalar_series(run.run_dir, "val accuracy")]
    assert accuracy[-1] == 1.0
    assert tensorboard_smoothing(accuracy)[-1] > 0.99


def test_records_are_framed_as_tensorboards_own_writer_frames_them(tmp_path):
    import io

    from tensorboard.summary.writer.record_writer import RecordWriter

    from echo_rnn.run.events import record

    for data in (b"", b"x", bytes(range(256)) * 40):
        theirs = io.BytesIO()
        RecordWriter(theirs).write(data)
        assert record(data) == theirs.getvalue()


def test_a_run_recorded_without_event_sizes_resumes_with_each_step_once(tmp_path):
    # A checkpoint from before event files were cut back on resume: TensorBoard is told to
    # drop what the killed session logged after it (a purge event in every file).
    from echo_rnn.run.checkpoint import checkpoint_path, load_checkpoint, save_checkpoint

    run = train(small_config(tmp_path, run_name="old", steps=40), verbose=False)
    state = load_checkpoint(run.run_dir)
    for key in ("events", "format", "version"):
        state.pop(key, None)
    state["step"] = 20  # as if killed at step 40 with its last checkpoint at 20
    ckpt = checkpoint_path(run.run_dir)
    save_checkpoint(ckpt, state)
    # (the weights are those of step 40; what matters here is what TensorBoard reads)
    train(small_config(tmp_path, run_name="old", steps=40), resume=run.run_dir, verbose=False)
    for name in ("train loss", "val loss", "grad norm"):
        steps = [s for s, _ in scalar_series(run.run_dir, name)]
        assert steps == sorted(set(steps)) and steps[-1] == 40, (name, steps)


def test_a_run_recorded_as_three_tensorboard_runs_resumes_into_one(tmp_path):
    # Runs recorded before one TensorBoard run per run kept their losses and accuracy in
    # RUN/train and RUN/val (tags loss, accuracy). A resume cuts those back to its checkpoint,
    # as it cuts RUN's own file, and goes on in RUN under the new tags: no step twice, and
    # nothing more written into the old directories.
    from echo_rnn.run.checkpoint import checkpoint_path, load_checkpoint, save_checkpoint

    run_dir = Path(train(small_config(tmp_path, run_name="old", steps=20), verbose=False).run_dir)
    state = load_checkpoint(run_dir)
    old = {"train": ("loss",), "val": ("loss", "accuracy")}
    for sub, tags in old.items():
        f = EventFile(run_dir / sub)
        for step in (10, 20):
            for tag in tags:
                f.scalar(tag, 0.5, step)
        state["events"][sub] = f.size()
        for tag in tags:
            f.scalar(tag, 0.5, 30)  # a killed session's, after the checkpoint: to be cut
        f.close()
    save_checkpoint(checkpoint_path(run_dir), state)
    for steps in (40, 60):  # and a second resume, from a checkpoint of the new kind
        resumed = train(
            small_config(tmp_path, run_name="old", steps=steps), resume=run_dir, verbose=False
        )
        assert resumed.step == steps
        for sub, tags in old.items():
            for tag in tags:
                assert [e.step for e in events(run_dir / sub).Scalars(tag)] == [10, 20], (sub, tag)
        for name in ("train loss", "val loss", "val accuracy"):
            points = [s for s, _ in scalar_series(run_dir, name)]
            assert points == sorted(set(points)) and points[-1] == steps, (name, points)
    assert set(load_checkpoint(run_dir)["events"]) == {""}


@pytest.mark.parametrize("shape", [(1, 1), (140, 300), (7, 641)])
def test_pictures_are_pngs_any_reader_decodes_to_their_pixels(shape):
    """events.png writes its own PNG (unfiltered rows, zlib): PIL, the reader TensorBoard's
    own tests use, reads back every pixel, from a one-pixel picture to one wider than a card."""
    import io

    import numpy as np
    from PIL import Image

    from echo_rnn.run.events import png

    rgb = np.random.default_rng(0).integers(0, 256, (*shape, 3), dtype=np.uint8)
    with Image.open(io.BytesIO(png(rgb))) as im:
        assert (im.format, im.mode, im.size) == ("PNG", "RGB", shape[::-1])
        assert np.array_equal(np.asarray(im), rgb)
    # a view that is not contiguous (a picture's columns flipped) is written as it reads
    flipped = rgb[:, ::-1]
    with Image.open(io.BytesIO(png(flipped))) as im:
        assert np.array_equal(np.asarray(im), flipped)
