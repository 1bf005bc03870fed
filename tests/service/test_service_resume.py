"""A job interrupted mid-sampling by a server crash continues from its last saved step when
the server comes back, and its video is the one an uninterrupted run gives."""

from __future__ import annotations

import time

import numpy as np
from safetensors import safe_open

from kinemate.io import read_video


def test_sigkill_mid_sampling_resumes_from_the_saved_step(server, tiny_inputs, tmp_path):
    key = server.new_key("resume")
    client = server.client
    params = {"steps": "100", "watermark": "false"}  # the server's cap: long enough to kill
    res = client.submit(key, tiny_inputs["reference"].read_bytes(),
                        tiny_inputs["driving16"].read_bytes(), params=params)
    assert res.status == 201, res.body
    job_id = res.json()["id"]
    state = server.data_dir / "jobs" / job_id / "sampler-state.safetensors"

    def saved_step() -> int:
        try:
            with safe_open(str(state), framework="pt") as f:
                return int(f.metadata()["step"])
        except Exception:  # not written yet, or being replaced
            return -1

    deadline = time.monotonic() + 180
    while saved_step() < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    server.kill()
    killed_after = saved_step()
    assert 2 <= killed_after < 99  # died mid-sampling with a saved state

    server.restart()
    done = client.wait(key, job_id, timeout=240)
    assert done["state"] == "succeeded", (done, server.log())
    assert done["result"]["resumed_at_step"] >= killed_after + 1  # not from scratch
    assert not state.exists()
    (tmp_path / "resumed.mp4").write_bytes(
        client.get(f"/api/v1/jobs/{job_id}/result", key=key).body)

    again = client.submit(key, tiny_inputs["reference"].read_bytes(),
                          tiny_inputs["driving16"].read_bytes(), params=params).json()["id"]
    whole = client.wait(key, again, timeout=240)
    assert whole["state"] == "succeeded" and whole["result"]["resumed_at_step"] is None
    (tmp_path / "whole.mp4").write_bytes(client.get(f"/api/v1/jobs/{again}/result", key=key).body)
    assert np.array_equal(read_video(tmp_path / "resumed.mp4")[0],
                          read_video(tmp_path / "whole.mp4")[0])
