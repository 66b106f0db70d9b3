"""Maps the top-level folders onto the single ``minmo_lightning`` namespace (see DESIGN.md, Layout)."""

from pathlib import Path

from setuptools import setup

ROOTS = {
    "minmo_lightning": "minmo_lightning",
    "minmo_lightning.components": "components",
    "minmo_lightning.datamodules": "datamodules",
    "minmo_lightning.evaluation": "evaluation",
    "minmo_lightning.recipes": "recipes",
}


def find_packages_under(roots: dict[str, str]) -> list[str]:
    packages = []
    for package, folder in roots.items():
        for init in sorted(Path(folder).rglob("__init__.py")):
            relative = init.parent.relative_to(folder).parts
            packages.append(".".join((package, *relative)))
    return packages


setup(packages=find_packages_under(ROOTS), package_dir=ROOTS)
