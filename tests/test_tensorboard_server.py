"""A real TensorBoard server, on 127.0.0.1, serves what was trained: the curve, and an HParams
table with one row per run, the settings that differ first."""

import json
import time
import urllib.request

import pytest

from browser import tensorboard
from echo_rnn.engine.train import train
from helpers import scalar_series, small_config


def fetch(url, body=None, until=lambda _: True, timeout=60):
    """GET (or POST ``body`` as JSON) until the answer satisfies ``until``; the last answer."""
    deadline, answer = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        try:
            data = None if body is None else json.dumps(body).encode()
            req = urllib.request.Request(
                url, data=data, headers={"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(req, timeout=5) as resp:
                answer = json.loads(resp.read())
            if until(answer):
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.5)
    return answer


@pytest.mark.slow  # seconds: the quick tier stays under a minute
def test_tensorboard_server_serves_the_trained_curve(tmp_path):
    run = train(small_config(tmp_path, run_name="served", steps=30), verbose=False)
    want = scalar_series(run.run_dir, "train loss")
    assert len(want) == 30 // 5  # a point every log_every steps
    with tensorboard(tmp_path / "runs", "--load_fast", "false") as url:
        served = fetch(
            f"{url}/data/plugin/scalars/scalars?run=served&tag=loss%2Ftrain",
            until=lambda got: len(got) == len(want),
        )
    assert served is not None, "no training loss served within 60 s"
    # TensorBoard serves [wall_time, step, value]; values are float32 in the events
    assert [(s, v) for _, s, v in served] == want


@pytest.mark.slow  # seconds: the quick tier stays under a minute
def test_hparams_one_row_per_run_and_what_differs_first(tmp_path):
    # Before: trials were named after the run directory alone, so the same point of two
    # sweeps was one row averaging both runs' metrics; and the columns TensorBoard shows
    # first were backend, batch_size, bias, compare_every, cuda_graph, whatever was swept.
    logdir = tmp_path / "runs"
    for sweep, bias in (("plain", False), ("biased", True)):
        for k in (1, 2):  # the biased runs solve (at a low bar), the others do not
            # the autograd kernel's streams, on which the biased runs solve after training
            train(
                small_config(
                    tmp_path,
                    logdir=str(logdir / sweep),
                    run_name=f"k{k}-H4-s0",
                    echo_step=k,
                    bias=bias,
                    steps=10,
                    backend="autograd",
                    target_accuracy=0.5 if bias else 1.0,
                ),
                verbose=False,
            )
    with tensorboard(logdir) as url:  # its default loader, as a person gets it
        groups = fetch(
            f"{url}/data/plugin/hparams/session_groups",
            {
                "experimentName": "",
                "startIndex": 0,
                "sliceSize": 100,
                "colParams": [],
                "allowedStatuses": [
                    "STATUS_UNKNOWN",
                    "STATUS_SUCCESS",
                    "STATUS_FAILURE",
                    "STATUS_RUNNING",
                ],
            },
            until=lambda got: len(got.get("sessionGroups", [])) == 4,
        )
        experiment = fetch(f"{url}/data/plugin/hparams/experiment", {"experimentName": ""})
    names = sorted(g["name"] for g in groups["sessionGroups"])
    assert names == ["biased/k1-H4-s0", "biased/k2-H4-s0", "plain/k1-H4-s0", "plain/k2-H4-s0"]
    for g in groups["sessionGroups"]:
        assert len(g["sessions"]) == 1  # its own row, nobody else's metrics averaged in
    hparams = [h["name"] for h in experiment["hparamInfos"]]
    assert hparams[:2] == ["bias", "echo_step"]  # the settings that differ, first
    assert "logdir" not in hparams and "run_name" not in hparams
    metrics = [(m["name"].get("group", ""), m["name"]["tag"]) for m in experiment["metricInfos"]]
    # the first five are what TensorBoard shows without a click
    assert metrics[:5] == [
        ("", "accuracy/val"),
        ("", "loss/train"),
        ("", "loss/val"),
        ("", "solved"),
        ("", "solved_step"),
    ]
    # every run has a value for every metric: the parallel-coordinates view leaves out a
    # run that lacks one it shows (before: an unsolved run had no solved_step)
    for g in groups["sessionGroups"]:
        have = {(v["name"].get("group", ""), v["name"]["tag"]) for v in g["metricValues"]}
        assert have == set(metrics), (g["name"], set(metrics) - have)
    value = {
        (g["name"], v["name"]["tag"]): v["value"]
        for g in groups["sessionGroups"]
        for v in g["metricValues"]
    }
    # unsolved: solved 0, and the steps it ran
    assert value["plain/k1-H4-s0", "solved"] == 0 and value["plain/k1-H4-s0", "solved_step"] == 10
    assert value["biased/k1-H4-s0", "solved"] == 1
