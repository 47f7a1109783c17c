"""The CUDA paths, run on a CPU through stubs: a stubbed ``torch.cuda`` (monkeypatched functions that
record what was asked of them) and a fake ``pynvml`` module (NVML's calls with known answers).

What each test stands for (issue 15's items, issue 23's list): CUDA-event timing on the case's own
GPU (``cuda:N``), the allocator and NVML peaks of the memory pass, energy / SM clock / throttling
read around the timed loop, NVML per-process memory inside a container, calibration that leaves
nothing on the GPU, the GPU table's anchored names, one copy of the CUDA attention rules, the
plan's CUDA context measured per trial, compare refusing two timers, the report's ``auto`` line,
and ``bench/gpu_check.sh``'s refusal and time limits. What only a GPU can show is in
``bench/gpu_check.sh``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from bench.core.cases import Case, why_skip
from bench.core.measure import Settings
from bench.plan.budget import Budget
from bench.plan.search import Trial, search_max_batch
from bench.runs.schema import empty_row
from bench.trackers.device import DeviceFacts
from bench.trackers.nvml import NVML, MemorySampler
from bench.units import GIB, MIB

REPO = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
FAST = Settings(warmup=1, min_iters=3, max_iters=3, min_time_s=0.0, memory_iters=2)
H200 = DeviceFacts(type="cuda", name="NVIDIA H200", index=1, capability="9.0", total_memory_mib=143771)


# ------------------------------------------------------------------------------------- stubs


class FakeCuda:
    """What the stubbed ``torch.cuda`` was asked (``log``) and answers (allocator figures, the clock)."""

    def __init__(self) -> None:
        self.log: list = []
        self.current = 0            # the current CUDA device
        self.clock_ms = 0.0         # what an event records
        self.capability = (9, 0)    # what cuda:0 (the current device) reports
        self.allocated = 300 * MIB
        self.reserved = 512 * MIB
        self.reserved_now = 600 * MIB
        self.free, self.total = 100 * GIB, 141 * GIB


@pytest.fixture
def cuda(monkeypatch) -> FakeCuda:
    fake = FakeCuda()

    class Device:  # torch.cuda.device(...): makes a device current for a block
        def __init__(self, device) -> None:
            self.index = device.index if isinstance(device, torch.device) else int(device)

        def __enter__(self):
            self.previous, fake.current = fake.current, self.index
            fake.log.append(("device", self.index))

        def __exit__(self, *exc):
            fake.current = self.previous

    class Event:
        def __init__(self, enable_timing: bool = False) -> None:
            self.stream, self.at = None, None

        def record(self, stream=None):
            self.stream, self.at = stream, fake.clock_ms

        def elapsed_time(self, end) -> float:
            return end.at - self.at

    def index_of(device=None) -> int:
        if device is None:
            return fake.current
        return device.index if isinstance(device, torch.device) else int(device)

    c = torch.cuda
    monkeypatch.setattr(c, "is_available", lambda: True)
    monkeypatch.setattr(c, "device", Device)
    monkeypatch.setattr(c, "Event", Event)
    monkeypatch.setattr(c, "current_device", lambda: fake.current)
    monkeypatch.setattr(c, "current_stream", lambda device=None: ("stream of cuda", index_of(device)))
    monkeypatch.setattr(c, "synchronize", lambda device=None: fake.log.append(("synchronize", index_of(device))))
    monkeypatch.setattr(c, "empty_cache", lambda: fake.log.append(("empty_cache",)))
    monkeypatch.setattr(c, "reset_peak_memory_stats", lambda device=None: fake.log.append(("reset_peak", index_of(device))))
    monkeypatch.setattr(c, "max_memory_allocated", lambda device=None: fake.allocated)
    monkeypatch.setattr(c, "max_memory_reserved", lambda device=None: fake.reserved)
    monkeypatch.setattr(c, "memory_reserved", lambda device=None: fake.reserved_now)
    monkeypatch.setattr(c, "mem_get_info", lambda device=None: (fake.free, fake.total))
    monkeypatch.setattr(c, "get_device_name", lambda device=None: "NVIDIA H200")
    monkeypatch.setattr(c, "get_device_capability", lambda device=None: fake.capability if index_of(device) == 0 else (8, 0))
    monkeypatch.setattr(c, "get_device_properties", lambda device=None: SimpleNamespace(
        name="NVIDIA H200", total_memory=fake.total, major=9, minor=0, pci_domain_id=0, pci_bus_id=index_of(device) + 0x18,
        pci_device_id=0))
    return fake


class FakePynvml:
    """The few pynvml calls the trackers make, with answers a test sets; calls that matter go to ``log``."""

    NVML_CLOCK_SM = 1
    NVML_PERF_POLICY_POWER, NVML_PERF_POLICY_THERMAL, NVML_PERF_POLICY_SYNC_BOOST = 0, 1, 2
    NVML_PERF_POLICY_BOARD_LIMIT, NVML_PERF_POLICY_RELIABILITY = 3, 5
    NVML_FI_DEV_CLOCKS_EVENT_REASON_SW_THERM_SLOWDOWN = 269
    NVML_FI_DEV_CLOCKS_EVENT_REASON_HW_THERM_SLOWDOWN = 270
    NVML_FI_DEV_CLOCKS_EVENT_REASON_HW_POWER_BRAKE_SLOWDOWN = 271
    nvmlClocksEventReasonSwPowerCap, nvmlClocksEventReasonHwSlowdown, nvmlClocksEventReasonSyncBoost = 0x4, 0x8, 0x10
    nvmlClocksEventReasonSwThermalSlowdown, nvmlClocksEventReasonHwThermalSlowdown = 0x20, 0x40
    nvmlClocksEventReasonHwPowerBrakeSlowdown = 0x80

    def __init__(self, log: list) -> None:
        self.log = log
        self.violation_ns = {0: 10**9, 1: 0, 2: 0, 3: 0, 5: 0}
        self.fields = {269: (0, 0), 270: (0, 0), 271: (3, 0)}  # (nvmlReturn, value): 3 = not supported
        self.energy_mj = 5_000_000
        self.clock_mhz = 1980
        self.reasons_mask = 0
        self.procs: object = []
        self.used = 20_000 * MIB
        self.handles: list = []

    def nvmlInit(self):
        pass

    def nvmlSystemGetDriverVersion(self):
        return "580.159.03"

    def nvmlDeviceGetHandleByPciBusId(self, bus_id):
        self.handles.append(bus_id)
        return ("handle", bus_id)

    def nvmlDeviceGetHandleByIndex(self, index):
        return ("handle", index)

    def nvmlDeviceGetViolationStatus(self, handle, policy):
        self.log.append(("nvml", "violation"))
        return SimpleNamespace(referenceTime=0, violationTime=self.violation_ns[policy])

    def nvmlDeviceGetFieldValues(self, handle, ids):
        return [SimpleNamespace(fieldId=i, nvmlReturn=self.fields[i][0], value=SimpleNamespace(ullVal=self.fields[i][1]))
                for i in ids]

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        self.log.append(("nvml", "energy"))
        return self.energy_mj

    def nvmlDeviceGetClockInfo(self, handle, kind):
        self.log.append(("nvml", "clock"))
        return self.clock_mhz

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle):
        self.log.append(("nvml", "reasons"))
        return self.reasons_mask

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        if isinstance(self.procs, Exception):
            raise self.procs
        return list(self.procs)

    def nvmlDeviceGetMemoryInfo(self, handle):
        return SimpleNamespace(used=self.used, total=141 * GIB, free=141 * GIB - self.used)


@pytest.fixture
def nvml(monkeypatch, cuda) -> tuple[NVML, FakePynvml]:
    """A real :class:`NVML` over the fake module, installed as the process's NVML session."""
    fake = FakePynvml(cuda.log)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    session = NVML()
    assert session.available
    monkeypatch.setattr(NVML, "_instance", session)
    return session, fake


