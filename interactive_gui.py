"""MiVOS interactive annotation GUI.

    python interactive_gui.py --video example/example.mp4
    python interactive_gui.py --images path/to/frames --num_objects 2 --workspace workspace/mine

Every option of the original plus ``--device auto|cpu|cuda|cuda:N`` and ``--workspace DIR``
(``python interactive_gui.py -h``). Bad input (a missing weights file, frame folder or video, a bad
number, an unwritable workspace) is reported in one line before the window opens; an unreadable video
or an empty or mixed-size image folder also in a dialog when a display is available. The program then
exits with status 2.
"""
from __future__ import annotations

import os
import sys

import cv2  # noqa: F401  (headless build: imported before Qt, it must not bring its own Qt plugins)


def _avoid_opencv_qt_plugin_clash() -> None:
    """A non-headless opencv-python points Qt at its own plugin folder, which breaks PyQt5 ("could not
    load the Qt platform plugin xcb"). Drop that setting if it came from OpenCV."""
    path = os.environ.get("QT_QPA_PLATFORM_PLUGIN_PATH", "")
    if "cv2" in path:
        del os.environ["QT_QPA_PLATFORM_PLUGIN_PATH"]


def validate_args(args, default_video: str) -> None:
    """The argument checks that need no network or Qt (``util.cli`` validators; raise ``CliError``)."""
    from util import cli
    if args.num_objects is not None:
        cli.positive_int("--num_objects", args.num_objects)
    cli.positive_int("--mem_freq", args.mem_freq)
    cli.int_in_range("--mem_profile", args.mem_profile, 0, 3, "0 is fastest, 3 uses the least GPU memory")
    cli.resolution("--resolution", args.resolution)
    cli.positive_int("--cache_frames", args.cache_frames)
    if args.images:
        cli.input_dir("--images", args.images, "frame folder", "pass a folder of .jpg/.png frames")
    elif args.video == default_video and not os.path.exists(args.video):
        raise cli.CliError("--video", args.video, "the example clip is missing",
                           "run `python download_model.py` (it fetches it) or pass --video FILE / --images FOLDER")
    else:
        cli.input_file("--video", args.video, "video", "pass an existing video or --images FOLDER")
    if args.masks:
        cli.input_dir("--masks", args.masks, "mask folder", "pass a folder of palette PNGs")
    # (the weights are checked when the session loads them, after the frames: a bad video is named first)
    if args.device not in (None, "auto"):
        cli.device("--device", args.device)
    if args.workspace:
        inputs = {"--images": args.images, "--video": None if args.images else args.video, "--masks": args.masks}
        cli.output_dir("--workspace", args.workspace, inputs)


def main(argv: list[str] | None = None) -> int:
    from gui.session import SessionError, build_parser, first_line, open_session
    from util import cli
    from util.checkpoint import CheckpointError
    from util.video_io import FrameSourceError

    parser = cli.one_line_errors(build_parser())
    args = parser.parse_args(argv)
    try:
        validate_args(args, parser.get_default("video"))
    except cli.CliError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    _avoid_opencv_qt_plugin_clash()

    import torch
    torch.set_grad_enabled(False)
    from PyQt5.QtGui import QGuiApplication
    from PyQt5.QtWidgets import QApplication, QMessageBox

    app = QApplication.instance() or QApplication(sys.argv[:1])
    interactive = QGuiApplication.platformName() not in ("offscreen", "minimal")
    try:
        controller = open_session(args, log=lambda line: print(line, flush=True))
    except (CheckpointError, FrameSourceError, SessionError, ValueError, OSError) as e:
        msg = f"error: {first_line(e)}"
        print(msg, file=sys.stderr, flush=True)
        if interactive:
            QMessageBox.critical(None, "MiVOS", msg)
        return 2
    notice = getattr(getattr(controller, "frames", None), "notice", None)
    if notice:   # e.g. a truncated video: how many frames decoded of how many the file claims
        print(f"warning: {notice}", file=sys.stderr, flush=True)

    from gui.main_window import MainWindow
    window = MainWindow(controller)
    window.show()
    return app.exec_()


if __name__ == "__main__":
    sys.exit(main())
