"""`darkcfg train`: Darknet's `detector train` (darkcfg/train/job.py), one process or torchrun.

    darkcfg train DATA CFG [WEIGHTS] [--clear] [--map] [--device cpu|cuda:N] [--workers N]
                  [--seed S] [--darknet gpu|cpu]
    torchrun --nproc_per_node N -m darkcfg train ...   (data parallel: gloo on CPU, nccl on CUDA)
"""

from __future__ import annotations

import argparse
import os

HELP = "train a cfg on a Darknet dataset as `darknet detector train` does"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", help="the .data file: train= and valid= image lists, names=, "
                                "backup= (where weights are written), optional saveweights= "
                                "and savelast=")
    p.add_argument("cfg", help="the Darknet .cfg to train (its [net] batch, subdivisions, "
                               "learning rate schedule, augmentation and max_batches apply)")
    p.add_argument("weights", nargs="?",
                   help="weights to start from: a partial file (yolov4.conv.137), a trained "
                        "file to continue (its seen counts on) or <cfg>_last.weights to resume")
    p.add_argument("--clear", action="store_true",
                   help="start the iteration count at 0 whatever the weights file says")
    p.add_argument("--map", action="store_true", dest="calc_map",
                   help="evaluate the valid= list every few epochs (Darknet's -map) and keep "
                        "<cfg>_best.weights")
    p.add_argument("--map-epochs", type=int, default=4,
                   help="with --map: every this many epochs, at least every 100 iterations (4)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (cpu)")
    p.add_argument("--workers", type=int, default=2,
                   help="image decoding worker processes (2; 0 decodes in this process)")
    p.add_argument("--seed", type=int,
                   help="make the run deterministic: the data order and augmentation follow "
                        "the seed, and an interrupted run resumed from _last.weights equals an "
                        "uninterrupted one")
    p.add_argument("--darknet", choices=("gpu", "cpu"), default="gpu",
                   help="the Darknet build whose training to reproduce (gpu: the CUDA build "
                        "people train with; cpu: the CPU build, bugs included)")
    p.add_argument("--amp", action="store_true",
                   help="mixed precision (bfloat16 autocast) on recent GPUs: faster, and not "
                        "what Darknet computes (its training is float32)")
    p.add_argument("--no-chart", dest="chart", action="store_false",
                   help="do not write chart_<cfg>.png")
    p.add_argument("--weights-cfg",
                   help="the cfg WEIGHTS was saved with, to copy the layers whose shapes match "
                        "(another class count: fine-tuning official weights)")


def run(args: argparse.Namespace) -> int:
    from ..train.job import JobOptions, TrainJob

    device = _setup_distributed(args.device)
    options = JobOptions(args.data, args.cfg, args.weights, clear=args.clear,
                         calc_map=args.calc_map, device=device, workers=args.workers,
                         seed=args.seed, darknet=args.darknet, map_epochs=args.map_epochs,
                         chart=args.chart, weights_cfg=args.weights_cfg, amp=args.amp)
    return TrainJob(options).run()


def _setup_distributed(device: str) -> str:
    """Under torchrun (WORLD_SIZE > 1): join the process group, nccl on CUDA, gloo on CPU, and
    give each process its own GPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return device
    import torch
    import torch.distributed as dist

    cuda = device.startswith("cuda")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return f"cuda:{local}"
    return device