def proc(pid: int, mib: float) -> SimpleNamespace:
    return SimpleNamespace(pid=pid, usedGpuMemory=int(mib * MIB))


# ------------------------------------------------------------------ CUDA-event timing, cuda:N (item 4)


def test_cuda_events_time_each_step_on_the_cases_own_gpu(cuda):
    from bench.trackers.latency import time_steps

    seen = []

    def step():
        seen.append(cuda.current)
        cuda.clock_ms += 2.5  # the GPU time of one step, as the events see it

    samples, timer = time_steps(step, torch.device("cuda:1"), 4)
    assert timer == "cuda-events"
    assert samples == pytest.approx([0.0025] * 4)  # elapsed_time is ms; samples are seconds
    assert seen == [1, 1, 1, 1], "cuda:1 is the current device while its steps run"
    assert ("synchronize", 1) in cuda.log and ("synchronize", 0) not in cuda.log
    assert cuda.current == 0, "the previous device is current again afterwards"


def test_events_are_recorded_on_the_stream_of_the_cases_gpu(cuda, monkeypatch):
    from bench.trackers import latency

    events = []
    real = torch.cuda.Event

    def event(enable_timing=False):
        made = real(enable_timing)
        events.append(made)
        return made

    monkeypatch.setattr(torch.cuda, "Event", event)
    latency.time_steps(lambda: None, torch.device("cuda:3"), 2)
    assert len(events) == 4 and all(e.stream == ("stream of cuda", 3) for e in events)


