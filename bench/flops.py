"""What fraction of the device's measured matrix throughput a training step reaches.

    python -m bench.flops [--device cuda] [--backbones equiformer painn schnet]

Matrix throughput: float32 matrix products of 4096 x 4096, the best of 10 (on a GPU also with TF32,
which float32 training may use). Step FLOPs: ``torch.utils.flop_counter.FlopCounterMode`` over one
training step of 32 aspirins (forward, forces by autograd, backward through both; it counts matrix
products, where the FLOPs are, not elementwise work). Achieved: step FLOPs / step time (median of 10
steps). A low fraction means the step is bound by memory traffic and per-operator overhead, not by
arithmetic.
"""

from __future__ import annotations

import argparse

from bench.common import BATCH, aspirin_frames, device_name, our_step, timed, write_section

SIZE = 4096


def matrix_throughput(device: str, tf32: bool) -> float:
    """FLOP/s of ``SIZE``² float32 matrix products on ``device``, the best of 10."""
    import torch

    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        a, b = (torch.randn(SIZE, SIZE, device=device) for _ in range(2))
        best = min(timed(lambda: a @ b, 1, warmup=2, device=device)[0] for _ in range(10))
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous
    return 2 * SIZE**3 / best


def step_flops(backbone: str, device: str) -> tuple[float, float]:
    """(FLOPs of one training step, its median time in s) for ``backbone`` at its default size."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from dens_lightning.allocator import keep_freed_memory
    from dens_lightning.models.potential import Potential

    keep_freed_memory()
    torch.manual_seed(0)
    frames, _ = aspirin_frames(BATCH)
    step = our_step(Potential.build(backbone, {}).to(device), frames, device)
    step()
    with FlopCounterMode(display=False) as counter:
        step()
    median, _ = timed(step, 10, device=device)
    return float(counter.get_total_flops()), median


def main() -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--backbones", nargs="+", default=["equiformer", "painn", "schnet"])
    args = parser.parse_args()
    gpu = args.device.startswith("cuda")
    if not gpu:
        torch.set_num_threads(2)
    peaks = {"float32": matrix_throughput(args.device, tf32=False)}
    if gpu:
        peaks["TF32"] = matrix_throughput(args.device, tf32=True)
    rows = [
        f"Matrix throughput: {', '.join(f'{k} {v / 1e12:.2f} TFLOP/s' for k, v in peaks.items())}.",
        "",
        "| backbone | matrix FLOPs per step | step (ms) | achieved (TFLOP/s) | "
        + " | ".join(f"share of {k}" for k in peaks)
        + " |",
        "|---|---|---|---|" + "---|" * len(peaks),
    ]
    for backbone in args.backbones:
        flops, seconds = step_flops(backbone, args.device)
        achieved = flops / seconds
        shares = " | ".join(f"{100 * achieved / peak:.1f} %" for peak in peaks.values())
        rows.append(
            f"| {backbone} | {flops / 1e9:.1f} G | {1e3 * seconds:.0f} | {achieved / 1e12:.3f} | {shares} |"
        )
        print(rows[-1], flush=True)
    command = "python -m bench.flops" + (f" --device {args.device}" if gpu else "")
    lines = [
        "## Share of the matrix throughput a training step reaches" + (", on a GPU" if gpu else ""),
        "",
        f"`{command}`; {device_name(args.device)}; float32; one training step of {BATCH} aspirins",
        "(forward, forces by autograd, backward), each backbone at its default size. FLOPs: torch's",
        "`FlopCounterMode`, which counts matrix products only; the share compares them with the measured",
        f"throughput of {SIZE}x{SIZE} float32 matrix products on the same device.",
        "",
        *rows,
    ]
    write_section("flops-gpu" if gpu else "flops", lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
