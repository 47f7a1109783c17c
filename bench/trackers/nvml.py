"""NVML (``nvidia-ml-py``, imported as ``pynvml``): what the driver sees of the GPU.

Where there is no NVIDIA driver (this CPU machine, a Mac, a container without the GPU mounted)
:class:`NVML` stays usable: ``available`` is False, ``reason`` says why in one line, and every
query returns ``None`` so a row gets an empty cell, never a made-up number.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Optional

from bench.units import MIB

# NVML's cumulative counters of time (ns) spent with clocks held down, per reason: the violation
# counters every data-centre GPU since Kepler keeps, and the newer clock-event fields (driver 535+)
# that split thermal and power-brake slowdowns. Deltas around a timed loop say whether it was slowed.
_VIOLATION_POLICIES = (("NVML_PERF_POLICY_POWER", "power cap"), ("NVML_PERF_POLICY_THERMAL", "thermal"),
                       ("NVML_PERF_POLICY_SYNC_BOOST", "sync boost"), ("NVML_PERF_POLICY_BOARD_LIMIT", "board limit"),
                       ("NVML_PERF_POLICY_RELIABILITY", "reliability"))
_EVENT_FIELDS = (("NVML_FI_DEV_CLOCKS_EVENT_REASON_SW_THERM_SLOWDOWN", "thermal (software)"),
                 ("NVML_FI_DEV_CLOCKS_EVENT_REASON_HW_THERM_SLOWDOWN", "thermal (hardware)"),
                 ("NVML_FI_DEV_CLOCKS_EVENT_REASON_HW_POWER_BRAKE_SLOWDOWN", "power brake"))


class NVML:
    _instance: Optional["NVML"] = None

    def __init__(self) -> None:
        self.available = False
        self.reason = ""
        self.process_note = ""  # how the last per-process figure was found, or why there was none
        self._told: set[str] = set()
        self._nv = None
        # per CUDA index: (MiB the GPU had in use before this process initialised CUDA, or None, and how or why not)
        self._baselines: dict[int, tuple[Optional[float], str]] = {}
        try:
            import pynvml  # provided by the nvidia-ml-py package
        except ImportError:
            self.reason = "NVML unavailable: the nvidia-ml-py package is not installed (pip install nvidia-ml-py)"
            return
        try:
            pynvml.nvmlInit()
        except Exception as err:  # pynvml.NVMLError_LibraryNotFound, _DriverNotLoaded, ...
            self.reason = f"NVML unavailable: no NVIDIA driver here ({type(err).__name__}: {err})"
            return
        self._nv = pynvml
        self.available = True

    @classmethod
    def get(cls) -> "NVML":
        """One NVML session per process."""
        if cls._instance is None:
            cls._instance = NVML()
        return cls._instance

    def _call(self, fn_name: str, *args):
        if not self.available:
            return None
        fn = getattr(self._nv, fn_name, None)
        if fn is None:
            return None
        try:
            return fn(*args)
        except Exception:  # NVMLError_NotSupported on some boards, e.g. energy on consumer parts
            return None

    def handle(self, cuda_index: int = 0):
        """The NVML handle of the GPU that torch calls ``cuda:cuda_index`` (by PCI bus id)."""
        if not self.available:
            return None
        try:
            import torch

            props = torch.cuda.get_device_properties(cuda_index)
            bus_id = f"{props.pci_domain_id:08X}:{props.pci_bus_id:02X}:{props.pci_device_id:02X}.0"
        except Exception:  # older torch without the PCI fields: fall back to the index
            bus_id = None
        if bus_id is not None:
            handle = self._call("nvmlDeviceGetHandleByPciBusId", bus_id)
            if handle is not None:
                return handle
        return self._call("nvmlDeviceGetHandleByIndex", cuda_index)

    def record_baseline(self, cuda_index: int = 0) -> tuple[Optional[float], str]:
        """The GPU's used memory before this process initialised CUDA (the display, other applications and
        processes): what a context measured later is taken against, and what a desktop card's display uses.

        Read once per process and GPU, and only while torch has not initialised CUDA here (its handle is
        then found without torch: ``CUDA_VISIBLE_DEVICES`` by index or UUID, or NVML's index where CUDA's
        order is known to match it). Later calls return the first answer; ``None`` with the reason when
        it could not be read before CUDA started.
        """
        if cuda_index in self._baselines:
            return self._baselines[cuda_index]
        import torch

        if not self.available:
            found: tuple[Optional[float], str] = (None, self.reason)
        elif torch.cuda.is_initialized():
            found = (None, "CUDA was initialised in this process before NVML could read the GPU without it")
        else:
            handle, how = self._handle_without_torch(cuda_index)
            used = self.device_used_mib(handle) if handle is not None else None
            found = (used, f"NVML device memory in use before this process initialised CUDA ({how})") if used is not None \
                else (None, f"the GPU's used memory could not be read before CUDA started ({how})")
        self._baselines[cuda_index] = found
        return found

    def _handle_without_torch(self, cuda_index: int) -> tuple[object, str]:
        visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
        if os.environ.get("CUDA_VISIBLE_DEVICES") is not None:
            if cuda_index >= len(visible):
                return None, f"CUDA_VISIBLE_DEVICES lists no cuda:{cuda_index}"
            entry = visible[cuda_index]
            if entry.isdigit():
                return self._call("nvmlDeviceGetHandleByIndex", int(entry)), f"CUDA_VISIBLE_DEVICES entry {entry}"
            return self._call("nvmlDeviceGetHandleByUUID", entry), f"CUDA_VISIBLE_DEVICES entry {entry}"
        count = self._call("nvmlDeviceGetCount")
        if count == 1 or os.environ.get("CUDA_DEVICE_ORDER") == "PCI_BUS_ID":
            return self._call("nvmlDeviceGetHandleByIndex", cuda_index), "NVML index = CUDA index"
        return None, (f"{count} GPUs and CUDA's fastest-first order: which NVML device is cuda:{cuda_index} is not "
                      "known without CUDA (set CUDA_DEVICE_ORDER=PCI_BUS_ID)")

    def display_active(self, handle) -> Optional[bool]:
        """Whether the GPU drives a display (a monitor attached and initialised), per NVML; None when unknown."""
        value = self._call("nvmlDeviceGetDisplayActive", handle)
        return None if value is None else bool(value)

    def driver_version(self) -> str:
        value = self._call("nvmlSystemGetDriverVersion")
        return value.decode() if isinstance(value, bytes) else (value or "")

    def device_used_mib(self, handle) -> Optional[float]:
        info = self._call("nvmlDeviceGetMemoryInfo", handle)
        return info.used / MIB if info is not None else None

    def process_used_mib(self, handle, pid: Optional[int] = None) -> Optional[float]:
        """This process's GPU memory as the driver counts it (context included), or None.

        Matched by PID. In a container the driver reports host PIDs, which never equal
        ``os.getpid()``: then, when the GPU lists exactly one compute process, that one is this
        process (a process measuring on the GPU is always listed) and it is used. ``process_note``
        says which way the figure was found, or why there is none; said once on stderr too.
        """
        procs = self._call("nvmlDeviceGetComputeRunningProcesses", handle)
        if procs is None:
            return self._no_process(f"NVML gives no process list here ({'no NVML' if not self.available else 'query not supported'})")
        pid = pid or os.getpid()
        mine = [proc for proc in procs if proc.pid == pid]
        if mine:
            if mine[0].usedGpuMemory is None:
                return self._no_process("the driver does not report per-process memory (usedGpuMemory not available)")
            self.process_note = ""
            return mine[0].usedGpuMemory / MIB
        if len(procs) == 1 and procs[0].usedGpuMemory is not None:
            self._note(f"no GPU process has this PID {pid} (a container's PID namespace: the driver reports host PIDs); "
                       f"the only compute process on the GPU, PID {procs[0].pid}, is taken as this one")
            return procs[0].usedGpuMemory / MIB
        if not procs:
            return self._no_process("the GPU lists no compute process (none has a CUDA context yet, or the driver hides them)")
        return self._no_process(f"no GPU process has this PID {pid} (a container's PID namespace?) and the GPU lists "
                                f"{len(procs)} compute processes, so none can be taken as this one")

    def _no_process(self, why: str) -> None:
        self._note(f"per-process GPU memory empty: {why}")
        return None

    def _note(self, text: str) -> None:
        self.process_note = text
        if text not in self._told:  # once per process, not once per sample
            self._told.add(text)
            print(f"ae-bench: NVML: {text}", file=sys.stderr)

    def energy_mj(self, handle) -> Optional[int]:
        """Total energy since the driver loaded, in millijoules (Volta and newer)."""
        return self._call("nvmlDeviceGetTotalEnergyConsumption", handle)

    def sm_clock_mhz(self, handle) -> Optional[int]:
        if not self.available:
            return None
        return self._call("nvmlDeviceGetClockInfo", handle, self._nv.NVML_CLOCK_SM)

    def throttle_counters(self, handle) -> Optional[dict[str, int]]:
        """NVML's cumulative time (ns) with clocks held down, per reason; None where none is readable."""
        if not self.available:
            return None
        out: dict[str, int] = {}
        for const, label in _VIOLATION_POLICIES:
            policy = getattr(self._nv, const, None)
            value = self._call("nvmlDeviceGetViolationStatus", handle, policy) if policy is not None else None
            if value is not None:
                out[label] = int(value.violationTime)
        fields = [(getattr(self._nv, const), label) for const, label in _EVENT_FIELDS if getattr(self._nv, const, None) is not None]
        values = self._call("nvmlDeviceGetFieldValues", handle, [fid for fid, _ in fields]) if fields else None
        for (_, label), value in zip(fields, values or []):
            if value.nvmlReturn == 0:  # NVML_SUCCESS; a field this driver or board lacks says NOT_SUPPORTED
                out[label] = int(value.value.ullVal)
        return out or None

    def after_loop(self, handle, counters_before: Optional[dict[str, int]]) -> dict:
        """Read right after a timed loop, before anything else runs on the GPU: the SM clock, and
        whether the loop was slowed (the clock-event counters' growth since ``counters_before``;
        without counters, the reasons active now). The row's ``sm_clock_mhz``, ``throttled`` and
        ``throttle_reasons``, only those known."""
        out: dict = {}
        clock = self.sm_clock_mhz(handle)
        if clock is not None:
            out["sm_clock_mhz"] = clock
        after = self.throttle_counters(handle) if counters_before is not None else None
        if counters_before is not None and after is not None:
            grown = {k: (after[k] - counters_before[k]) / 1e6 for k in after if k in counters_before and after[k] > counters_before[k]}
            out["throttle_reasons"] = "+".join(f"{label} {ms:.1f} ms" for label, ms in grown.items())
            out["throttled"] = bool(grown)
            return out
        reasons = self.throttle_reasons(handle)
        if reasons is not None:
            out["throttle_reasons"] = "+".join(reasons)
            out["throttled"] = bool(reasons)
        return out

    def throttle_reasons(self, handle) -> Optional[list[str]]:
        """Active clock-event reasons that mean lost speed (idle and app-clock settings excluded)."""
        if not self.available:
            return None
        mask = self._call("nvmlDeviceGetCurrentClocksEventReasons", handle)
        if mask is None:
            mask = self._call("nvmlDeviceGetCurrentClocksThrottleReasons", handle)
        if mask is None:
            return None
        names = {
            "SwPowerCap": "power cap", "HwSlowdown": "hardware slowdown", "SwThermalSlowdown": "thermal (software)",
            "HwThermalSlowdown": "thermal (hardware)", "HwPowerBrakeSlowdown": "power brake", "SyncBoost": "sync boost",
        }
        out = []
        for suffix, label in names.items():
            for prefix in ("nvmlClocksEventReason", "nvmlClocksThrottleReason"):
                bit = getattr(self._nv, prefix + suffix, None)
                if bit is not None:
                    if mask & bit:
                        out.append(label)
                    break
        return out