def test_a_case_is_measured_with_its_gpu_current(monkeypatch):
    """measure_case enters the case's device for the whole case (build, warm-up, loop, memory pass)."""
    from bench.core import measure
    from bench.trackers.device import device_facts

    entered = []

    class Scope:
        def __init__(self, device):
            entered.append(device)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(measure, "cuda_scope", Scope)
    case = Case(family="cnn", preset="tiny", size="201x201", attention="none", mode="infer", batch=1)
    m = measure.measure_case(case, CPU, device_facts(CPU), FAST)
    assert m.row["status"] == "ok" and entered == [CPU]


def test_cuda_scope_makes_the_device_current_and_is_nothing_on_a_cpu(cuda):
    from bench.trackers.device import cuda_scope

    with cuda_scope(torch.device("cuda:2")):
        assert cuda.current == 2
    assert cuda.current == 0
    with cuda_scope(CPU):
        assert cuda.current == 0


def test_attention_rules_read_the_cases_gpu_not_cuda0(cuda):
    """cuda:0 is an H100 (9.0) here, the case runs on a T4 (7.5): the T4's rules apply."""
    from ae_models.attention import _capability, why_unsupported

    cuda.capability = (9, 0)
    assert why_unsupported("flash", "cuda", torch.bfloat16, 64) is None  # no capability given: the current device's
    t4 = why_unsupported("flash", "cuda", torch.bfloat16, 64, (7, 5))
    assert t4 is not None and "7.5" in t4
    facts = DeviceFacts(type="cuda", name="Tesla T4", index=1, capability="7.5")
    reason = why_skip(Case(attention="flash", precision="amp-bf16", mode="train"), facts)
    assert reason is not None and "7.5" in reason
    assert why_skip(Case(attention="flash", precision="amp-bf16", mode="train"), H200) is None
    _capability.cache_clear()
    assert _capability(1) == (8, 0) and _capability(0) == (9, 0)  # per tensor device index, as the stub answers
    _capability.cache_clear()


# ------------------------------------------------------------------------ one copy of the CUDA rules


def test_the_planners_target_card_asks_the_model_packages_rules(monkeypatch):
    import ae_models.attention as attention
    from bench.plan.budget import TARGET_CAPABILITY, cuda_target_skip

    asked = []
    real = attention.why_unsupported

    def spy(*args):
        asked.append(args)
        return real(*args)

    monkeypatch.setattr(attention, "why_unsupported", spy)
    assert "fp16 or bf16" in cuda_target_skip(Case(attention="flash", precision="fp32"))
    assert asked == [("flash", "cuda", torch.float32, 64, TARGET_CAPABILITY)]
    assert TARGET_CAPABILITY == (8, 9)


@pytest.mark.parametrize("attention", ["flash", "mem-efficient", "cudnn", "math", "eager", "auto"])
@pytest.mark.parametrize("precision", ["fp32", "tf32", "amp-fp16", "amp-bf16", "fp16", "bf16"])
def test_the_planners_rules_and_the_harness_rules_agree_for_an_ada_card(attention, precision):
    from bench.plan.budget import cuda_target_skip

    ada = DeviceFacts(type="cuda", name="NVIDIA GeForce RTX 4060", capability="8.9")
    case = Case(attention=attention, precision=precision, mode="train")
    assert cuda_target_skip(case) == why_skip(case, ada)


def test_no_second_copy_of_the_cuda_attention_rules():
    """The rules' wording lives in ae_models/attention.py alone; bench asks it."""
    phrases = ("needs fp16 or bf16", "needs compute capability", "divisible by 8 and at most 256")
    holders = sorted(str(p.relative_to(REPO)) for p in [*REPO.glob("bench/**/*.py"), *REPO.glob("ae_models/*.py")]
                     if any(phrase in p.read_text() for phrase in phrases))
    assert holders == ["ae_models/attention.py"]


# ----------------------------------------------------------------------- the GPU table (item 5)


