"""``vtc demo``: serve the comparison page (see :mod:`vtc.demo.app`).

vtc demo [--model ID_OR_PATH] [--host 127.0.0.1] [--port 7860] [--share] [--max-frames 32]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from vtc.demo.app import DEFAULT_MODEL, INSTALL_HINT, MAX_FRAMES


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vtc demo",
        description="A local web page comparing visual-token compressors side by side on an image or a video.",
    )
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"embedded model name, hub id or local folder (default: {DEFAULT_MODEL}, works offline)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port (default: 7860)")
    p.add_argument("--share", action="store_true", help="also open a public Gradio share link (off by default)")
    p.add_argument("--max-frames", type=int, default=MAX_FRAMES,
                   help=f"most frames sampled from a video (default: {MAX_FRAMES})")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.max_frames < 1:
        print(f"vtc demo: error: --max-frames: expected >= 1, got {args.max_frames}", file=sys.stderr)
        return 2
    from vtc.demo.app import build_app, import_gradio, launch

    try:
        import_gradio()
    except ImportError:
        print(f"vtc demo: error: {INSTALL_HINT}", file=sys.stderr)
        return 2
    print(f"vtc demo: loading {args.model} ...", file=sys.stderr)
    try:
        demo = build_app(args.model, max_frames=args.max_frames, preload=True)
    except ValueError as err:
        print(f"vtc demo: error: {err}", file=sys.stderr)
        return 2
    if args.share:
        print("vtc demo: --share: the page will be reachable by anyone with the public link", file=sys.stderr)
    launch(demo, args.host, args.port, args.share)
    return 0


if __name__ == "__main__":
    sys.exit(main())
