"""Reading one image file: the one place an unreadable file becomes one sentence (PIL only, so a
data source that needs nothing else from torchvision does not pay for importing it)."""

from __future__ import annotations

from PIL import Image

from fastlight.errors import DataError


def read_image(path, mode: str = "RGB", draft: int | None = None,
               advice: str = "; remove it from the folder") -> Image.Image:
    """`path` decoded in `mode`; `draft`: a JPEG may decode at a reduced scale that still covers
    `draft` px (much faster for large photos). A file PIL can't read: one sentence (DataError)."""
    try:
        with Image.open(path) as img:
            if draft:
                img.draft(mode, (draft, draft))
            return img.convert(mode)
    except OSError as e:
        raise DataError(f"{path} cannot be read as an image ({e}){advice}") from None