@pytest.mark.parametrize("name, entry", [
    ("NVIDIA GeForce RTX 4070", "NVIDIA GeForce RTX 4070"),
    ("NVIDIA GeForce RTX 4070 Ti", None),
    ("NVIDIA GeForce RTX 4070 SUPER", None),
    ("NVIDIA GeForce RTX 4070 Ti SUPER", None),
    ("NVIDIA GeForce RTX 4070 Laptop GPU", "NVIDIA GeForce RTX 4070 Laptop GPU"),
    ("NVIDIA GeForce RTX 4060 Ti", "NVIDIA GeForce RTX 4060 Ti"),
    ("NVIDIA GeForce RTX 4060 Laptop GPU", None),
    ("NVIDIA GeForce RTX 4090", "NVIDIA GeForce RTX 4090"),
    ("NVIDIA GeForce RTX 4090 Laptop GPU", None),
    ("NVIDIA GeForce RTX 4090 D", None),
    ("NVIDIA GeForce RTX 4080 SUPER", None),
    ("NVIDIA H100 80GB HBM3", "NVIDIA H100 SXM"),
    ("NVIDIA H100 PCIe", None),
    ("NVIDIA H100 NVL", None),
    ("NVIDIA H200", "NVIDIA H200"),
    ("NVIDIA H200 NVL", None),
    ("NVIDIA A100-SXM4-80GB", "NVIDIA A100 80GB"),
    ("NVIDIA A100-SXM4-40GB", None),
    ("NVIDIA A100 80GB PCIe", None),
    ("NVIDIA L4", "NVIDIA L4"),
    ("NVIDIA L40S", None),
])
def test_gpu_names_match_their_own_entry_only(name, entry):
    from bench.trackers.device import lookup_gpu

    found = lookup_gpu(name)
    assert (found["name"] if found else None) == entry


def test_every_table_entry_matches_its_own_name_and_no_other():
    from bench.trackers.device import gpu_table, lookup_gpu

    for entry in gpu_table():
        assert lookup_gpu(entry["name"]) is entry
        others = [g["name"] for g in gpu_table() if g is not entry and re.fullmatch(g["match"], entry["name"])]
        assert not others, f"{entry['name']} also matches {others}"


def test_an_unlisted_gpu_gets_a_measured_peak_that_says_so(monkeypatch):
    from bench.trackers import device

    monkeypatch.setattr(device, "measured_gemm_tflops", lambda kind, dtype: 700.0)
    monkeypatch.setattr(device, "measured_copy_gbs", lambda kind: 3000.0)
    peak = device.peak_for(DeviceFacts(type="cuda", name="NVIDIA H100 PCIe"), "amp-bf16")
    assert peak.tflops == 700.0 and peak.bandwidth_gbs == 3000.0
    assert peak.source.startswith("measured: bf16 GEMM") and "'NVIDIA H100 PCIe' is not in data/gpus.toml" in peak.source
    listed = device.peak_for(H200, "amp-bf16")
    assert listed.tflops == pytest.approx(989.4) and listed.source.startswith("table: NVIDIA H200")


# ------------------------------------------------------- allocator and NVML peaks: the memory pass


def test_the_memory_pass_resets_then_reads_the_allocator_and_nvmls_peaks(cuda, nvml):
    from bench.trackers.memory import memory_pass

    session, fake = nvml
    fake.procs = [proc(os.getpid(), 700)]
    used = iter(range(20_000, 20_000 + 10_000, 100))

    def step():
        fake.used = next(used) * MIB  # device memory rising while the steps run
        time.sleep(0.02)

    stats = memory_pass(step, torch.device("cuda:1"), iters=3, interval_s=0.001)
    assert cuda.log.index(("reset_peak", 1)) < cuda.log.index(("synchronize", 1), cuda.log.index(("reset_peak", 1)))
    assert stats.alloc_peak_mib == 300 and stats.reserved_peak_mib == 512
    assert stats.nvml_process_peak_mib == pytest.approx(700)
    assert stats.nvml_device_peak_mib >= 20_200  # the largest sample, not the first
    assert fake.handles and set(fake.handles) == {"00000000:19:00.0"}, "NVML's handle is cuda:1's, by PCI bus id"


# --------------------------------------------------- NVML per-process memory in a container (item 7)


def test_process_memory_matched_by_pid(nvml):
    session, fake = nvml
    fake.procs = [proc(123, 5000), proc(os.getpid(), 812)]
    assert session.process_used_mib(("handle", 0)) == pytest.approx(812)
    assert session.process_note == ""


def test_in_a_container_the_only_compute_process_is_this_one_and_that_is_said(nvml, capsys):
    session, fake = nvml
    fake.procs = [proc(4_000_321, 900)]  # a host PID: never os.getpid() inside the container
    assert session.process_used_mib(("handle", 0)) == pytest.approx(900)
    assert "4000321" in session.process_note and "taken as this one" in session.process_note
    assert "taken as this one" in capsys.readouterr().err
    session.process_used_mib(("handle", 0))
    assert capsys.readouterr().err == "", "said once, not once per sample"


@pytest.mark.parametrize("procs, why", [
    ([proc(11, 900), proc(12, 300), proc(13, 10)], "lists 3 compute processes, so none can be taken"),
    ([], "lists no compute process"),
    ([SimpleNamespace(pid=os.getpid(), usedGpuMemory=None)], "does not report per-process memory"),
    (RuntimeError("NVMLError_NotSupported"), "no process list"),
])
def test_an_empty_process_figure_says_why(nvml, procs, why):
    session, fake = nvml
    fake.procs = procs
    assert session.process_used_mib(("handle", 0)) is None
    assert session.process_note.startswith("per-process GPU memory empty") and why in session.process_note


