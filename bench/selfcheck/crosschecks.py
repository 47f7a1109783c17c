"""Cross-checks of the harness against independent references, as figures (never assertions).

- ``timer_agreement``: a case's images/s as the harness measures it against
  ``torch.utils.benchmark.Timer`` timing a freshly built copy of the same step, alternating the two
  for several rounds and comparing each one's best round (a burst of load hurts neither).
- ``block_speed``: our transformer Block against ``nn.TransformerEncoderLayer`` of the same shape
  (pre-LN, GELU, same width/heads/MLP): what our layout costs against PyTorch's own.

Both depend on the machine being quiet, which a benchmark job cannot promise: they return the
figure and its spread, the main job (``pytest bench --ae-selfcheck``) writes them to the run's
``selfcheck.json``, and nothing fails because someone else was using the machine.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn

from ae_models.layers import Block
from bench.core.cases import Case
from bench.core.measure import Settings, measure_case
from bench.core.steps import prepare, synchronizer
from bench.trackers.device import DeviceFacts

SELFCHECK_JSON = "selfcheck.json"
HARNESS_CASES = (
    Case(family="transformer", preset="tiny", size="201x201", attention="flash", mode="infer", batch=8),
    Case(family="transformer", preset="tiny", size="201x201", attention="eager", mode="train", batch=4),
)
# The CNN is left out: on 2 CPU cores its convolutions run at one of two speeds (about 250 or 400
# images/s for the tiny preset at 201x201) from one build of the model to the next, whoever times
# them, so the agreement of two timers would measure the machine, not the harness.
ROUNDS = 5
AGREEMENT = 0.10  # the two timers agree when their best rounds are within 10%


@dataclass
class Agreement:
    check: str
    case_id: str
    harness_images_per_s: list[float]
    timer_images_per_s: list[float]
    ratio: float             # best harness round / best Timer round
    spread: float            # (max - min) / median of each side's rounds, the larger: how noisy the machine was
    agrees: bool

    def as_dict(self) -> dict:
        return asdict(self)


def timer_images_per_s(case: Case, device: torch.device) -> float:
    """``torch.utils.benchmark.Timer`` on a freshly built step, as the harness builds one per measurement."""
    from torch.utils.benchmark import Timer

    scenario = prepare(case, device)
    sync = synchronizer(device)

    def step():
        scenario.step()
        sync()

    try:
        for _ in range(3):
            step()
        # Timer runs on one thread unless told; give it the threads the harness had
        timer = Timer(stmt="step()", globals={"step": step}, num_threads=torch.get_num_threads())
        return case.batch / timer.blocked_autorange(min_run_time=0.5).median
    finally:
        scenario.close()


def _spread(values: list[float]) -> float:
    return (max(values) - min(values)) / statistics.median(values)


def timer_agreement(case: Case, device: torch.device, facts: DeviceFacts, rounds: int = ROUNDS) -> Agreement:
    settings = Settings(warmup=3, min_iters=10, max_iters=400, min_time_s=0.5, memory_iters=1)
    ours, theirs = [], []
    for _ in range(rounds):
        row = measure_case(case, device, facts, settings).row
        if row["status"] != "ok":
            raise RuntimeError(f"{case.id}: {row['status']}: {row['reason']}")
        ours.append(row["images_per_s"])
        theirs.append(timer_images_per_s(case, device))
    ratio = max(ours) / max(theirs)
    return Agreement("harness vs torch.utils.benchmark.Timer", case.id, ours, theirs, ratio,
                     max(_spread(ours), _spread(theirs)), abs(ratio - 1) <= AGREEMENT)


# -- our Block against nn.TransformerEncoderLayer -----------------------------------------------


@dataclass(frozen=True)
class BlockShape:
    name: str
    dim: int
    heads: int
    mlp_ratio: float
    tokens: int
    batch: int = 8

    @property
    def hidden(self) -> int:
        return int(self.dim * self.mlp_ratio)


BLOCK_SHAPES = (
    BlockShape("small-800tok", dim=256, heads=4, mlp_ratio=2.0, tokens=800),  # 1280x152 at patch 16: 80x10
    BlockShape("small-169tok", dim=256, heads=4, mlp_ratio=2.0, tokens=169),  # 201x201 at patch 16: 13x13
)
BLOCK_IMPLS = ("ours", "pytorch")


class TorchBlock(nn.Module):
    """``nn.TransformerEncoderLayer`` with our Block's call signature (``x -> (x, None)``)."""

    def __init__(self, shape: BlockShape) -> None:
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(shape.dim, shape.heads, dim_feedforward=shape.hidden, dropout=0.0,
                                                activation="gelu", batch_first=True, norm_first=True)

    def forward(self, x: torch.Tensor):
        return self.layer(x), None


def make_block(impl: str, shape: BlockShape) -> nn.Module:
    if impl == "ours":
        return Block(shape.dim, shape.heads, shape.mlp_ratio, dropout=0.0, attention="auto")
    if impl == "pytorch":
        return TorchBlock(shape)
    raise ValueError(f"unknown block implementation {impl!r}; choose one of {', '.join(BLOCK_IMPLS)}")


def forward_fn(block: nn.Module, x: torch.Tensor):
    block.eval()

    def run():
        with torch.inference_mode():
            return block(x)[0]

    return run


def forward_backward_fn(block: nn.Module, x: torch.Tensor):
    block.train()  # dropout is 0: train mode only keeps PyTorch off its inference fast path

    def run():
        block.zero_grad(set_to_none=True)
        x.grad = None
        block(x)[0].sum().backward()

    return run


def block_speed(min_run_time: float = 1.0, rounds: int = 3) -> list[dict]:
    """Ours / PyTorch's median time per shape and pass, timed with ``torch.utils.benchmark``,
    alternating the two for ``rounds`` rounds (best round of each)."""
    from torch.utils.benchmark import Timer

    rows = []
    for shape in BLOCK_SHAPES:
        for kind, make_fn, grad in (("fwd", forward_fn, False), ("fwd-bwd", forward_backward_fn, True)):
            fns = {}
            for impl in BLOCK_IMPLS:
                torch.manual_seed(0)
                fns[impl] = make_fn(make_block(impl, shape), torch.randn(shape.batch, shape.tokens, shape.dim, requires_grad=grad))
                fns[impl]()  # warm-up
            best = {impl: float("inf") for impl in BLOCK_IMPLS}
            for _ in range(rounds):
                for impl in BLOCK_IMPLS:
                    timer = Timer(stmt="fn()", globals={"fn": fns[impl]}, num_threads=torch.get_num_threads())
                    best[impl] = min(best[impl], timer.blocked_autorange(min_run_time=min_run_time / rounds).median)
            rows.append({"check": "our Block vs nn.TransformerEncoderLayer", "shape": shape.name, "pass": kind,
                         "ours_ms": best["ours"] * 1e3, "pytorch_ms": best["pytorch"] * 1e3,
                         "ours_over_pytorch": best["ours"] / best["pytorch"]})
    return rows
