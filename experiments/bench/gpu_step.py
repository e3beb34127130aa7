"""Training throughput and step-time split on a GPU, for the paper's CUB and SOP presets.

    python experiments/bench/gpu_step.py                         # CUDA: cub + sop presets, SOP-scale eval
    python experiments/bench/gpu_step.py --precision bf16-mixed --channels-last
    python experiments/bench/gpu_step.py --tiny                  # CPU smoke run: tiny model, tiny sizes

Per preset (CUB: ResNet-50, 64-d, batch 128; SOP: ResNet-50, 512-d, batch 512; 256 px, 2 images
per class, random init, SGD), over synthetic uint8 images served by a DataLoader (pinned memory
on CUDA, workers from the CPU count): training images/s and the mean step time split into
- data wait: next batch from the loader, copy to the device, uint8 -> normalised float;
- forward:   the embedding network;
- mining+loss: ``hardneg.criterion.Criterion`` (SCT, easy positive / hardest negative);
- backward:  ``loss.backward()`` and ``optimizer.step()``.
The device is synchronised between phases so that each phase's time is its own (this costs a
little throughput; ``images/s`` is measured on the same synchronised steps). Then the evaluation
at SOP scale: ``hardneg.metrics.retrieval.retrieval_metrics`` (Recall@1..1000, MAP@R) on 60,502
random 512-d embeddings in 11,316 classes, the SOP test set's size.
Decoding real JPEGs is not part of this script (see the ``loader`` part of ``make bench``):
synthetic images show what the GPU step itself needs from the input pipeline.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

PRESETS = {
    # name: backbone, embedding dim, batch, image size (the paper's recipes, conf/experiment/paper/*)
    "cub": ("resnet50", 64, 128, 256),
    "sop": ("resnet50", 512, 512, 256),
}
TINY = {"tiny": ("test_efficientnet", 16, 16, 32)}
SOP_TEST = (60502, 11316)  # test images, classes
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 255
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255


class SyntheticImages(torch.utils.data.Dataset):
    """uint8 images (as a decoded, resized JPEG would be), 2 per class."""

    def __init__(self, n: int, size: int):
        self.n, self.size = n, size
        self.pool = torch.randint(0, 256, (64, 3, size, size), dtype=torch.uint8)  # cheap to serve

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return self.pool[i % len(self.pool)], i // 2


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_split(name, backbone, dim, batch, size, steps, warmup, device, precision, channels_last, workers):
    from hardneg.criterion import Criterion
    from hardneg.losses import SCTLoss
    from hardneg.mining import TripletMiner
    from hardneg.models import EmbeddingNet

    torch.manual_seed(0)
    net = EmbeddingNet(backbone, dim=dim, pretrained=False, channels_last=channels_last).to(device)
    criterion = Criterion(SCTLoss(), TripletMiner("easy", "hardest"))
    optimizer = torch.optim.SGD(net.parameters(), lr=1e-3)
    loader = torch.utils.data.DataLoader(
        SyntheticImages(batch * (steps + warmup), size), batch_size=batch, num_workers=workers,
        pin_memory=device.type == "cuda", persistent_workers=False, drop_last=True,
    )
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)
    autocast = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype else nullcontext
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "16-mixed")
    mean, std = MEAN.to(device), STD.to(device)
    phases = {"data wait": [], "forward": [], "mining+loss": [], "backward": []}
    batches = iter(loader)
    net.train()
    for step in range(steps + warmup):
        _sync(device)
        t0 = time.perf_counter()
        images, labels = next(batches)
        images = (images.to(device, non_blocking=True).float() - mean) / std
        labels = labels.to(device, non_blocking=True)
        _sync(device)
        t1 = time.perf_counter()
        with autocast():
            embeddings = net(images)
        _sync(device)
        t2 = time.perf_counter()
        with autocast():
            loss, _ = criterion(embeddings, labels)
        _sync(device)
        t3 = time.perf_counter()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        _sync(device)
        t4 = time.perf_counter()
        if step >= warmup:
            for key, (a, b) in zip(phases, ((t0, t1), (t1, t2), (t2, t3), (t3, t4))):
                phases[key].append(b - a)
    mean_ms = {k: 1000 * statistics.mean(v) for k, v in phases.items()}
    step_ms = sum(mean_ms.values())
    return {
        "preset": name, "backbone": backbone, "dim": dim, "batch": batch, "image": size, "precision": precision,
        "channels_last": channels_last, "steps": steps, "images_per_s": batch / (step_ms / 1000),
        "step_ms": step_ms, "split_ms": mean_ms, "peak_gib": _peak_gib(device),
    }


def _peak_gib(device):
    if device.type != "cuda":
        return float("nan")
    peak = torch.cuda.max_memory_allocated(device) / 2**30
    torch.cuda.reset_peak_memory_stats(device)
    return peak


def evaluation(n, classes, dim, device, repeats):
    from hardneg.metrics.retrieval import retrieval_metrics

    g = torch.Generator().manual_seed(0)
    embeddings = torch.nn.functional.normalize(torch.randn(n, dim, generator=g), dim=1).to(device)
    labels = (torch.arange(n) % classes).to(device)
    ks = [k for k in (1, 10, 100, 1000) if k < n]
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        retrieval_metrics(embeddings, labels, ks=ks, map_at_r=True)
        _sync(device)
        times.append(time.perf_counter() - start)
    return {"items": n, "classes": classes, "dim": dim, "ks": ks, "seconds": min(times), "seconds_all": times,
            "peak_gib": _peak_gib(device)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny model and sizes (CPU smoke run)")
    parser.add_argument("--presets", nargs="+", default=None, help=f"of {list(PRESETS)}")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--precision", default="32", choices=["32", "bf16-mixed", "16-mixed"])
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: CPUs - 1, at most 8)")
    parser.add_argument("--eval-items", type=int, default=None, help=f"default: SOP's {SOP_TEST[0]} (tiny: 400)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    presets = TINY if args.tiny else {k: PRESETS[k] for k in (args.presets or PRESETS)}
    workers = args.workers if args.workers is not None else (0 if args.tiny else min(8, max(0, (os.cpu_count() or 1) - 1)))
    steps, warmup = (3, 1) if args.tiny else (args.steps, args.warmup)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device: {name}, torch {torch.__version__}, precision {args.precision}, channels_last {args.channels_last}, "
          f"{workers} loader workers")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    results = {"device": name, "train": [], "eval": None}
    print("| preset | batch x image | images/s | step ms | data wait | forward | mining+loss | backward | peak GiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for preset, (backbone, dim, batch, size) in presets.items():
        r = train_split(preset, backbone, dim, batch, size, steps, warmup, device, args.precision,
                        args.channels_last, workers)
        results["train"].append(r)
        s = r["split_ms"]
        print(f"| {preset} ({backbone}, {dim}-d) | {batch} x {size}px | {r['images_per_s']:.0f} | {r['step_ms']:.1f} "
              f"| {s['data wait']:.1f} | {s['forward']:.1f} | {s['mining+loss']:.2f} | {s['backward']:.1f} "
              f"| {r['peak_gib']:.1f} |", flush=True)
    n = args.eval_items or (400 if args.tiny else SOP_TEST[0])
    classes = max(1, round(n * SOP_TEST[1] / SOP_TEST[0]))
    e = evaluation(n, classes, 16 if args.tiny else 512, device, repeats=1 if args.tiny else 3)
    results["eval"] = e
    print(f"evaluation: {n} x {e['dim']}-d embeddings, {classes} classes, Recall@{e['ks']} + MAP@R: "
          f"{e['seconds']:.2f} s (best of {len(e['seconds_all'])}), peak {e['peak_gib']:.1f} GiB")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=lambda x: None if math.isnan(x) else x))
    return results


if __name__ == "__main__":
    main()