def test_the_sampler_keeps_the_note_of_its_figure(cuda, nvml):
    session, fake = nvml
    fake.procs = [proc(4_000_321, 900)]
    with MemorySampler(cuda_index=0, interval_s=0.001) as sampler:
        time.sleep(0.01)
    assert sampler.process_peak_mib == pytest.approx(900) and "taken as this one" in sampler.process_note


# ----------------------------------------------------- energy, SM clock and throttling (item 6)


def test_throttle_counters_read_violations_and_the_clock_event_fields(nvml):
    session, fake = nvml
    fake.fields[269] = (0, 7)
    counters = session.throttle_counters(("handle", 0))
    assert counters["power cap"] == 10**9 and counters["thermal"] == 0 and counters["thermal (software)"] == 7
    assert "power brake" not in counters, "a field this board does not support is left out"


def test_throttling_is_the_counters_growth_across_the_loop_not_the_state_after_the_case(nvml):
    session, fake = nvml
    before = session.throttle_counters(("handle", 0))
    fake.violation_ns[0] += 12_500_000  # 12.5 ms at the power cap during the loop
    fake.reasons_mask = 0               # idle by the time anyone looks: the old reading said "not throttled"
    out = session.after_loop(("handle", 0), before)
    assert out == {"sm_clock_mhz": 1980, "throttled": True, "throttle_reasons": "power cap 12.5 ms"}


def test_a_loop_without_slowdown_is_not_throttled_whatever_the_state_after(nvml):
    session, fake = nvml
    before = session.throttle_counters(("handle", 0))
    fake.reasons_mask = fake.nvmlClocksEventReasonSwThermalSlowdown
    assert session.after_loop(("handle", 0), before) == {"sm_clock_mhz": 1980, "throttled": False, "throttle_reasons": ""}


def test_without_counters_the_reasons_right_after_the_loop_are_used(nvml, monkeypatch):
    session, fake = nvml
    monkeypatch.setattr(session, "throttle_counters", lambda handle: None)
    fake.reasons_mask = fake.nvmlClocksEventReasonSwPowerCap | fake.nvmlClocksEventReasonHwThermalSlowdown
    out = session.after_loop(("handle", 0), None)
    assert out["throttled"] is True and out["throttle_reasons"] == "power cap+thermal (hardware)"


def test_the_measurement_reads_nvml_around_the_timed_loop_before_anything_else_runs(cuda, nvml):
    """The CUDA branch of bench/core/measure.py through the stubs: energy, counters and clock around the
    loop (before the memory pass and FLOP count), then the memory pass's allocator and NVML peaks."""
    from bench.core import measure
    from bench.core.steps import prepare

    session, fake = nvml
    fake.procs = [proc(4_000_321, 1500)]
    log = cuda.log
    case = Case(family="transformer", preset="tiny", size="201x201", attention="eager", mode="infer", batch=2)
    scenario = prepare(case, CPU)  # the model runs on the CPU; every CUDA and NVML call goes to the stubs

    def loop(step, iters):
        log.append("loop start")
        for _ in range(iters):
            step()
        fake.violation_ns[1] += 3_000_000   # 3 ms of thermal slowdown during the loop
        fake.energy_mj += 6_000             # 6 J over the loop
        log.append("loop end")
        return [0.01] * iters, "cuda-events"

    row = empty_row()
    samples = measure._measure(scenario, case, torch.device("cuda:1"), H200, FAST, row, loop)
    assert len(samples) == 3
    start, end = log.index("loop start"), log.index("loop end")
    memory_pass = log.index(("reset_peak", 1))
    before = [e for e in log[:start] if e[0] == "nvml"]
    after = [e for e in log[end:memory_pass] if e[0] == "nvml"]
    assert ("nvml", "energy") in before and ("nvml", "violation") in before
    assert after[0] == ("nvml", "energy") and ("nvml", "clock") in after and ("nvml", "violation") in after
    assert not [e for e in log[memory_pass:] if e in (("nvml", "clock"), ("nvml", "violation"))], "nothing read after the case"
    assert row["energy_j_per_image"] == pytest.approx(6.0 / (3 * 2))
    assert row["sm_clock_mhz"] == 1980 and row["throttled"] is True and row["throttle_reasons"] == "thermal 3.0 ms"
    assert row["alloc_peak_mib"] == 300 and row["reserved_peak_mib"] == 512
    assert row["nvml_process_peak_mib"] == pytest.approx(1500)  # the container's only process
    assert row["nvml_device_peak_mib"] == pytest.approx(20_000)
    assert row["timer"] == "cuda-events" and row["peak_source"].startswith("table: NVIDIA H200")


