"""The real photos that kmsr's benchmark pools are estimated from, copied into one folder.

None of them is in a test set: nine of scikit-image's CC0 photos, the real LR photos of RealSRSet
(drawings, slides and synthetic patterns left out) and, with ``--bsd-every N``, every Nth BSD200
training image. Used by ``table1.sh`` and ``real_models.sh``:

    python benchmarks/pool_photos.py DEST [--shared ../shared/data] [--bsd-every 10]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kmsr_cli.sample_data import export_cc0  # noqa: E402

CC0 = ("astronaut", "coffee", "rocket", "chelsea", "camera", "brick", "grass", "gravel", "immunohistochemistry")
NOT_PHOTOS = ("comic", "ppt", "pattern", "computer")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dest", type=Path)
    ap.add_argument("--shared", type=Path, default=Path("../shared/data"))
    ap.add_argument("--bsd-every", type=int, default=0, help="also every Nth BSD200 image (0: none)")
    args = ap.parse_args(argv)
    args.dest.mkdir(parents=True, exist_ok=True)
    export_cc0(args.dest, CC0)
    for f in sorted((args.shared / "real" / "RealSRSet").glob("*.png")):
        if not f.name.startswith(NOT_PHOTOS):
            shutil.copy(f, args.dest / f"real_{f.name}")
    if args.bsd_every:
        for f in sorted((args.shared / "sr" / "BSD200").glob("*.png"))[:: args.bsd_every]:
            shutil.copy(f, args.dest / f"bsd_{f.name}")
    print(f"{sum(1 for _ in args.dest.iterdir())} photos in {args.dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
