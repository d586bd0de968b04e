"""Read the images out of a request: a raw image body, or multipart/form-data `file` parts."""

from __future__ import annotations

from starlette.datastructures import UploadFile
from starlette.requests import Request

from .errors import ServiceError

RAW_IMAGE_TYPES = frozenset(
    {
        "image/jpeg",
        "image/jpg",
        "image/pjpeg",
        "image/png",
        "image/webp",
        "image/bmp",
        "image/x-ms-bmp",
        "image/gif",
        "image/tiff",
        # Clients that cannot name the type; the decoder sniffs the format and enforces the whitelist.
        "application/octet-stream",
    }
)
MULTIPART = "multipart/form-data"
FILE_FIELD = "file"

# The request body as OpenAPI describes it, so /docs offers an upload button.
OPENAPI_IMAGE_BODY = {
    "requestBody": {
        "required": True,
        "description": "One image as the raw body, or one or more `file` parts in multipart/form-data.",
        "content": {
            **{
                media: {"schema": {"type": "string", "format": "binary"}}
                for media in ("image/jpeg", "image/png", "image/webp", "image/bmp", "image/gif", "image/tiff")
            },
            MULTIPART: {
                "schema": {
                    "type": "object",
                    "properties": {FILE_FIELD: {"type": "array", "items": {"type": "string", "format": "binary"}}},
                    "required": [FILE_FIELD],
                }
            },
        },
    }
}


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def read_images(request: Request, max_images: int) -> list[bytes]:
    media = media_type(request)
    if media == MULTIPART:
        return await _read_multipart(request, max_images)
    if media in RAW_IMAGE_TYPES:
        return [await request.body()]
    raise ServiceError(
        415,
        f"Content-Type {media or '(none)'!r} is not accepted; send the image as image/jpeg, image/png, "
        "image/webp, image/bmp, image/gif or image/tiff, or as multipart/form-data with `file` parts",
    )


async def _read_multipart(request: Request, max_images: int) -> list[bytes]:
    async with request.form(max_files=max_images, max_fields=max_images + 16) as form:
        files = [value for key, value in form.multi_items() if key == FILE_FIELD and isinstance(value, UploadFile)]
        if not files:
            others = sorted({key for key, _ in form.multi_items()})
            raise ServiceError(
                400,
                f"multipart body has no {FILE_FIELD!r} part" + (f" (found: {', '.join(others)})" if others else ""),
                code="missing_file",
            )
        return [await upload.read() for upload in files]