# ----------------------------------------------------------- calibration leaves nothing (item 2)


def test_gpu_calibration_runs_in_a_child_so_the_sweep_never_holds_its_context(monkeypatch):
    from bench.trackers import calibration

    calls = []

    def run(argv, **kwargs):
        calls.append((argv, kwargs["env"]))
        return subprocess.CompletedProcess(argv, 0, stdout='{"gemm_ms": 2.0, "copy_ms": 0.5, "gemm_n": 4096, "copy_mib": 1024}\n')

    monkeypatch.setattr(calibration.subprocess, "run", run)
    monkeypatch.setattr(calibration, "gemm", lambda *a, **k: pytest.fail("the parent built GEMM operands"))
    monkeypatch.delenv(calibration._CHILD_ENV, raising=False)
    found = calibration.calibrate(torch.device("cuda:1"))
    assert found == {"gemm_ms": 2.0, "copy_ms": 0.5, "gemm_n": 4096, "copy_mib": 1024}
    (argv, env), = calls
    assert argv[1:] == ["-m", "bench.trackers.calibration", "cuda:1"] and env[calibration._CHILD_ENV] == "1"


def test_gpu_calibration_in_process_gives_its_buffers_back(cuda, monkeypatch):
    """Where the child fails: calibrated here, and the operands and copy buffers are freed and the cache emptied."""
    import weakref

    from bench.trackers import calibration

    monkeypatch.setattr(calibration, "_calibrate_in_child", lambda device: None)
    buffers = []

    class Buffer:
        pass

    def op(*args, **kwargs):
        held = Buffer()
        buffers.append(weakref.ref(held))
        return lambda: held

    monkeypatch.setattr(calibration, "gemm", op)
    monkeypatch.setattr(calibration, "copy", op)
    alive_at_empty_cache = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: alive_at_empty_cache.append([b() is not None for b in buffers]))
    found = calibration.calibrate(torch.device("cuda:0"))
    assert set(found) == {"gemm_ms", "copy_ms", "gemm_n", "copy_mib"} and found["gemm_n"] == 4096
    assert alive_at_empty_cache == [[False, False]], "both buffers freed before the cache is emptied, once"


def test_the_gpu_peak_micro_benchmarks_give_their_buffers_back(cuda, monkeypatch):
    from bench.trackers import calibration

    monkeypatch.setattr(calibration, "gemm", lambda *a, **k: (lambda: None))
    monkeypatch.setattr(calibration, "copy", lambda *a, **k: (lambda: None))
    try:
        calibration.measured_gemm_tflops("cuda", "bf16", 7)
        calibration.measured_copy_gbs("cuda", 3)
    finally:
        calibration.measured_gemm_tflops.cache_clear()
        calibration.measured_copy_gbs.cache_clear()
    assert cuda.log.count(("empty_cache",)) == 2


def test_the_calibration_child_answers_one_json_line():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "bench.trackers.calibration", "cpu"], capture_output=True, text=True,
                          timeout=120, cwd=REPO, env=env)
    assert done.returncode == 0, done.stderr
    assert {"gemm_ms", "copy_ms", "gemm_n", "copy_mib"} <= set(json.loads(done.stdout.strip().splitlines()[-1]))


# ----------------------------------------------- the plan's CUDA context, measured per trial (item 8)


def card_with_context(fixed_mib: float, per_image_mib: float, limit: float, context_mib, calls: list):
    """A card whose reserved peak is fixed + per_image x b, OOM past ``limit``; ``context_mib(b)``: the
    context the trial's steps leave (kernels that load lazily make it grow)."""
    def run(batch: int) -> Trial:
        calls.append(batch)
        reserved = (fixed_mib + per_image_mib * batch) * MIB
        status = "oom" if reserved > limit else "ok"
        return Trial(batch, status, min(reserved, limit), reserved * 0.9, context_bytes=context_mib(batch) * MIB,
                     context_source="measured with NVML")
    return run


