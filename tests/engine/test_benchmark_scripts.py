"""The GPU benchmarks' CPU smoke paths (`--tiny`): the scripts run end to end on a tiny model and report what they
measure, so a device call is not spent finding that one broke."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_script(name: str, *args: str, tmp_path: Path) -> dict:
    out = tmp_path / f"{name}.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / name), "--tiny", *args, "--out", str(out)],
        check=True, capture_output=True, env=env, timeout=300,
    )  # fmt: skip
    return json.loads(out.read_text())


def test_oom_recovery_reports_the_failed_request_and_the_next_one(tmp_path):
    report = run_script("oom_recovery.py", tmp_path=tmp_path)

    assert report["too_large"]["outcome"] == "out_of_memory"
    assert report["next"]["outcome"] == "succeeded"
    assert report["recovered"] is True


def test_profile_step_splits_each_step_into_its_forwards_and_the_scheduler(tmp_path):
    report = run_script(
        "profile_step.py", "--speed", "exact", "--steps", "3", "--profile-steps", "1", tmp_path=tmp_path
    )

    assert [step["step"] for step in report["steps"]] == [1, 2, 3]
    for step in report["steps"]:
        assert len(step["forward_gpu_s"]) == 2  # classifier-free guidance: two forwards a step
        assert step["scheduler_cpu_s"] > 0
    assert report["profile"]["cpu_self_top"]
