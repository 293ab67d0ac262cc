#!/usr/bin/env python
"""Assemble the PESTalk Gradio Space and upload it to the Hugging Face Hub.

    python hub_scripts/push_space.py --repo-id USER/pestalk            # assemble + upload
    python hub_scripts/push_space.py --dry-run --output build/space    # assemble only
    python hub_scripts/push_space.py --repo-id USER/pestalk --model USER/pestalk-model

The folder it writes is what the Hub runs, unchanged: ``space/`` (app.py, README.md with the Spaces
YAML header, requirements.txt, packages.txt) plus the ``pestalk_hf`` package copied next to
``app.py`` (``modeling/`` becomes ``pestalk_hf/modeling``, as the installed package lays it out),
so the Space runs exactly this checkout's code without a package release.

Which model the Space serves (``--model``):
* omitted: the package's embedded default model (``pestalk_hf/default_model``), copied with the package;
* a local folder: copied into the Space as its embedded default model;
* a Hub id: set as the Space variable ``PESTALK_MODEL`` (downloaded by the Space at start).

``--pestalk-requirement "pestalk-hf @ git+https://…"`` installs the package from that spec instead
of copying it (the embedded default model then comes from that install).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPACE_FILES = ("app.py", "README.md", "requirements.txt", "packages.txt")
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache", ".ipynb_checkpoints")
MODEL_FILES = ("config.json", "model.safetensors")


def assemble_space(output: str | Path, model: str | None = None, pestalk_requirement: str | None = None,
                   root: str | Path = ROOT) -> Path:
    """Write the Space folder into ``output`` (emptied first); returns its path.

    Raises:
        ValueError: ``output`` is inside the project's source folders, a Space file is missing, or
            no model can be embedded (``--model`` not given and the default model not trained yet).
    """
    root, out = Path(root).resolve(), Path(output).resolve()
    for source in (root / "space", root / "pestalk_hf", root / "modeling"):
        if out == source or source in out.parents:
            raise ValueError(f"--output {out} must not be inside {source}")
    missing = [name for name in SPACE_FILES if not (root / "space" / name).is_file()]
    if missing:
        raise ValueError(f"space/ lacks {', '.join(missing)}")
    local_model = Path(model) if model and Path(model).is_dir() else None
    if model and local_model is None and (model.startswith((".", "/", "~")) or model.count("/") != 1):
        raise ValueError(f"--model {model!r} is neither a local folder nor a Hub id (namespace/name)")
    if local_model is not None:
        _check_model_folder(local_model)
    elif model is None and pestalk_requirement is None:
        _check_model_folder(root / "pestalk_hf" / "default_model",
                            hint="train it first (hub_scripts/train.py) or pass --model")

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for name in SPACE_FILES:
        shutil.copy2(root / "space" / name, out / name)
    if pestalk_requirement is None:
        package = out / "pestalk_hf"
        shutil.copytree(root / "pestalk_hf", package, ignore=IGNORED)
        shutil.copytree(root / "modeling", package / "modeling", ignore=IGNORED)
        if local_model is not None:
            shutil.rmtree(package / "default_model", ignore_errors=True)
            shutil.copytree(local_model, package / "default_model", ignore=IGNORED)
    else:
        with (out / "requirements.txt").open("a") as handle:
            handle.write(f"{pestalk_requirement}\n")
    return out


def _check_model_folder(folder: Path, hint: str = "") -> None:
    absent = [name for name in MODEL_FILES if not (folder / name).is_file()]
    if absent:
        raise ValueError(f"model folder {folder} lacks {', '.join(absent)}" + (f": {hint}" if hint else ""))


def push_space(folder: str | Path, repo_id: str, model: str | None = None, private: bool = False,
               token: str | None = None) -> str:
    """Create (if needed) the Gradio Space ``repo_id`` and upload ``folder``; returns the Space URL."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
    if model and not Path(model).is_dir():
        api.add_space_variable(repo_id, "PESTALK_MODEL", model)
    api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="space",
                      commit_message="Update the PESTalk Space", delete_patterns=["pestalk_hf/**"])
    return f"https://huggingface.co/spaces/{repo_id}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo-id", help="Space to create/update, e.g. USER/pestalk (not needed with --dry-run)")
    parser.add_argument("--output", help="where to assemble the Space (default: a temporary folder; "
                                         "kept with --dry-run)")
    parser.add_argument("--model", help="local model folder to embed, or Hub id to serve (default: the "
                                        "package's embedded default model)")
    parser.add_argument("--pestalk-requirement", help="install pestalk-hf from this pip spec instead of copying it")
    parser.add_argument("--private", action="store_true", help="create the Space private")
    parser.add_argument("--dry-run", action="store_true", help="only write the folder, upload nothing")
    args = parser.parse_args(argv)
    if not args.dry_run and not args.repo_id:
        parser.error("--repo-id is required unless --dry-run")
    if args.dry_run and not args.output:
        parser.error("--dry-run needs --output (the folder to write)")
    output = Path(args.output) if args.output else Path(tempfile.mkdtemp(prefix="pestalk_space_")) / "space"
    try:
        folder = assemble_space(output, model=args.model, pestalk_requirement=args.pestalk_requirement)
    except ValueError as error:
        parser.error(str(error))
    if args.dry_run:
        note = f" (would set the Space variable PESTALK_MODEL={args.model})" if args.model and not Path(
            args.model).is_dir() else ""
        print(f"Space assembled in {folder}{note}; run it with: cd {folder} && python app.py")
        return 0
    try:
        url = push_space(folder, args.repo_id, model=args.model, private=args.private)
    finally:
        if not args.output:
            shutil.rmtree(folder.parent, ignore_errors=True)
    print(f"Space uploaded: {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
