"""A sweep seen as it runs (issue 25): bars on a terminal, a few plain lines elsewhere, none
when asked for none; the time left; the reports a trainer sends, thinned out."""

import io

import pytest

from echo_rnn.progress import Job, SweepProgress, Throttled, format_seconds, time_left


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def jobs():
    return [
        Job("H3 x4 (k 1-2)", 4, 1000),
        Job("k5-H3-s0", 1, 1000),
        Job("k1-H3-s1", 1, 1000, trains=False),
    ]


def test_the_time_left_is_the_running_jobs_and_the_waiting_ones_over_the_workers():
    js = jobs()
    assert time_left(js, workers=2) is None  # no rate seen yet
    js[0].report(0.0, 0, 4)
    js[0].report(10.0, 100, 3)  # 10 steps/s, 900 steps to go: 90 s
    # the waiting point at that rate: 100 s; the read-back one costs nothing
    assert time_left(js, workers=2) == pytest.approx((90 + 100) / 2)
    assert time_left(js, workers=1) == pytest.approx(190)
    assert time_left(js, workers=8) == pytest.approx(90)  # never less than the longest job
    js[1].report(10.0, 0, 1)
    js[1].report(12.0, 100, 1)  # 50 steps/s: 18 s left
    assert time_left(js, workers=1) == pytest.approx(90 + 18)
    js[0].done = True
    assert time_left(js, workers=1) == pytest.approx(18)


def test_format_seconds():
    assert [format_seconds(s) for s in (0, 44.6, 60, 250, 3600, 7530)] == [
        "0s",
        "45s",
        "1m00s",
        "4m10s",
        "1h00m",
        "2h05m",
    ]


def test_plain_lines_come_every_few_seconds_with_each_job_and_the_time_left():
    clock, out = Clock(), io.StringIO()
    shown = SweepProgress(
        jobs(), points=6, workers=1, stream=out, mode="lines", every=10, clock=clock
    )
    shown.update(0, 0, 4)
    clock.now += 9
    shown.update(0, 90, 3)
    shown.tick()
    assert out.getvalue() == ""  # not yet: a log gets a block every 10 s, not a line a step
    clock.now += 1
    shown.update(0, 100, 3)
    shown.tick()
    assert out.getvalue().splitlines() == [
        # one member finished: its point is reported when the population ends
        "sweep: 0 of 6 points done (0 solved), 1 more finished in the 1 running, "
        "about 3m10s left if no run solves early",
        "  H3 x4 (k 1-2): step 100 of 1000, 3 of 4 training",
    ]
    shown.point_done(solved=True)
    shown.job_done(0, step=400)
    shown.update(1, 7, 1)
    shown.write("k=1 H=3 seed=0: solved at step 40", file=out)
    clock.now += 10
    shown.tick()
    assert out.getvalue().splitlines()[2:] == [
        "k=1 H=3 seed=0: solved at step 40",
        # the point at the population's rate (400 steps in 10 s): 993 steps in 25 s
        "sweep: 1 of 6 points done (1 solved), 1 running, about 25s left if no run solves early",
        "  k5-H3-s0: step 7 of 1000",
    ]  # a point alone: no count of members
    shown.close()


def test_a_terminal_gets_bars_a_file_lines_and_json_nothing():
    for stream, bars, mode in (
        (Terminal(), True, "bars"),
        (io.StringIO(), True, "lines"),
        (Terminal(), False, "lines"),
    ):  # torchrun's ranks: lines
        shown = SweepProgress.on(stream, jobs(), 6, 1, bars=bars)
        shown.close()
        assert shown.mode == mode
    terminal = Terminal()
    quiet = SweepProgress.on(terminal, jobs(), 6, 1, enabled=False)
    assert quiet.mode is None
    quiet.update(0, 5, 4)
    quiet.point_done(True)
    quiet.tick()
    quiet.close()
    assert terminal.getvalue() == ""


def test_bars_show_each_job_its_steps_and_members_and_the_sweep_its_points():
    clock, terminal = Clock(), Terminal()
    shown = SweepProgress(
        jobs(), points=6, workers=1, stream=terminal, mode="bars", clock=clock, label="[rank 1] "
    )
    shown.update(0, 0, 4)
    clock.now += 10
    shown.update(0, 250, 3)
    shown.point_done(solved=True)
    shown.tick()
    drawn = terminal.getvalue()
    assert "[rank 1]   H3 x4 (k 1-2): 250/1000 steps, 3 of 4 training |" in drawn, drawn
    assert "[rank 1] sweep: 1/6 points |" in drawn and "1 solved, about " in drawn, drawn
    shown.write("k=1 H=3 seed=0: solved at step 40", file=terminal)
    shown.job_done(0)
    shown.close()
    assert "k=1 H=3 seed=0: solved at step 40\n" in terminal.getvalue()


def test_a_report_after_its_job_ended_is_dropped():
    shown = SweepProgress(jobs(), 6, 1, io.StringIO(), "lines")
    shown.update(1, 5, 1)
    shown.job_done(1)
    shown.update(1, 9, 1)  # a worker's report still in the queue
    assert shown.jobs[1].step == 5 and not shown.jobs[1].running


def test_reports_are_passed_on_at_most_every_interval_and_when_members_leave():
    clock, sent = Clock(), []
    report = Throttled(lambda step, active: sent.append((step, active)), every=0.5, clock=clock)
    for step in range(1, 11):  # ten steps, 1/8 s each
        report(step, 4)
        clock.now += 0.125
    report(11, 3)  # a member left: at once
    report(12, 3)
    assert sent == [(1, 4), (5, 4), (9, 4), (11, 3)]
