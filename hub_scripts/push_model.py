#!/usr/bin/env python
"""Prepare a trained model folder for the Hub and (optionally) push it.

    python hub_scripts/push_model.py runs/default/final --repo-id org/pestalk-small [--dry-run OUT]

Writes config + safetensors + the modeling files (trust_remote_code) + the pipeline entry, then uploads.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from pestalk_hf import PESTalkModel
from pestalk_hf.hub import push_model, save_for_hub


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="trained model folder")
    parser.add_argument("--repo-id", help="Hub repo to push to")
    parser.add_argument("--model-card", default="MODEL_CARD.md", help="copied as README.md when it exists")
    parser.add_argument("--dry-run", metavar="OUT", help="only write the prepared folder to OUT")
    parser.add_argument("--private", action="store_true")
    args = parser.parse_args()
    if not args.dry_run and not args.repo_id:
        parser.error("give --repo-id (or --dry-run OUT)")
    out = Path(args.dry_run) if args.dry_run else Path(tempfile.mkdtemp(prefix="pestalk-push-"))
    save_for_hub(PESTalkModel.from_pretrained(args.model), out)
    if Path(args.model_card).exists():
        shutil.copy(args.model_card, out / "README.md")
    if args.dry_run:
        print(f"wrote {out}")
        return
    print(push_model(out, args.repo_id, private=args.private))


if __name__ == "__main__":
    main()
