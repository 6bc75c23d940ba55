"""Image files under a folder or inside a zip, addressed by POSIX relative path, in sorted order."""
from __future__ import annotations

import hashlib
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from .errors import CorruptDataError
from .images import IMAGE_EXTENSIONS


def is_image_name(name: str) -> bool:
    """True for image files, skipping hidden files and macOS resource forks."""
    path = PurePosixPath(name)
    if any(part.startswith(".") or part == "__MACOSX" for part in path.parts):
        return False
    return path.suffix.lower() in IMAGE_EXTENSIONS


class ImageTree:
    """A folder or a ``.zip`` of image files. Use as a context manager so the zip gets closed."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.is_zip = self.path.is_file()
        self._zip: zipfile.ZipFile | None = None
        self._names: list[str] | None = None

    def __enter__(self) -> "ImageTree":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
            self._zip = None

    def _archive(self) -> zipfile.ZipFile:
        if self._zip is None:
            try:
                self._zip = zipfile.ZipFile(self.path)
            except (zipfile.BadZipFile, OSError, EOFError) as exc:
                raise CorruptDataError(
                    f"{self.path} is not a readable zip ({exc}); it may be truncated. Copy or download it again.",
                    str(self.path),
                ) from exc
        return self._zip

    def names(self) -> list[str]:
        """Sorted relative paths of every image file (any depth)."""
        if self._names is None:
            if self.is_zip:
                found = [i.filename for i in self._archive().infolist() if not i.is_dir()]
            else:
                found = [p.relative_to(self.path).as_posix() for p in self.path.rglob("*") if p.is_file()]
            self._names = sorted(n for n in found if is_image_name(n))
        return self._names

    def where(self, name: str) -> str:
        """How to name one file in messages and manifests."""
        return f"{self.path}!{name}" if self.is_zip else str(self.path / name)

    def read(self, name: str) -> bytes:
        """Bytes of one file; a bad CRC or unreadable file raises CorruptDataError naming it."""
        try:
            if self.is_zip:
                return self._archive().read(name)
            return (self.path / name).read_bytes()
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
            raise CorruptDataError(f"cannot read {self.where(name)}: {exc}", self.where(name)) from exc

    def find_file(self, basename: str) -> bytes | None:
        """Bytes of the shallowest non-image file called ``basename`` (e.g. a partition list), or None."""
        if self.is_zip:
            matches = [i.filename for i in self._archive().infolist() if PurePosixPath(i.filename).name == basename]
        else:
            matches = [p.relative_to(self.path).as_posix() for p in self.path.rglob(basename) if p.is_file()]
        if not matches:
            return None
        return self.read(min(matches, key=lambda n: (n.count("/"), n)))

    def content_hash(self) -> str:
        """A hash of the image files' names and contents.

        For a zip this uses the CRC-32 and size each member already carries (no decompression); for a folder
        it hashes every file's bytes.
        """
        digest = hashlib.sha256()
        if self.is_zip:
            infos = {i.filename: i for i in self._archive().infolist()}
            for name in self.names():
                digest.update(f"{name}\0{infos[name].CRC:08x}\0{infos[name].file_size}\n".encode())
        else:
            for name in self.names():
                digest.update(f"{name}\0{hashlib.sha256(self.read(name)).hexdigest()}\n".encode())
        return digest.hexdigest()
