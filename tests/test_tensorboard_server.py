"""A real TensorBoard server, on 127.0.0.1, serves the curve that was trained."""

import json
import re
import subprocess
import time
import urllib.request

import pytest

from echo_rnn.train import train
from helpers import python, scalar_series, small_config


def test_tensorboard_server_serves_the_trained_curve(tmp_path):
    run = train(small_config(tmp_path, run_name="served", steps=30), verbose=False)
    want = scalar_series(run.run_dir, "loss/train")
    assert len(want) == 30
    proc = python("-m", "tensorboard.main", "--logdir", tmp_path / "runs", "--host", "127.0.0.1",
                  "--port", "0", "--load_fast", "false", "--reload_interval", "1",
                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        port = None
        deadline = time.monotonic() + 60
        while port is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                pytest.fail(f"tensorboard exited with {proc.returncode}")
            m = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
            port = int(m.group(1)) if m else None
        assert port, "tensorboard did not report its address within 60 s"
        url = f"http://127.0.0.1:{port}/data/plugin/scalars/scalars?run=served&tag=loss/train"
        served = None
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=5) as resp:
                    served = json.loads(resp.read())
                if len(served) == len(want):
                    break
            except (OSError, ValueError):
                pass
            time.sleep(0.5)
        assert served is not None, "no loss/train series served within 60 s"
        # TensorBoard serves [wall_time, step, value]; values are float32 in the events
        assert [(s, v) for _, s, v in served] == want
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
