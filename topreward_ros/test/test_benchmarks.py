"""Each benchmark script runs in its smallest configuration with the tiny model, so that none of them rots.

Asserts the output's keys, the work against the limit and the exactness figure; never a timing.
"""
from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
TOL = 1e-4

pytestmark = pytest.mark.skipif(not BENCHMARKS.is_dir(), reason="benchmarks/ is not part of this checkout")


def run_script(name: str, out: Path, *args: str) -> dict:
    """The script's main() in this process (saves a torch import per script); bench_node starts its own node."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        module = importlib.import_module(name.removesuffix(".py"))
        module.main(["--json", str(out), *args])
    finally:
        sys.path.remove(str(BENCHMARKS))
    result = json.loads(out.read_text())
    assert {"date", "nproc", "cpu", "load_avg"} <= result["machine"].keys()
    return result


def test_bench_streaming(tiny_model_path, tmp_path):
    result = run_script("bench_streaming.py", tmp_path / "s.json", "--quick", "--model", str(tiny_model_path),
                        "--lengths", "3", "4")
    assert list(result["per_T"]) == ["3", "4"]
    for row in result["per_T"].values():
        assert {"tokens_per_new_frame", "tokens_per_new_frame_limit", "forward_passes_per_prefix", "speedup",
                "max_abs_diff", "vision_frames_per_new_frame", "step_ms_median", "total_s", "recompute"} <= row.keys()
        assert row["max_abs_diff"] < TOL
        assert row["tokens_per_new_frame"] == row["tokens_per_new_frame_limit"]
        assert row["forward_passes_per_prefix"] == 1.0
        assert row["vision_frames_per_new_frame"] == 2.0  # a pair or a self-pair per new frame
        assert row["recompute"]["tokens_per_new_frame"] > row["tokens_per_new_frame"]


def test_bench_curve(tiny_model_path, tmp_path):
    result = run_script("bench_curve.py", tmp_path / "c.json", "--model", str(tiny_model_path),
                        "--raw-frames", "12", "--sample-fps", "2", "30", "--repeat", "2", "--eval-episodes", "3")
    rows = result["rows"]
    assert result["machine"]["malloc_keeps_freed_memory"] is sys.platform.startswith("linux")  # as the commands
    assert [(r["raw_frames"], r["sample_fps"], r["sampled_frames"]) for r in rows] == [(12, 2.0, 1), (12, 30.0, 12)]
    assert rows[1]["cached_tokens"] < rows[1]["uncached_tokens"]
    for row in rows:
        assert {"cached_s", "packed_s", "cached_cold_s", "packed_cold_s", "uncached_s", "packed_speedup",
                "cached_llm_s", "packed_llm_s", "cached_peak_mb", "packed_peak_mb", "distinct_prefixes",
                "limit_tokens"} <= row.keys()
        assert len(row["cached_runs_s"]) == len(row["packed_runs_s"]) == 2
        assert row["cached_cold_s"] == row["cached_runs_s"][0] and row["packed_cold_s"] == row["packed_runs_s"][0]
        assert row["max_abs_diff"] < TOL and row["packed_vs_cached_max_abs_diff"] < TOL
        assert row["cached_tokens"] == row["limit_tokens"] <= row["uncached_tokens"]
        assert row["cached_passes"] == row["prefixes"] == 12  # linspace(1, 12, 12): one pass each
        assert row["packed_passes"] == 1  # the whole curve: one pass
    # At 2 fps every reference prefix is the same one sampled frame: packed scores it once.
    assert rows[0]["packed_tokens"] < rows[0]["cached_tokens"] and rows[1]["packed_tokens"] == rows[1]["limit_tokens"]
    evaluation = result["eval"]
    ways = evaluation["ways"]
    assert evaluation["episodes"] == 3 and evaluation["max_abs_diff"] < TOL
    assert ways["one_at_a_time_cached"]["passes"] > ways["one_at_a_time_packed"]["passes"] >= \
        ways["batched_8"]["passes"] >= 1
    assert all(w["episodes_per_min"] > 0 and "peak_mb" in w for w in ways.values())


def test_bench_bf16(tiny_model_path, tmp_path):
    result = run_script("bench_bf16.py", tmp_path / "b.json", "--model", str(tiny_model_path), "--quick")
    rows = result["rows"]
    assert [r["prefix"] for r in rows] == [1, 2, 3, 4, 5]  # 64 frames at 2 fps: 5 sampled, every one a prefix
    for r in rows:
        # bf16 against fp32 differs (rounding), and every figure is the difference of the two values it names.
        assert r["full_vs_fp32"] == r["bf16_full"] - r["fp32_full"] != 0.0
        assert r["packed_vs_bf16_full"] == r["bf16_packed"] - r["bf16_full"]
        assert abs(r["streamed_vs_bf16_full"]) < 0.1 and abs(r["packed_vs_bf16_full"]) < 0.1
    assert result["where"]["pairs"] == 2 and result["where"]["keys"].keys() == {"first_layer", "last_layer"}


def test_bench_gpu_script_runs_on_cpu(tiny_model_path, tmp_path):
    result = run_script("bench_gpu.py", tmp_path / "g.json", "--device", "cpu", "--dtype", "float32",
                        "--models", str(tiny_model_path), "--lengths", "4", "--raw-frames", "8", "--eval-episodes", "2")
    (model,) = result["models"].values()
    assert {"4"} == model["streaming"].keys()
    assert all(r["forward_passes_per_prefix"] == 1.0 and "robots_at_2fps" in r for r in model["streaming"].values())
    assert [r["max_abs_diff"] < TOL for r in model["curve"]] == [True, True]
    assert all(r["packed_passes"] >= 1 for r in model["curve"])
    assert model["eval"]["episodes"] == 2 and model["eval"]["max_abs_diff"] < TOL


def test_bench_node(tiny_model_path, tmp_path):
    result = run_script("bench_node.py", tmp_path / "n.json", "--duration", "3", "--runs", "rgb8:1",
                        "--model", str(tiny_model_path))
    (run,) = result["runs"]
    assert {"callback_ms_p50", "callback_ms_p99", "sampled_callback_ms_p50", "skipped_callback_ms_p50",
            "received_per_camera", "published_per_camera", "rejected", "latency_ms_p50", "latency_ms_p99",
            "rss_mb_start", "rss_mb_quarter", "rss_mb_end", "threads_end", "progress_hz"} <= run.keys()
    assert run["published_per_camera"] > 0 and run["received_per_camera"][0] > 0
    assert run["sampled_frames"] > 0 and run["progress_messages"] > 0
    assert not run["traceback_in_log"]


def test_bench_fleet(tiny_model_path, tmp_path):
    result = run_script("bench_fleet.py", tmp_path / "f.json", "--model", str(tiny_model_path),
                        "--robots", "1", "2", "--frames", "3")
    assert list(result["per_N"]) == ["1", "2"] and result["rounds"] == 3
    for n, row in ((int(k), v) for k, v in result["per_N"].items()):
        assert {"max_abs_diff", "kv_bytes_per_robot", "speedup", "memory", "batched", "unbatched"} <= row.keys()
        assert row["max_abs_diff"] < TOL
        assert row["prefixes"] == 3 * n
        for mode in ("batched", "unbatched"):
            assert {"prefixes_per_s", "prefixes_per_s_per_robot", "round_ms_median", "total_s"} <= row[mode].keys()
        assert row["batched"]["passes_per_round"] == 1.0  # all N robots in one forward pass
        assert row["unbatched"]["passes_per_round"] == n
        assert row["unbatched"]["slots_per_token"] == 1.0 <= row["batched"]["slots_per_token"]
        mem = row["memory"]
        assert mem["kv_mb_per_robot"] > 0 and mem["model_mb"] > 0 and mem["rss_mb_after_load"] > 0
        assert mem["one_process_mb"] == pytest.approx(mem["model_mb"] + n * mem["kv_mb_per_robot"])
        assert mem["separate_nodes_mb"] == pytest.approx(n * (mem["model_mb"] + mem["kv_mb_per_robot"]))


def test_bench_conversion(tmp_path):
    result = run_script("bench_conversion.py", tmp_path / "v.json", "--repeats", "2")
    assert result["repeats"] == 2 and result["jpeg_kb"] > 0
    assert {"jpeg_decode", "resize_to_frame", "rgb8_view_to_frame", "jpeg_view_to_frame",
            "jpeg_3_views_sequential", "jpeg_3_views_parallel"} <= result["median_ms"].keys()
    assert all(ms > 0 for ms in result["median_ms"].values())


def test_bench_debug_image(tmp_path):
    result = run_script("bench_debug_image.py", tmp_path / "d.json", "--quick")
    cases = result["cases"]
    assert {"without_subscriber", "one_camera_256x256", "three_cameras_256x768"} == cases.keys()
    assert all(0 < row["p50_ms"] <= row["p99_ms"] for row in cases.values())
