"""Atomic file writes shared by every part of slimdiar (standard library only).

An output is written to a temporary file in its destination directory and renamed over the
destination, so a reader never sees a half-written file and a crash never leaves one.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def current_umask() -> int:
    """The process umask (read without changing it for longer than a moment)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def make_temporary_dir(parent: str | Path, prefix: str) -> Path:
    """A new directory in ``parent`` with the permissions of a normally created one.

    :func:`tempfile.mkdtemp` creates mode 0700; a directory that is renamed into place as an
    output must look like any other the user creates.
    """
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    os.chmod(path, 0o777 & ~current_umask())
    return path


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temporary file in the same directory, then rename).

    Parameters
    ----------
    path
        Destination file; missing parent directories are created.
    text
        Full content of the file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(tmp_name, 0o666 & ~current_umask())
        os.replace(tmp_name, path)
    except BaseException:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
        raise


def write_json_atomic(path: str | Path, data) -> None:
    """Write ``data`` as indented JSON to ``path`` atomically."""
    write_text_atomic(path, json.dumps(data, indent=1) + "\n")


def output_path_problem(path: str | Path, *, directory: bool) -> str | None:
    """Why ``path`` cannot be written as an output file (or directory); ``None`` when it can.

    Checked before any work starts, so that a long run does not end on an unwritable path: the
    path must not be a directory (a file, for ``directory=True``), its nearest existing ancestor
    must be a directory, and a file can be created there (tried, since permission bits alone
    do not tell for root, for read-only file systems or for network mounts).

    Parameters
    ----------
    path
        The output file or directory as given by the user.
    directory
        Whether ``path`` names a directory (created if missing) rather than a file.
    """
    path = Path(path)
    if directory and path.exists() and not path.is_dir():
        return f"{path}: exists and is not a directory"
    if not directory and path.is_dir():
        return f"{path}: is a directory, expected a file name"
    existing = path if directory and path.is_dir() else path.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{path}: cannot be created, {existing} is a file, not a directory"
    try:
        with tempfile.TemporaryFile(dir=existing, prefix=".slimdiar-probe-"):
            pass
    except OSError as error:
        return f"{path}: cannot write in {existing} ({error.strerror or error})"
    return None


def write_section_atomic(path: str | Path, section: str, begin: str, end: str) -> None:
    """Replace the generated section of a text file, or append it, atomically.

    The section runs from the line holding ``begin`` to the one holding ``end`` (both part of
    ``section``, which ends with a newline); a file without both markers gains it at its end.
    """
    path = Path(path)
    text = path.read_text() if path.exists() else ""
    if begin in text and end in text:
        text = text[: text.index(begin)] + section + text[text.index(end) + len(end) + 1 :]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    write_text_atomic(path, text)


def publish_measurement(
    json_path: str | Path,
    markdown_path: str | Path,
    render: Callable[[dict], str],
    begin: str,
    end: str,
    measure: Callable[[], dict] | None = None,
) -> str:
    """A measurement tool's last step: the JSON, then the Markdown section rendered from it.

    With ``measure`` its result is written to ``json_path`` first; without, the JSON there is
    read (a tool's ``--render-only``). Returns the section, which replaces the one between
    ``begin`` and ``end`` in ``markdown_path``.
    """
    if measure is None:
        data = json.loads(Path(json_path).read_text())
    else:
        data = measure()
        write_text_atomic(json_path, json.dumps(data, indent=1) + "\n")
    section = render(data)
    write_section_atomic(markdown_path, section, begin, end)
    return section


def add_publish_arguments(parser, json_path: Path, markdown_path: Path) -> None:
    """The options of :func:`publish_measurement` on a tool's ``argparse`` parser.

    ``--json`` and ``--out`` (defaults ``json_path`` and ``markdown_path``) and
    ``--render-only``.
    """
    parser.add_argument("--json", type=Path, default=json_path, help="the measurement's JSON")
    parser.add_argument("--out", type=Path, default=markdown_path, help="the page it renders into")
    parser.add_argument(
        "--render-only", action="store_true", help="render the existing JSON, measure nothing"
    )
