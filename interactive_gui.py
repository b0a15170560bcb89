"""MiVOS interactive annotation GUI.

    python interactive_gui.py --video example/example.mp4
    python interactive_gui.py --images path/to/frames --num_objects 2 --workspace workspace/mine

Every option of the original plus ``--device auto|cpu|cuda`` and ``--workspace DIR``
(``python interactive_gui.py -h``). Bad input (missing weights, an unreadable video, an empty or
mixed-size image folder) is reported in one line (and a dialog when a display is available) and the
program exits with status 1.
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


def main(argv: list[str] | None = None) -> int:
    from gui.session import SessionError, build_parser, first_line, open_session
    from util.checkpoint import CheckpointError
    from util.video_io import FrameSourceError

    args = build_parser().parse_args(argv)
    _avoid_opencv_qt_plugin_clash()

    import torch
    torch.set_grad_enabled(False)
    from PyQt5.QtGui import QGuiApplication
    from PyQt5.QtWidgets import QApplication, QMessageBox

    app = QApplication.instance() or QApplication(sys.argv[:1])
    interactive = QGuiApplication.platformName() not in ("offscreen", "minimal")
    try:
        controller = open_session(args, log=lambda line: print(line, flush=True))
    except (CheckpointError, FrameSourceError, SessionError, OSError) as e:
        msg = f"error: {first_line(e)}"
        print(msg, file=sys.stderr, flush=True)
        if interactive:
            QMessageBox.critical(None, "MiVOS", msg)
        return 1

    from gui.main_window import MainWindow
    window = MainWindow(controller)
    window.show()
    return app.exec_()


if __name__ == "__main__":
    sys.exit(main())
