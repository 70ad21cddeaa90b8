"""A multipart/form-data body built by hand (the transport sends bytes): the upload of a batch
file to OpenAI's `POST /files`, with the file's lines joined in place (one copy of them)."""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence

__all__ = ["multipart"]


def multipart(
    fields: Mapping[str, str],
    file_field: str,
    filename: str,
    lines: Sequence[bytes],
    content_type: str = "application/jsonl",
) -> tuple[bytes, str]:
    """(body, Content-Type header) of a form with these text `fields` and one file made of
    `lines`, each ended by a newline. The boundary is random and checked absent from the
    content, as RFC 7578 requires."""
    while True:
        boundary = "starfish-" + secrets.token_hex(16)
        mark = boundary.encode()
        if not any(mark in line for line in lines) and not any(
            boundary in value for value in fields.values()
        ):
            break
    head = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{_quote(name)}"\r\n\r\n'
        f"{value}\r\n".encode()
        for name, value in fields.items()
    )
    file_head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="{_quote(file_field)}"; '
        f'filename="{_quote(filename)}"\r\nContent-Type: {content_type}\r\n\r\n'
    ).encode()
    parts: list[bytes] = [head, file_head]
    for line in lines:
        parts.append(line)
        parts.append(b"\n")
    parts.append(f"\r\n--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def _quote(text: str) -> str:
    """A name or filename inside a quoted header parameter (the WHATWG form encoding)."""
    return text.replace("\r", "%0D").replace("\n", "%0A").replace('"', "%22")
