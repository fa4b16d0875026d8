"""MkDocs hooks for the docs site (mkdocs.yml names this file).

- The command-line reference: mkdocs-click renders `lgprune_docs:lgprune`, the click command
  Typer builds from lgprune's own app (`typer.main.get_command`).
- The benchmark plots: served from benchmarks/results/, where `python -m benchmarks` writes
  them, never copied into docs/.
- The version in the site's title: the package's own.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer
from mkdocs.structure.files import File, Files

from lgprune import __version__
from lgprune.cli import app

RESULTS = Path(__file__).resolve().parent.parent / "benchmarks" / "results"

lgprune = typer.main.get_command(app)
sys.modules["lgprune_docs"] = sys.modules[__name__]  # the module mkdocs-click imports


def on_config(config: Any) -> Any:
    config.site_name = f"lgprune {__version__}"
    return config


def on_files(files: Files, config: Any) -> Files:
    for plot in sorted(RESULTS.glob("*.png")):
        files.append(File.generated(config, f"benchmarks/{plot.name}", abs_src_path=str(plot)))
    return files