def test_a_context_larger_than_the_first_estimate_shrinks_the_budget():
    budget = Budget(8 * GIB, display_reserve=256 * MIB, context_bytes=300 * MIB)
    result = search_max_batch(card_with_context(500, 60, budget.allocator_limit, lambda b: 800, []), budget, cap=4096)
    judged = Budget(8 * GIB, display_reserve=256 * MIB, context_bytes=800 * MIB)
    assert result.max_batch == int((judged.usable / MIB - 500) // 60)
    assert result.budget.context_bytes == 800 * MIB and "largest after any trial" in result.budget.context_source


def test_a_context_that_grows_late_moves_the_maximum_down_and_rejudges_earlier_trials():
    """cuDNN / bf16 cuBLASLt load in the trial of batch 112: 1500 MiB of context from then on. Batch 96 fit
    the first estimate (300 MiB) but not the card with 1500 MiB taken: the answer is 93, not 96."""
    budget = Budget(8 * GIB, display_reserve=256 * MIB, context_bytes=300 * MIB)
    calls: list = []
    grown = {"now": 300}

    def context(batch):
        if 97 <= batch <= 127:
            grown["now"] = 1500
        return grown["now"]

    result = search_max_batch(card_with_context(500, 60, budget.allocator_limit, context, calls), budget, cap=4096)
    judged = Budget(8 * GIB, display_reserve=256 * MIB, context_bytes=1500 * MIB)
    expected = int((judged.usable / MIB - 500) // 60)
    assert expected == 93 and result.max_batch == expected
    assert result.trial(96).status == "over-budget" and result.trial(93).status == "ok"
    assert result.budget.context_bytes == 1500 * MIB
    assert len(calls) == len(set(calls)), "no batch is tried twice"


def test_the_plan_row_reports_the_context_its_search_judged_with(monkeypatch):
    from bench.plan import planner as plan
    from bench.plan.budget import EMULATED, PlanEnv
    from bench.trackers.device import device_facts

    budget = Budget(8 * GIB, display_reserve=256 * MIB, context_bytes=300 * MIB, context_source="first estimate")
    card = card_with_context(500, 60, budget.allocator_limit, lambda b: 700, [])
    monkeypatch.setattr(plan, "cuda_trial", lambda case, device, batch: card(batch))
    monkeypatch.setattr(plan, "cuda_throughput", lambda case, device, batch: float(batch))
    env = PlanEnv(budget, "test card", CPU, device_facts(CPU), source=EMULATED)
    row, _ = plan.plan_case(Case(preset="tiny", attention="eager", mode="train"), env)
    assert row["context_mib"] == 700 and "largest after any trial" in row["context_source"]
    judged = Budget(8 * GIB, display_reserve=256 * MIB, context_bytes=700 * MIB)
    assert row["usable_mib"] == pytest.approx(judged.usable / MIB, abs=0.1)
    assert row["max_batch"] == int((judged.usable / MIB - 500) // 60)
    assert row["max_card_mib"] == pytest.approx(500 + 60 * row["max_batch"] + 700 + 256, abs=0.1)


def test_a_cuda_trial_takes_the_context_its_steps_left(cuda, monkeypatch):
    from bench.core.runner import Outcome
    from bench.core.steps import prepare
    from bench.plan import budget as budget_module
    from bench.plan import search

    monkeypatch.setattr(budget_module, "context_after_steps", lambda device: (1234 * MIB, "measured with NVML (stub)"))

    def run_case(case, device, body, skip=None):
        class Run:
            def prepare(self, variant):
                return prepare(variant, CPU)  # built on the CPU; the trial reads the stubbed CUDA figures
        body(Run())
        return Outcome("ok")

    monkeypatch.setattr(search, "run_case", run_case)
    trial = search.cuda_trial(Case(preset="tiny", attention="eager", mode="train", size="201x201"), torch.device("cuda:1"), 2)
    assert trial.status == "ok" and trial.reserved_bytes == 512 * MIB and trial.allocated_bytes == 300 * MIB
    assert trial.context_bytes == 1234 * MIB and trial.context_source == "measured with NVML (stub)"
    assert ("device", 1) in cuda.log, "the trial runs with its GPU current"


def test_the_context_is_used_memory_minus_the_allocators_reserve(cuda, nvml):
    from bench.plan.budget import context_after_steps

    session, fake = nvml
    fake.procs = [proc(os.getpid(), 1000)]
    found, how = context_after_steps(torch.device("cuda:0"))
    assert found == 400 * MIB and "NVML" in how  # 1000 MiB used by the process - 600 MiB reserved
    fake.procs = [proc(1, 10), proc(2, 10)]  # no per-process figure: the whole device's used memory
    found, how = context_after_steps(torch.device("cuda:0"))
    assert found == cuda.total - cuda.free - cuda.reserved_now and "cudaMemGetInfo" in how


# -------------------------------------------------------------- compare refuses two timers (item 3)


def write_run(folder: Path, timer: str, median: float = 5.0) -> Path:
    from bench.runs.writer import RunWriter

    device = {"type": "cuda", "name": "NVIDIA H200", "torch": "2.11.0+cu130", "slug": "nvidia-h200"}
    writer = RunWriter(folder, {"created": "2026-01-01T00:00:00+00:00", "commit": "abc1234", "matrix": "test",
                                "command": "test", "device": device, "calibration": {"gemm_ms": 2.0}})
    row = empty_row()
    row.update(case_key="key-a", case_id="a", status="ok", reason="", device="cuda", device_name=device["name"],
               torch=device["torch"], threads=16, timer=timer, median_ms=median)
    writer.append(row, [median / 1e3] * 30)
    return folder


def test_compare_refuses_two_timers_in_one_line(tmp_path, capsys):
    from bench.cli import main

    base = write_run(tmp_path / "pytest", "sync-perf-counter")
    cand = write_run(tmp_path / "cli", "cuda-events")
    assert main(["compare", str(base), str(cand)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "'sync-perf-counter' (baseline) vs 'cuda-events' (candidate)" in err and "--allow-different-timers" in err


def test_compare_with_two_timers_allowed_says_so(tmp_path, capsys):
    from bench.cli import main

    base = write_run(tmp_path / "pytest", "sync-perf-counter")
    cand = write_run(tmp_path / "cli", "cuda-events")
    assert main(["compare", str(base), str(cand), "--allow-different-timers"]) == 0
    assert "compared anyway (--allow-different-timers)" in capsys.readouterr().out


def test_compare_of_one_timer_has_no_timer_note(tmp_path, capsys):
    from bench.cli import main

    assert main(["compare", str(write_run(tmp_path / "a", "cuda-events")), str(write_run(tmp_path / "b", "cuda-events"))]) == 0
    out = capsys.readouterr().out
    assert "different timers" not in out and "did not record its timer" not in out


def test_compare_notes_a_run_that_did_not_record_its_timer(tmp_path, capsys):
    from bench.cli import main

    assert main(["compare", str(write_run(tmp_path / "a", "")), str(write_run(tmp_path / "b", "cuda-events"))]) == 0
    assert "baseline did not record its timer" in capsys.readouterr().out


# ------------------------------------------------------------------ the report's `auto` line


def test_the_report_says_what_auto_ran():
    from bench.report.build import _auto_notes

    ran = pd.DataFrame({"attention": ["auto", "auto", "flash"], "attention_ran": ["cudnn", "flash", "flash"], "cases": [12, 2, 5]})
    assert _auto_notes(ran) == ["`auto` (SDPA free to choose) ran cudnn in 12 case(s), flash in 2 case(s); "
                                "every `auto` figure in this report is that kernel's"]
    assert _auto_notes(ran[ran["attention"] != "auto"]) == []
    template = (REPO / "report_template.md").read_text()
    assert template.index("auto_notes") < template.index("## 1. What to run on"), "said at the top of the report"


# ------------------------------------------------------------------------- bench/gpu_check.sh


GPU_CHECK = REPO / "bench" / "gpu_check.sh"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal where torch sees no GPU")
def test_gpu_check_refuses_in_one_line_without_cuda(tmp_path):
    """Refused before any step: the interpreter is started once (the CUDA check), counted through a wrapper
    named by PYTHON, instead of a wall-clock bound that a busy machine breaks."""
    out, calls = tmp_path / "out", tmp_path / "calls.log"
    wrapper = tmp_path / "python-counted"
    wrapper.write_text(f'#!/bin/sh\necho "$@" >> "{calls}"\nexec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "GPU_CHECK_ALLOW_CPU"}
    env["PYTHON"] = str(wrapper)
    done = subprocess.run(["bash", str(GPU_CHECK), str(out)], cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    assert calls.read_text().splitlines() == ["-"], "one interpreter, for the check (its script on stdin), and no step"
    assert done.returncode == 2 and done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1 and "CUDA is not available" in done.stderr
    assert not out.exists(), "nothing made"


def test_gpu_check_steps_fit_the_machines_limits_and_name_real_commands():
    """Step limits under 8 minutes together (a GPU machine stops one command at 600 s); every command
    the script runs exists (the reorganisation moved modules under bench/<package>/)."""
    text = GPU_CHECK.read_text()
    limits = [int(m) for m in re.findall(r"^step [\w-]+ (\d+) ", text, re.M)]
    assert len(limits) >= 6 and sum(limits) < 480
    assert int(re.search(r"TOTAL_S=\$\{TOTAL_S:-(\d+)\}", text).group(1)) < 600
    for module in set(re.findall(r"from (bench(?:\.\w+)+) import", text)):
        assert (REPO / (module.replace(".", "/") + ".py")).is_file(), module
    commands = set(re.findall(r"-m bench (\w[\w-]*)", text))
    assert commands >= {"plan", "profile", "run", "compare"}
    from bench.cli import commands as table

    assert commands <= set(table())
    assert (REPO / "bench" / "test_speed.py").is_file()
    for needed in ("--benchmark-storage", "--ae-device", "--device", "--ae-batch"):
        assert needed in text
