"""Time the reflectance networks (sliding window, as `AvatarPipeline` runs them) at 1024² and
4096² on the CPU, and the peak resident memory at 4096².

    python -m bench.bench_reflectance [--threads 2] [--sizes 1024 4096]  # from the repo root

The inputs are smooth random maps (the run time does not depend on the content); the networks
are the shipped ones from `weights_config/`. Peak memory: the process RSS sampled every 5 ms
while each network runs at 4096², minus nothing (the inputs and the output accumulators, about
0.9 GB at 4096², are included).
"""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path

import psutil
import torch
import torch.nn.functional as F

from modeling.networks.blocks import uv_coordinates
from modeling.networks.delighting import DelightingNet
from modeling.networks.normals import DetailNormalsNet
from modeling.networks.reflectance import TILE_BATCH, TILE_OVERLAP, TILE_SIZE
from modeling.networks.specular import SpecularAlbedoNet
from modeling.networks.tiling import sliding_window

WEIGHTS = Path(__file__).resolve().parent.parent / "weights_config"
TARGET_SECONDS_1K, TARGET_PEAK_GB_4K = 5.0, 4.0


class PeakRSS:
    """Samples this process's RSS in a thread; `.peak` in bytes."""

    def __init__(self, interval: float = 0.005):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._proc = psutil.Process()

    def __enter__(self):
        self.peak = self._proc.memory_info().rss
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            time.sleep(self.interval)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def smooth_maps(size: int, channels: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(1, channels, 32, 32, generator=g)
    return F.interpolate(small, size=(size, size), mode="bilinear", align_corners=False)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096])
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    nets = {
        "delighting": DelightingNet.from_pretrained(WEIGHTS / "delighting").eval(),
        "specular": SpecularAlbedoNet.from_pretrained(WEIGHTS / "specular").eval(),
        "normals": DetailNormalsNet.from_pretrained(WEIGHTS / "normals").eval(),
    }
    print(f"torch {torch.__version__}, {args.threads} threads, tiles {TILE_SIZE} px "
          f"(overlap {TILE_OVERLAP}, {TILE_BATCH} per batch)")  # fmt: skip
    warm = smooth_maps(64, 3, 0)

    stats = DelightingNet.global_stats(warm, warm, warm[:, :1])  # content does not matter

    def delighting(*tiles):
        return nets["delighting"](*tiles, stats.expand(len(tiles[0]), -1))

    context = nets["specular"].context_maps(warm, warm, warm, warm[:, :1])

    def specular(*tiles):
        return nets["specular"](*tiles, context.expand(len(tiles[0]), -1, -1, -1))

    fns = {"delighting": delighting, "specular": specular, "normals": nets["normals"]}
    sliding_window(delighting, [warm] * 3 + [warm[:, :1]] * 2, 3)  # first-call overheads
    uv = uv_coordinates(64, 64)
    sliding_window(specular, [warm] * 3 + [uv], 1)
    sliding_window(nets["normals"], [warm] * 3 + [uv], 6)
    for size in args.sizes:
        tex, delit, shape = (smooth_maps(size, 3, s) for s in (1, 2, 3))
        ao, uv = smooth_maps(size, 1, 4), uv_coordinates(size, size)
        runs = {
            "delighting": ([tex, delit, shape, ao, ao], 3),  # ao stands in for visibility
            "specular": ([delit, shape, tex, uv], 1),
            "normals": ([delit, shape, tex, uv], 6),
        }
        total = 0.0
        for name, (inputs, channels) in runs.items():
            with PeakRSS() as mem:
                start = time.perf_counter()
                out = sliding_window(fns[name], inputs, channels, TILE_SIZE, TILE_OVERLAP,
                                     TILE_BATCH)  # fmt: skip
                seconds = time.perf_counter() - start
            del out
            total += seconds
            print(f"{size}²  {name:<11} {seconds:7.2f} s   peak RSS {mem.peak / 2**30:5.2f} GB")
        print(f"{size}²  all four maps {total:7.2f} s"
              + (f"  (target <= {TARGET_SECONDS_1K:.0f} s)" if size == 1024 else ""))  # fmt: skip
        del tex, delit, shape, ao, uv, runs
    print(f"peak-memory target at 4096²: <= {TARGET_PEAK_GB_4K:.0f} GB")


if __name__ == "__main__":
    main()
