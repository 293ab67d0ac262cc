#!/usr/bin/env python
"""Contact sheet of avatars: rest, jaw open, tongue, blink, smile, every viseme group and the 8 emotions.

    python hub_scripts/contact_sheet.py -o /tmp/contact_sheet.png
    python hub_scripts/contact_sheet.py -o sheet.png --avatar my_head.glb --tile 320

Draws our default head, then facecap (``../shared/assets/avatars/facecap.glb``, skipped with a
note if absent), then every ``--avatar``, one band each (logic: :mod:`pestalk_hf.avatar.contact_sheet`).
Exit codes: 0 = written; 2 = a ``--avatar`` could not be loaded.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

FACECAP = Path(__file__).resolve().parents[1].parent / "shared" / "assets" / "avatars" / "facecap.glb"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output", "-o", type=Path, required=True, help="PNG to write")
    p.add_argument("--avatar", type=Path, action="append", default=[], help="another ARKit GLB/glTF (repeatable)")
    p.add_argument("--facecap", type=Path, default=FACECAP, help="facecap.glb (skipped if missing)")
    p.add_argument("--tile", type=int, default=256, help="tile size in pixels")
    p.add_argument("--columns", type=int, default=11)
    args = p.parse_args(argv)

    from PIL import Image

    from pestalk_hf.avatar import default_avatar, load_avatar
    from pestalk_hf.avatar.contact_sheet import contact_sheet
    from pestalk_hf.exporters import atomic_path

    avatars = [default_avatar()]
    if args.facecap.is_file():
        avatars.append(load_avatar(args.facecap))
    else:
        print(f"facecap: skipped ({args.facecap} not found)")
    for path in args.avatar:
        try:
            avatars.append(load_avatar(path, external_files=True))
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    image = contact_sheet(avatars, tile=args.tile, columns=args.columns)
    with atomic_path(args.output, ".png") as tmp:
        Image.fromarray(image).save(tmp, format="PNG")
    print(f"wrote {args.output} ({image.shape[1]}x{image.shape[0]}, {len(avatars)} avatars)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
