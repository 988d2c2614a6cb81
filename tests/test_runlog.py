"""What a run writes to TensorBoard stays light and true: pictures at most PICTURES_PER_RUN
times a run, points every log_every steps, one event file per TensorBoard run."""

from pathlib import Path

from echo_rnn.events import EventFile, event_file_in
from echo_rnn.runlog import PICTURES_PER_RUN
from echo_rnn.train import train
from helpers import events, scalar_series, small_config


def test_pictures_are_bounded_per_run_and_scalars_per_point(tmp_path):
    # Before: every evaluation logged 6 histograms and 5 images; a 40000-step frontier run
    # (400 evaluations) wrote tens of megabytes, of which TensorBoard shows 10 images a tag.
    steps, eval_every, log_every = 1500, 5, 50
    run = train(small_config(tmp_path, run_name="long", steps=steps, eval_every=eval_every,
                             log_every=log_every, echo_step=9, hidden_size=2,
                             target_accuracy=1.0), verbose=False)
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