class MemorySampler:
    """Polls memory on a thread (about every 10 ms) and keeps the peaks.

    GPU: NVML device-wide and per-process used memory. Always: this process's resident set
    (``/proc/self/statm``), the CPU peak of a case. Started and stopped around the memory pass
    only, so polling never runs during the timed loop.
    """

    def __init__(self, cuda_index: Optional[int] = None, interval_s: float = 0.01) -> None:
        self.interval_s = interval_s
        self.nvml = NVML.get() if cuda_index is not None else None
        self.handle = self.nvml.handle(cuda_index) if self.nvml and self.nvml.available else None
        self.device_peak_mib: Optional[float] = None
        self.process_peak_mib: Optional[float] = None
        self.rss_peak_mib: Optional[float] = None
        self.process_note = ""  # empty when the per-process figure matched this PID; else how it was found, or why not
        self.samples = 0
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def _sample(self) -> None:
        rss = rss_mib()
        if rss is not None:
            self.rss_peak_mib = max(self.rss_peak_mib or 0.0, rss)
        if self.handle is not None:
            used = self.nvml.device_used_mib(self.handle)
            if used is not None:
                self.device_peak_mib = max(self.device_peak_mib or 0.0, used)
            mine = self.nvml.process_used_mib(self.handle)
            self.process_note = self.nvml.process_note
            if mine is not None:
                self.process_peak_mib = max(self.process_peak_mib or 0.0, mine)
        self.samples += 1

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._sample()
            time.sleep(self.interval_s)

    def __enter__(self) -> "MemorySampler":
        self._sample()
        self._thread = threading.Thread(target=self._loop, name="ae-bench-memory", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()


def rss_mib() -> Optional[float]:
    """Resident set size of this process in MiB (Linux), else None."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / MIB
    except (OSError, ValueError, IndexError):
        return None
