"""Command-line options of the trainers (the original ``util/hyper_para.py``), plus a few additions.

Original fusion options and defaults (stage-dependent defaults applied after parsing):

- data: ``--davis_root ../DAVIS``, ``--bl_root ../BL30K``, ``--fusion_root ../fusion_data/davis``,
  ``--fusion_bl_root ../fusion_data/bl``, ``--yv_root ../YouTube`` (unused by fusion);
- ``--stage`` 0 (BL30K) / 1 (DAVIS); ``-i/--iterations`` 30000 / 10000; ``--steps`` [20000] / [7500];
  ``-b/--batch_size`` 12 per process; ``--lr`` 1e-4; ``--gamma`` 0.1;
- ``--load_network`` (weights only), ``--load_prop`` (``saves/propagation_model.pth``, required),
  ``--load_model`` (full checkpoint, resumes); ``--id`` (``NULL`` disables logging and saving);
  ``--debug`` (report and image intervals of 1); ``--local_rank`` (accepted for the old launcher).

Additions (defaults = the original behaviour): ``--num_workers`` 8, ``--save_dir saves``,
``--log_dir log``, ``--crop_size`` 384, ``--report_interval`` 100, ``--image_interval`` 500,
``--save_interval`` 5000.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from util.cli import CliParser as ArgumentParser

SAVES = Path(__file__).resolve().parents[1] / "saves"
# the file name download_model.py --pretrained gives the ImageNet ResNet-50 (model.factory has the URL);
# kept here as a literal so that parsing options never imports torch
IMAGENET_RESNET50_FILE = "resnet50-19c8e357.pth"

FUSION_STAGE_DEFAULTS = {0: {"iterations": 30000, "steps": [20000]},
                         1: {"iterations": 10000, "steps": [7500]}}


def add_common_training_options(parser: ArgumentParser, *, batch_size: int, lr: float = 1e-4,
                                report_interval: int = 100, image_interval: int = 500,
                                save_interval: int = 5000) -> None:
    """Options every trainer shares (learning schedule, loading, logging, processes, intervals)."""
    g = parser.add_argument_group("learning")
    g.add_argument("-i", "--iterations", type=int, default=None, help="number of training iterations")
    g.add_argument("-b", "--batch_size", type=int, default=batch_size, help="batch size per process")
    g.add_argument("--lr", type=float, default=lr, help="initial learning rate")
    g.add_argument("--steps", type=int, nargs="*", default=None,
                   help="iterations at which the learning rate is multiplied by --gamma")
    g.add_argument("--gamma", type=float, default=0.1, help="learning-rate decay factor")

    g = parser.add_argument_group("loading")
    g.add_argument("--load_network", help="weights-only .pth to start from (e.g. the previous stage)")
    g.add_argument("--load_model", help="full checkpoint <run>_checkpoint.pth to resume (iteration, "
                                        "network, optimizer, scheduler)")

    g = parser.add_argument_group("logging and saving")
    g.add_argument("--id", default="NULL", help="experiment id; NULL disables tensorboard logging and saving")
    g.add_argument("--debug", action="store_true", help="report and log images every iteration")
    g.add_argument("--save_dir", default="saves", help="checkpoints go to <save_dir>/<long id>/")
    g.add_argument("--log_dir", default="log", help="tensorboard events go to <log_dir>/<long id>/")
    g.add_argument("--report_interval", type=int, default=report_interval, help="iterations between console/scalar logs")
    g.add_argument("--image_interval", type=int, default=image_interval, help="iterations between image grids")
    g.add_argument("--save_interval", type=int, default=save_interval, help="iterations between checkpoints")

    g = parser.add_argument_group("processes")
    g.add_argument("--num_workers", type=int, default=8, help="DataLoader workers per process")
    g.add_argument("--local_rank", "--local-rank", type=int, default=0,
                   help="accepted for torch.distributed.launch; torchrun sets LOCAL_RANK instead")


def fusion_parser() -> ArgumentParser:
    parser = ArgumentParser(description="Train the MiVOS fusion module (stage 0: BL30K, stage 1: DAVIS). "
                                        "Multi-GPU: torchrun --nproc_per_node=N train.py ...")
    g = parser.add_argument_group("data")
    g.add_argument("--yv_root", default="../YouTube", help="YouTubeVOS root (unused by fusion training)")
    g.add_argument("--davis_root", default="../DAVIS", help="DAVIS root (stage 1 reads <root>/2017/trainval)")
    g.add_argument("--bl_root", default="../BL30K", help="BL30K root (stage 0)")
    g.add_argument("--fusion_root", default="../fusion_data/davis", help="fusion data for DAVIS (stage 1)")
    g.add_argument("--fusion_bl_root", default="../fusion_data/bl", help="fusion data for BL30K (stage 0)")
    g.add_argument("--stage", type=int, default=0, choices=(0, 1), help="0: BL30K pre-training, 1: DAVIS")
    g.add_argument("--crop_size", type=int, default=384, help="training crop (the original: 384)")
    parser.add_argument("--load_prop", default="saves/propagation_model.pth",
                        help="propagation checkpoint providing the frozen attention encoders (required)")
    add_common_training_options(parser, batch_size=12)
    return parser


class HyperParameters(dict):
    """Parsed options as a dict (``para['lr']``), printed as the original did (``str(args)``)."""

    def __str__(self) -> str:
        return str(dict(self))


def parse_fusion_args(argv: Sequence[str] | None = None) -> HyperParameters:
    args: dict[str, Any] = vars(fusion_parser().parse_args(argv))
    defaults = FUSION_STAGE_DEFAULTS[args["stage"]]
    for key, value in defaults.items():
        if args[key] is None:
            args[key] = list(value) if isinstance(value, list) else value
    if args["debug"]:
        args["report_interval"] = args["image_interval"] = 1
    return HyperParameters(args)


# ------------------------------------------------------------------------------------ propagation
# Mask-Propagation's training stages: 0 static images (single object), 1 BL30K, 2 DAVIS ×5 + YouTube-VOS
PROPAGATION_STAGE_DEFAULTS = {0: {"batch_size": 7, "iterations": 300000, "steps": [250000]},
                              1: {"batch_size": 4, "iterations": 500000, "steps": [450000]},
                              2: {"batch_size": 4, "iterations": 150000, "steps": [125000]}}


def propagation_parser() -> ArgumentParser:
    parser = ArgumentParser(description="Train the propagation module (stage 0: static images, 1: BL30K, "
                                        "2: DAVIS + YouTube-VOS). Multi-GPU: torchrun --nproc_per_node=N "
                                        "train_propagation.py ...")
    parser.add_argument("--benchmark", action="store_true", help="enable cudnn.benchmark")
    g = parser.add_argument_group("data")
    g.add_argument("--static_root", default="../static", help="static image sets (stage 0)")
    g.add_argument("--bl_root", default="../BL30K", help="BL30K root (stage 1)")
    g.add_argument("--yv_root", default="../YouTube", help="YouTube-VOS root (stage 2 reads <root>/train_480p)")
    g.add_argument("--davis_root", default="../DAVIS", help="DAVIS root (stage 2 reads <root>/2017/trainval)")
    g.add_argument("--yv_subset", default=None,
                   help="text file of YouTube-VOS training videos to use (one per line; the original's "
                        "util/yv_subset.txt); default: every video of train_480p")
    g.add_argument("--stage", type=int, default=0, choices=(0, 1, 2),
                   help="0: static images, 1: BL30K, 2: DAVIS 2017 train + YouTube-VOS")
    g.add_argument("--crop_size", type=int, default=384, help="training crop (the original: 384)")
    parser.add_argument("--imagenet", default=str(SAVES / IMAGENET_RESNET50_FILE), metavar="PATH|none",
                        help="ImageNet ResNet-50 both encoders start from, as in the original (fetch it with "
                             "`python download_model.py --pretrained`); 'none': random initialisation, with "
                             "BatchNorm statistics updated while training (frozen statistics, the original's "
                             "choice, only suit pretrained encoders). Not read with --load_network/--load_model")
    add_common_training_options(parser, batch_size=None, lr=1e-5, report_interval=100, image_interval=800,
                                save_interval=50000)
    return parser


def parse_propagation_args(argv: Sequence[str] | None = None) -> HyperParameters:
    args: dict[str, Any] = vars(propagation_parser().parse_args(argv))
    for key, value in PROPAGATION_STAGE_DEFAULTS[args["stage"]].items():
        if args[key] is None:
            args[key] = list(value) if isinstance(value, list) else value
    if args["debug"]:
        args["report_interval"] = args["image_interval"] = 1
    return HyperParameters(args)


# -------------------------------------------------------------------------------------------- S2M
def s2m_parser() -> ArgumentParser:
    parser = ArgumentParser(description="Train the scribble-to-mask (S2M) module on static images + LVIS. "
                                        "Multi-GPU: torchrun --nproc_per_node=N train_s2m.py ...")
    g = parser.add_argument_group("data")
    g.add_argument("--static_root", default="../static", help="static image sets")
    g.add_argument("--lvis_root", default="../lvis", help="LVIS root (lvis_v1_train.json + train2017/)")
    g.add_argument("--crop_size", type=int, default=480, help="training crop (the original: 480)")
    parser.add_argument("--load_deeplab", help="DeepLabV3+ ResNet-50 checkpoint (VainF, ['model_state']) to start "
                                               "from; its 3-channel stem is extended to 6 channels")
    add_common_training_options(parser, batch_size=16, lr=1e-4, report_interval=50, image_interval=800,
                                save_interval=20000)
    return parser


def parse_s2m_args(argv: Sequence[str] | None = None) -> HyperParameters:
    args: dict[str, Any] = vars(s2m_parser().parse_args(argv))
    if args["iterations"] is None:
        args["iterations"] = 80000
    if args["steps"] is None:
        args["steps"] = []
    if args["debug"]:
        args["report_interval"] = args["image_interval"] = 1
    return HyperParameters(args)
