"""How fast this host dispatches and launches small operators: the figure that sets a
launch-bound training step's speed, so that speed rows from different machines can be
read apart from the code (``bench/gpu_check.py`` prints it in its speed section).

A DINO training step is bound by the host issuing its eager operators (``bench/README.md``),
so one machine's slower host makes the same code look slower. Two fixed workloads, each
timed as the best of ``--repeats``:

* ``cpu_dispatch_us``: one ``torch.add`` of two 1-element CPU tensors (Python, the
  dispatcher, a tiny kernel);
* ``cuda_launch_us`` (with a GPU): one in-place add on a 1-element CUDA tensor, ``--ops`` of
  them queued and then synchronised (Python, the dispatcher and the driver's launch).

    python bench/host_speed.py [--ops 20000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch


def per_op_us(op, ops: int, repeats: int, sync=None) -> float:
    """The best over ``repeats`` of the mean microseconds of ``op()`` over ``ops`` calls."""
    best = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        for _ in range(ops):
            op()
        if sync is not None:
            sync()
        best = min(best, (time.perf_counter() - began) / ops * 1e6)
    return best


def measure(ops: int = 20000, repeats: int = 5) -> dict:
    torch.set_num_threads(1)
    a, b = torch.ones(1), torch.ones(1)
    row = {"cpu_dispatch_us": round(per_op_us(lambda: torch.add(a, b), ops, repeats), 3), "ops": ops,
           "repeats": repeats, "torch": torch.__version__}
    if torch.cuda.is_available():
        x = torch.zeros(1, device="cuda")
        x.add_(1)
        torch.cuda.synchronize()
        row["cuda_launch_us"] = round(per_op_us(lambda: x.add_(1), ops, repeats, torch.cuda.synchronize), 3)
        row["device"] = torch.cuda.get_device_name()
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ops", type=int, default=20000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    if args.ops < 1 or args.repeats < 1:
        ap.error("--ops and --repeats must be at least 1")
    print(json.dumps(measure(args.ops, args.repeats)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
