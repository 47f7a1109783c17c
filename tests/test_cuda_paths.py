"""The CUDA paths, run on a CPU through stubs: a stubbed ``torch.cuda`` (monkeypatched functions that
record what was asked of them) and a fake ``pynvml`` module (NVML's calls with known answers).

What each test stands for (issue 15's items, issue 23's list): CUDA-event timing on the case's own
GPU (``cuda:N``), the allocator and NVML peaks of the memory pass, energy / SM clock / throttling
read around the timed loop, NVML per-process memory inside a container, calibration that leaves
nothing on the GPU, the GPU table's anchored names, one copy of the CUDA attention rules, the
plan's CUDA context measured per trial, compare refusing two timers, the report's ``auto`` line; and
issue 34's: cuBLAS/cuDNN allocation failures as OOM (the planner's "does not fit"), peaks warmed up and
settled, NVML's fallback for a process it cannot name and the display measured on a desktop card, the
profile under ``cuda_scope``, and whose throughput picked an emulated plan's batch. ``bench/gpu_check.sh``
has its own tests (tests/test_gpu_check.py); what only a GPU can show is in that script.
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

    gpus, display = 1, 0  # GPUs NVML lists; whether the GPU drives a display (NVML_FEATURE_ENABLED = 1)

    def nvmlDeviceGetCount(self):
        return self.gpus

    def nvmlDeviceGetHandleByUUID(self, uuid):
        return ("handle", uuid)

    def nvmlDeviceGetDisplayActive(self, handle):
        return self.display


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
    fake.procs = [proc(1, 10), proc(2, 10)]  # no per-process figure: the device's used memory less what it held before
    session._baselines[0] = (3000.0, "stub")
    found, how = context_after_steps(torch.device("cuda:0"))
    assert found == cuda.total - cuda.free - 3000 * MIB - cuda.reserved_now and "3000 MiB in use before this process" in how
    session._baselines[0] = (None, "CUDA initialised first")  # nothing to take off: other processes count too
    found, how = context_after_steps(torch.device("cuda:0"))
    assert found == cuda.total - cuda.free - cuda.reserved_now and "other processes on the GPU count too" in how


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
    from bench.report.sections import _auto_notes

    ran = pd.DataFrame({"attention": ["auto", "auto", "flash"], "attention_ran": ["cudnn", "flash", "flash"], "cases": [12, 2, 5]})
    assert _auto_notes(ran) == ["`auto` (SDPA free to choose) ran cudnn in 12 case(s), flash in 2 case(s); "
                                "every `auto` figure in this report is that kernel's"]
    assert _auto_notes(ran[ran["attention"] != "auto"]) == []
    template = (REPO / "report_template.md").read_text()
    assert template.index("auto_notes") < template.index("## 1. What to run on"), "said at the top of the report"


# bench/gpu_check.sh: tests/test_gpu_check.py


# ------------------------------------------ out of memory, by type and by the CUDA libraries' words (issue 34)


CUBLAS_HANDLE = "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"
OOM_ERRORS = [
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 7.63 GiB total capacity)"),
    RuntimeError(CUBLAS_HANDLE),
    RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasLtMatmul( ltHandle, computeDesc.descriptor(), ...)`"),
    RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"),
    RuntimeError("cuDNN error: CUDNN_STATUS_NOT_ENOUGH_WORKSPACE"),
    RuntimeError("cuFFT error: CUFFT_ALLOC_FAILED"),
    RuntimeError("CUDA error: CUBLAS_STATUS_NOT_INITIALIZED when calling `cublasCreate(handle)`"),
    MemoryError(),
]


@pytest.mark.parametrize("err", OOM_ERRORS, ids=lambda e: f"{type(e).__name__}-{str(e)[:40]}")
def test_an_allocation_failure_is_an_oom_row(err):
    from bench.core.runner import OOM, failure

    assert failure(err).status == OOM


@pytest.mark.parametrize("text", ["CUDA error: CUBLAS_STATUS_EXECUTION_FAILED when calling `cublasSgemm( handle, ...)`",
                                  "cuDNN error: CUDNN_STATUS_BAD_PARAM", "CUDA error: an illegal memory access was encountered"])
def test_other_cuda_library_failures_stay_errors(text):
    from bench.core.runner import ERROR, failure

    assert failure(RuntimeError(text)).status == ERROR


@pytest.mark.parametrize("text", [CUBLAS_HANDLE, "cuDNN error: CUDNN_STATUS_ALLOC_FAILED"])
def test_the_planners_search_takes_a_library_allocation_failure_as_does_not_fit(cuda, monkeypatch, text):
    """Batches above 8 fail in cuBLAS/cuDNN's own allocation: the search's answer is 8, from real
    trials through the case runner (not an error that stops it)."""
    from bench.core import runner
    from bench.plan import budget as budget_module
    from bench.plan import search

    class Scenario:  # the case's step: fails like a full card above batch 8
        def __init__(self, batch: int) -> None:
            self.batch = batch

        def step(self):
            if self.batch > 8:
                raise RuntimeError(text)

        def close(self) -> None:
            pass

    monkeypatch.setattr(runner, "prepare", lambda case, device, seed=0: Scenario(case.batch))
    monkeypatch.setattr(budget_module, "context_after_steps", lambda device: (400 * MIB, "stub"))
    case = Case(preset="tiny", attention="eager", mode="train", size="201x201")
    budget = Budget(8 * GIB, display_reserve=256 * MIB, context_bytes=400 * MIB)
    result = search_max_batch(lambda b: search.cuda_trial(case, torch.device("cuda:0"), b), budget, cap=64)
    assert result.max_batch == 8
    assert {t.batch: t.status for t in result.trials}[16] == "oom" and text in result.trial(16).reason


# ------------------------------------------------------- peaks: warmed up, repeated until settled (issue 34)


class WarmingGemm:
    """A GEMM whose calls take ``ms[i]`` on a fake clock (cold first, then settling): what a peak is timed on."""

    def __init__(self, ms: list[float]) -> None:
        self.ms, self.calls, self.now = ms, 0, 0.0

    def perf_counter(self) -> float:
        return self.now

    def __call__(self):
        self.now += self.ms[min(self.calls, len(self.ms) - 1)] / 1e3
        self.calls += 1


@pytest.mark.parametrize("device", ["cpu", "cuda:0"])
def test_a_peak_is_taken_after_a_warm_up_once_it_has_settled(cuda, monkeypatch, device):
    """Cold calls of 10, 5, 3, 2, 1.5 and 1.2 ms before 1 ms a call: the peak is the 1 ms rate, on a CPU as on a
    GPU (the old best of 3 calls without warm-up read 3 ms: a third of the peak, and every MFU three times high)."""
    from bench.trackers import calibration

    gemm = WarmingGemm([10, 5, 3, 2, 1.5, 1.2, 1.0])
    monkeypatch.setattr(calibration, "time", SimpleNamespace(perf_counter=gemm.perf_counter))
    monkeypatch.setattr(calibration, "gemm", lambda n, device, dtype: gemm)
    found = calibration.gemm_peak(torch.device(device), "fp32", sizes=(1024,))
    assert found["tflops"] == pytest.approx(2 * 1024**3 / 1e-3 / 1e12)
    timed_ms = sorted(2 * 1024**3 / r / 1e12 * 1e3 for r in found["tflops_by_n"]["1024"])
    assert 10 not in [round(t, 6) for t in timed_ms], "the warm-up call is not timed"
    assert timed_ms[:calibration.SETTLE_WINDOW + 1] == pytest.approx([1.0] * (calibration.SETTLE_WINDOW + 1)), \
        "timed until the best no longer improves"
    assert found["repeats"] < calibration.PEAK_MAX_REPEATS


def test_a_peak_that_never_settles_stops_at_the_most_repetitions(monkeypatch):
    from bench.trackers import calibration

    gemm = WarmingGemm([100 / (1.5 ** i) for i in range(50)])  # each call 1.5x faster than the last
    monkeypatch.setattr(calibration, "time", SimpleNamespace(perf_counter=gemm.perf_counter))
    times = calibration.settled_times(gemm, CPU)
    assert len(times) == calibration.PEAK_MAX_REPEATS and gemm.calls == calibration.PEAK_MAX_REPEATS + 1


# --------------------------- NVML: a process it cannot name; a desktop card's display, measured (issue 34)


def test_an_unmatched_process_is_the_reserved_peak_plus_a_measured_context_and_says_so(cuda, nvml):
    """MIG / several containers: NVML lists two processes, neither this PID. The GPU held 3000 MiB before this
    process (display, others), 4000 MiB after its pass with 600 MiB reserved: context 400 MiB; the row's
    figure is the 512 MiB reserved peak + 400 MiB, and its source column says it is that fallback."""
    from bench.trackers.memory import memory_pass

    session, fake = nvml
    fake.used = 3000 * MIB
    assert session.record_baseline(0)[0] == 3000
    fake.used, fake.procs = 4000 * MIB, [proc(1, 10), proc(2, 10)]
    stats = memory_pass(lambda: None, torch.device("cuda:0"), iters=1)
    assert stats.nvml_process_peak_mib == pytest.approx(512 + (4000 - 3000 - 600))
    assert stats.nvml_process_source.startswith("fallback: allocator reserved peak + measured context 400 MiB")
    assert "2 compute processes" in stats.nvml_process_source


def test_a_matched_process_is_nvmls_own_figure(cuda, nvml):
    from bench.trackers.memory import memory_pass

    session, fake = nvml
    fake.procs = [proc(os.getpid(), 1000)]
    stats = memory_pass(lambda: None, torch.device("cuda:0"), iters=1)
    assert stats.nvml_process_peak_mib == 1000 and stats.nvml_process_source == "nvml: this process"


def test_without_a_baseline_from_before_cuda_the_figure_stays_empty_and_says_why(cuda, nvml, monkeypatch):
    from bench.trackers.memory import memory_pass

    session, fake = nvml
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    fake.procs = [proc(1, 10), proc(2, 10)]
    stats = memory_pass(lambda: None, torch.device("cuda:0"), iters=1)
    assert stats.nvml_process_peak_mib is None
    assert stats.nvml_process_source.startswith("empty:") and "CUDA was initialised in this process" in stats.nvml_process_source


def test_the_baseline_finds_the_gpu_through_cuda_visible_devices_without_torch(nvml, monkeypatch):
    session, fake = nvml
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-1234")
    assert session.record_baseline(0) == (fake.used / MIB, "NVML device memory in use before this process initialised "
                                                          "CUDA (CUDA_VISIBLE_DEVICES entry GPU-1234)")
    assert session.record_baseline(1)[0] is None, "no cuda:1 is visible"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    fake.gpus = 2  # two GPUs, CUDA's own order: which NVML device is cuda:2 is not known without CUDA
    assert session.record_baseline(2)[0] is None and "CUDA_DEVICE_ORDER=PCI_BUS_ID" in session.record_baseline(2)[1]


def plan_env_on(cuda, monkeypatch, total_gib: float):
    from bench.plan import budget as budget_module

    cuda.total = int(total_gib * GIB)
    monkeypatch.setattr(budget_module, "measure_context_bytes", lambda device: (400 * MIB, "measured (stub)"))
    facts = DeviceFacts(type="cuda", name="NVIDIA GeForce RTX 4060", index=0, capability="8.9", total_memory_mib=total_gib * 1024)
    return budget_module.make_env(torch.device("cuda:0"), facts, "8GiB", None)


def test_planned_on_a_desktop_card_its_displays_use_is_measured_not_assumed(cuda, nvml, monkeypatch):
    session, fake = nvml
    fake.used, fake.display = 700 * MIB, 1
    env = plan_env_on(cuda, monkeypatch, 8)
    assert env.source == "measured" and env.budget.display_reserve == 700 * MIB
    assert env.budget.display_source.startswith("measured: NVML device memory in use before this process")
    assert "this card drives a display" in env.budget.display_source
    assert "(measured: NVML" in "\n".join(env.budget.describe())


def test_emulated_on_a_larger_gpu_the_target_cards_display_stays_assumed(cuda, nvml, monkeypatch):
    session, fake = nvml
    fake.used, fake.display = 700 * MIB, 1
    env = plan_env_on(cuda, monkeypatch, 141)
    assert env.source == "emulated" and env.budget.display_reserve == 256 * MIB
    assert "target card" in env.budget.display_source


def test_a_profile_runs_with_its_gpu_current(cuda, monkeypatch, tmp_path):
    """``profile --device cuda:1``: the case runs with cuda:1 current (its events, streams and memory snapshot)."""
    from bench.core.runner import Outcome
    from bench.profile import profiler

    current_while_running = []

    def run_case(case, device, body, skip=None):
        current_while_running.append(cuda.current)
        return Outcome("error", "stub: the step is not run here")

    monkeypatch.setattr(profiler, "run_case", run_case)
    result = profiler.profile_case(Case(preset="tiny", attention="eager", mode="train", size="201x201"),
                                   torch.device("cuda:1"), H200, tmp_path)
    assert current_while_running == [1] and ("device", 1) in cuda.log and result.status == "error"
    assert cuda.current == 0, "the previous device is current again after"


def test_a_slow_peak_stops_at_its_time_budget_after_the_fewest_repetitions(monkeypatch):
    from bench.trackers import calibration

    gemm = WarmingGemm([3000, 2500, 2000, 1500, 1000])  # ms a call: bf16 on a CPU without bf16 units
    monkeypatch.setattr(calibration, "time", SimpleNamespace(perf_counter=gemm.perf_counter))
    assert len(calibration.settled_times(gemm, CPU)) == calibration.PEAK_GEMM_REPEATS


# ------------------------------- the emulated plan: whose throughput picked the batch, and the card's range (issue 34)


def emulated_env(target: str | None, gpu_name: str = "NVIDIA H100 80GB HBM3"):
    from bench.plan.budget import EMULATED, PlanEnv, find_gpu

    facts = DeviceFacts(type="cuda", name=gpu_name, index=0, capability="9.0", total_memory_mib=81559)
    budget = Budget(8 * GIB, display_reserve=256 * MIB, context_bytes=300 * MIB)
    entry = find_gpu(target) if target else None
    return PlanEnv(budget, entry["name"] if entry else "8.00 GiB card", torch.device("cuda:0"), facts, source=EMULATED,
                   target_entry=entry)


def test_an_emulated_plan_row_says_whose_throughput_picked_the_batch_and_the_cards_range(monkeypatch):
    """Emulated on an H100 (132 SMs) for an RTX 4060 (24 SMs): the H100's curve picks 64 (the smallest batch
    within 5% of its best images/s); the 4060, with fewer SMs, reaches its best at a batch no larger and about
    in proportion: 64 x 24 / 132 = 11, so 11-64."""
    from bench.plan import planner as plan

    card = card_with_context(500, 20, 6 * GIB, lambda b: 300, [])
    monkeypatch.setattr(plan, "cuda_trial", lambda case, device, batch: card(batch))
    monkeypatch.setattr(plan, "cuda_throughput", lambda case, device, batch: float(min(batch, 64)))  # saturates at 64
    env = emulated_env("rtx4060")
    row, _ = plan.plan_case(Case(preset="tiny", attention="eager", mode="train"), env)
    assert row["recommended_batch"] == 64 and row["recommended_range"] == f"{64 * 24 // 132}-64" == "11-64"
    assert row["recommended_from"].startswith("emulated: the NVIDIA H100 80GB HBM3's images/s, not the NVIDIA GeForce RTX 4060's")
    assert "SM ratio 24/132" in row["recommended_from"]
    from bench.plan.output import PlanResult, add_frames, plan_markdown

    add_frames(row)
    markdown = plan_markdown(PlanResult([row], {}, env))
    assert "| 64 (card: 11-64) |" in markdown and f"Whose throughput picked the recommended batch: {row['recommended_from']}" in markdown


def test_without_the_cards_sm_count_an_emulated_plan_claims_no_range():
    from bench.plan.planner import picked_on

    said, span = picked_on(emulated_env(None), 32)
    assert span == "" and "no range: 8.00 GiB card has no SM count" in said and said.startswith("emulated: the NVIDIA H100")
    said, span = picked_on(emulated_env("rtx4060", gpu_name="NVIDIA H100 PCIe"), 32)  # not in the table
    assert span == "" and "no range: NVIDIA H100 PCIe has no SM count" in said


def test_the_first_screen_says_whose_throughput_picked_the_batch():
    from bench.report.first_screen import _memory_source

    row = pd.Series({"source": "emulated", "device": "NVIDIA H100 80GB HBM3 held to 8.00 GiB",
                     "recommended_from": "emulated: the NVIDIA H100 80GB HBM3's images/s, not the NVIDIA GeForce RTX 4060's"})
    assert _memory_source(row) == ("emulated on NVIDIA H100 80GB HBM3 held to 8.00 GiB; batch emulated: the NVIDIA H100 80GB "
                                   "HBM3's images/s, not the NVIDIA GeForce RTX 4060's")
    assert _memory_source(pd.Series({"source": "emulated", "device": "X"})) == "emulated on X", "an older plan"
