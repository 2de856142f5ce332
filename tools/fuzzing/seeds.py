"""The seeds: every `.dl` file of the repository and every ```dl example of the guides.

Mutants must keep their imports working, so each worker gets a private copy (a "mirror") of the
folders the seeds live in; a mutant is written beside its seed's copy, and `import "..."` resolves
exactly as it does for the seed. Examples from the markdown guides become files in examples/ of
the mirror, where examples/language.dl (the contract's examples, extracted) already lives.
"""
from __future__ import annotations

import glob
import os
import re
import shutil
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FOLDERS = ("specs", "examples", "tests/ui", "docs/contract")    # copied whole: imports and data stay relative
# guide -> (seed name prefix, imports that its examples' other names come from, as test_docs gives them)
GUIDES = {"docs/contract/LANGUAGE.md": ("contract", ""),
          "docs/language.md": ("guide", 'import "../specs/mlp.dl"\nimport "../specs/gan.dl"\n')}
MUTANT_NAME = "_fuzz_mutant.dl"


@dataclass(frozen=True)
class Seed:
    path: str    # relative to the repository (and to a mirror)
    text: str

    @property
    def folder(self) -> str:
        return os.path.dirname(self.path)


def file_seeds(root: str = ROOT) -> list[Seed]:
    """Every .dl file under the seed folders, in a stable order."""
    out = []
    for folder in FOLDERS:
        for path in sorted(glob.glob(os.path.join(root, folder, "**", "*.dl"), recursive=True)):
            with open(path, "rb") as f:
                text = f.read().decode("utf-8", "surrogateescape")
            out.append(Seed(os.path.relpath(path, root), text))
    return out


def guide_seeds(root: str = ROOT) -> list[Seed]:
    """The ```dl examples of the guides, one seed each, as files of examples/ (so that the
    contract's `import "../specs/mlp.dl"` resolves); the guide's examples use models of specs/."""
    out = []
    for guide, (stem, imports) in GUIDES.items():
        with open(os.path.join(root, guide), encoding="utf-8") as f:
            blocks = re.findall(r"```dl\n(.*?)```", f.read(), re.S)
        out += [Seed(f"examples/_{stem}_{i:02d}.dl", imports + block) for i, block in enumerate(blocks)]
    return out


def all_seeds(root: str = ROOT) -> list[Seed]:
    return file_seeds(root) + guide_seeds(root)


def make_mirror(dest: str, seeds: list[Seed], root: str = ROOT) -> str:
    """Copy the seed folders to `dest` and write the guide seeds there; returns `dest`."""
    for folder in FOLDERS:
        shutil.copytree(os.path.join(root, folder), os.path.join(dest, folder), dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.png", "*.svg"))
    for seed in seeds:
        path = os.path.join(dest, seed.path)
        if not os.path.exists(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(seed.text.encode("utf-8", "surrogateescape"))
    return dest
