"""Checking the structure of a MAT v5 file before ``scipy.io`` parses it.

scipy's compiled MAT v5 reader trusts the file: a data element whose type code is not one it knows, or an
array flagged complex without an imaginary part, makes it read out of bounds and crash the process
(segmentation fault, no message). `check_v5` walks the file first, reading only the element tags (and the few
small values that give sizes), and raises `CubeReadError` at the first element that does not fit:

- the 128-byte header, then top-level elements that are ``miMATRIX`` or ``miCOMPRESSED`` (the latter
  decompressed as a stream, in bounded pieces, and checked the same way) and fit in the file;
- for each ``miMATRIX``: the array-flags, dimensions and name sub-elements with their expected types, then the
  contents its class implies: numeric real (and, when flagged complex, imaginary) parts whose byte count is
  the number of elements times the size of their storage type; characters; the cells and fields of cell
  arrays, structs and objects (recursively, to `MAX_DEPTH`); the index and value parts of sparse arrays.

Function handles and opaque objects (MATLAB classes 16 and 17) are only checked to fit; they are reported as
not loadable and never handed to scipy. The byte layout is the one of MathWorks' "MAT-File Format" (R2024a)
and of ``scipy/io/matlab/_mio5_utils.pyx``.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from math import prod
from pathlib import Path
from typing import BinaryIO

from hsidenoise.errors import CubeReadError

HEADER_BYTES = 128
MAX_DEPTH = 64
"""Deepest nesting of cells / structs accepted (scipy's reader recurses once per level)."""
MAX_DIMS = 32
"""scipy refuses arrays of more dimensions."""
CHUNK = 1 << 20
"""Bytes decompressed (or read) at a time while skipping over data."""

MI_INT8, MI_INT32, MI_UINT32, MI_MATRIX, MI_COMPRESSED = 1, 5, 6, 14, 15
NUMERIC_ITEMSIZE = {1: 1, 2: 1, 3: 2, 4: 2, 5: 4, 6: 4, 7: 4, 9: 8, 12: 8, 13: 8}
"""Storage type code (miINT8 ... miUINT64) → bytes per element; the only codes scipy can read as numbers."""
TEXT_ITEMSIZE = {**NUMERIC_ITEMSIZE, 16: 1, 17: 2, 18: 4}
"""Storage types scipy accepts for characters (numbers and miUTF8/16/32)."""

CELL, STRUCT, OBJECT, CHAR, SPARSE, FUNCTION, OPAQUE = 1, 2, 3, 4, 5, 16, 17
NUMERIC_CLASSES = frozenset(range(6, 16))
"""mxDOUBLE_CLASS (6) ... mxUINT64_CLASS (15)."""


@dataclass(frozen=True)
class V5Variable:
    """A top-level variable of a MAT v5 file as `check_v5` found it.

    Attributes:
        name: variable name ('' for opaque objects, whose name scipy does not read).
        mclass: MATLAB class code (6 double, 7 single, 4 char, 1 cell, ...).
        dims: MATLAB dimensions (empty for opaque objects).
        loadable: whether scipy may be asked to load it (False for function handles and opaque objects).
    """

    name: str
    mclass: int
    dims: tuple[int, ...]
    loadable: bool


class _Damaged(Exception):
    """Internal: the element at `offset` is not what the format requires."""

    def __init__(self, what: str, offset: int) -> None:
        super().__init__(what)
        self.what, self.offset = what, offset


class _FileSource:
    """Bytes ``[start, start + length)`` of a file, read in order."""

    def __init__(self, file: BinaryIO, start: int, length: int) -> None:
        self._file, self.position, self._end = file, start, start + length
        file.seek(start)

    def read(self, n: int) -> bytes:
        if self.position + n > self._end:
            raise _Damaged(f"an element needs {n} bytes but the file ends first", self.position)
        data = self._file.read(n)
        if len(data) != n:
            raise _Damaged("the file ends inside an element", self.position)
        self.position += n
        return data

    def skip(self, n: int) -> None:
        if self.position + n > self._end:
            raise _Damaged(f"an element declares {n} bytes but the file ends first", self.position)
        self.position += n
        self._file.seek(self.position)


class _ZlibSource:
    """The decompressed bytes of an miCOMPRESSED element, produced in bounded pieces as they are read."""

    def __init__(self, file: BinaryIO, start: int, length: int) -> None:
        self._file, self._left = file, length
        self._offset = start  # where the compressed element starts, for messages
        file.seek(start)
        self._inflate = zlib.decompressobj()
        self._buffer = b""
        self.position = 0  # in decompressed bytes

    def _more(self, want: int) -> bytes:
        while True:
            if self._inflate.unconsumed_tail:
                data = self._inflate.unconsumed_tail
            elif self._left > 0 and not self._inflate.eof:
                data = self._file.read(min(CHUNK, self._left))
                self._left = self._left - len(data) if data else 0
            else:
                return b""
            try:
                out = self._inflate.decompress(data, max(1, min(want, CHUNK)))
            except zlib.error as error:
                raise _Damaged(f"its compressed data is corrupt ({error})", self._offset) from None
            if out:
                return out

    def read(self, n: int) -> bytes:
        while len(self._buffer) < n:
            out = self._more(n - len(self._buffer))
            if not out:
                raise _Damaged(
                    f"its compressed data ends {n - len(self._buffer)} bytes before its contents do",
                    self._offset,
                )
            self._buffer += out
        data, self._buffer = self._buffer[:n], self._buffer[n:]
        self.position += n
        return data

    def skip(self, n: int) -> None:
        while n > 0:
            step = min(n, CHUNK)
            self.read(step)
            n -= step


class _Walker:
    """Reads tags from a source within nested bounds and checks each element against its parent's size."""

    def __init__(self, source: _FileSource | _ZlibSource, order: str, base: int) -> None:
        self.source, self.order = source, order
        self.base = base  # file offset reported for compressed elements (their decompressed positions mean little)

    def where(self) -> int:
        return self.base if isinstance(self.source, _ZlibSource) else self.source.position

    def tag(self, end: int) -> tuple[int, int, bytes | None]:
        """(type, byte count, data of a small element or None); the element must end by `end`."""
        if self.source.position + 8 > end:
            raise _Damaged("an element tag runs past the end of its array", self.where())
        raw = self.source.read(8)
        mdtype, count = struct.unpack(self.order + "II", raw)
        if mdtype >> 16:  # small data element: count in the upper half, data in the tag's last 4 bytes
            count, mdtype = mdtype >> 16, mdtype & 0xFFFF
            if count > 4:
                raise _Damaged(f"a small data element claims {count} bytes (at most 4 fit)", self.where())
            return mdtype, count, raw[4 : 4 + count]
        return mdtype, count, None

    def element(self, end: int, allowed: dict[int, int], what: str, *, read: bool = False) -> tuple[int, int, bytes]:
        """Check one data element of a type in `allowed`; return (type, byte count, data if `read`, else b'')."""
        at = self.where()
        mdtype, count, small = self.tag(end)
        if mdtype not in allowed:
            raise _Damaged(f"the {what} has data type code {mdtype}, which is not a valid MAT type here", at)
        if small is not None:
            return mdtype, count, small
        padded = count + (-count) % 8
        if self.source.position + padded > end:
            raise _Damaged(f"the {what} declares {count} bytes, more than its array holds", at)
        if read:
            data = self.source.read(count)
            self.source.skip(padded - count)
            return mdtype, count, data
        self.source.skip(padded)
        return mdtype, count, b""

    def numbers(self, end: int, allowed: dict[int, int], what: str, expected: int) -> None:
        """An element of `expected` numbers stored in one of the `allowed` types."""
        at = self.where()
        mdtype, count, _ = self.element(end, allowed, what)
        if count != expected * allowed[mdtype]:
            raise _Damaged(
                f"the {what} holds {count} bytes; its dimensions need {expected} values of {allowed[mdtype]} "
                f"byte(s) = {expected * allowed[mdtype]}",
                at,
            )

    def int32s(self, end: int, what: str) -> tuple[int, ...]:
        _, count, data = self.element(end, {MI_INT32: 4}, what, read=True)
        if count % 4:
            raise _Damaged(f"the {what} holds {count} bytes, not a whole number of int32 values", self.where())
        return struct.unpack(f"{self.order}{count // 4}i", data)

    def name(self, end: int, what: str) -> str:
        _, _, data = self.element(end, {MI_INT8: 1}, what, read=True)
        return data.decode("latin-1")

    def matrix(self, end: int, depth: int) -> V5Variable:
        """Check the contents of one miMATRIX element (its tag already read) that ends at `end`."""
        if depth > MAX_DEPTH:
            raise _Damaged(f"cells or structs are nested more than {MAX_DEPTH} deep", self.where())
        at = self.where()
        mdtype, count, _ = self.tag(end)
        if mdtype != MI_UINT32 or count != 8:
            raise _Damaged(f"an array starts with type {mdtype} of {count} bytes, not its 8-byte array flags", at)
        flags, nzmax = struct.unpack(self.order + "II", self.source.read(8))
        mclass, complex_ = flags & 0xFF, bool(flags >> 11 & 1)
        if mclass == OPAQUE:
            self.source.skip(end - self.source.position)
            return V5Variable("", mclass, (), loadable=False)
        dims = self.int32s(end, "dimensions")
        if not 2 <= len(dims) <= MAX_DIMS or min(dims) < 0:
            raise _Damaged(f"an array has dimensions {list(dims)[:8]} (2 to {MAX_DIMS} sizes >= 0 expected)", at)
        name = self.name(end, "array name")
        n = prod(dims)
        loadable = True
        if mclass in NUMERIC_CLASSES:
            self.numbers(end, NUMERIC_ITEMSIZE, f"real part of {name!r}", n)
            if complex_:
                self.numbers(end, NUMERIC_ITEMSIZE, f"imaginary part of {name!r}", n)
        elif mclass == CHAR:
            at = self.where()
            mdtype, count, _ = self.element(end, TEXT_ITEMSIZE, f"text of {name!r}")
            if mdtype != 16 and count != n * TEXT_ITEMSIZE[mdtype]:
                raise _Damaged(f"the text of {name!r} holds {count} bytes for {n} characters", at)
        elif mclass in (CELL, STRUCT, OBJECT):
            if mclass == OBJECT:
                self.name(end, f"class name of {name!r}")
            fields = 1
            if mclass != CELL:
                (length, *rest) = self.int32s(end, f"field name length of {name!r}") or (0,)
                if rest or length < 1:
                    raise _Damaged(f"the field name length of {name!r} is {length} (a positive number expected)", at)
                _, count, _ = self.element(end, {MI_INT8: 1}, f"field names of {name!r}")
                if count % length:
                    raise _Damaged(f"the field names of {name!r} are {count} bytes, not a multiple of {length}", at)
                fields = count // length
            items = n * fields
            if items * 8 > end - self.source.position:
                raise _Damaged(f"{name!r} declares {items} cells or fields, more than its bytes can hold", at)
            for _ in range(items):
                self.nested(end, depth)
        elif mclass == SPARSE:
            if len(dims) != 2:
                raise _Damaged(f"the sparse array {name!r} has {len(dims)} dimensions (2 expected)", at)
            self.element(end, NUMERIC_ITEMSIZE, f"row indices of {name!r}")
            self.numbers(end, NUMERIC_ITEMSIZE, f"column starts of {name!r}", dims[1] + 1)
            self.element(end, NUMERIC_ITEMSIZE, f"values of {name!r}")
            if complex_:
                self.element(end, NUMERIC_ITEMSIZE, f"imaginary values of {name!r}")
        elif mclass == FUNCTION:
            self.source.skip(end - self.source.position)
            loadable = False
        else:
            raise _Damaged(f"array {name!r} has class code {mclass}, which MATLAB does not define", at)
        del nzmax
        return V5Variable(name, mclass, tuple(dims), loadable)

    def nested(self, end: int, depth: int) -> None:
        """One cell or field: an miMATRIX element (empty when its byte count is 0)."""
        at = self.where()
        mdtype, count, small = self.tag(end)
        if mdtype != MI_MATRIX or small is not None:
            raise _Damaged(f"a cell or field has data type code {mdtype}, not an array (14)", at)
        stop = self.source.position + count
        if stop > end:
            raise _Damaged(f"a cell or field declares {count} bytes, more than its parent holds", at)
        if count:
            self.matrix(stop, depth + 1)
            self.source.skip(stop - self.source.position)


def check_v5(path: Path) -> list[V5Variable]:
    """Walk every top-level element of the MAT v5 file `path`; return its variables in file order.

    Raises:
        CubeReadError: the file is shorter than its header, or an element does not fit the format or the file
            (the message names the byte offset and what was found there).
    """
    try:
        with open(path, "rb") as file:
            size = file.seek(0, 2)
            file.seek(0)
            header = file.read(HEADER_BYTES)
            return _walk(file, size, header)
    except _Damaged as damage:
        raise CubeReadError(
            f"{path} is a damaged MAT v5 file: at byte {damage.offset}, {damage.what}; re-save or re-copy it"
        ) from None
    except OSError as error:
        raise CubeReadError(f"cannot read {path}: {error}") from error


def _walk(file: BinaryIO, size: int, header: bytes) -> list[V5Variable]:
    if len(header) < HEADER_BYTES:
        raise _Damaged(f"the file has {len(header)} bytes, fewer than the {HEADER_BYTES}-byte header", 0)
    endian = header[126:128]
    if endian not in (b"IM", b"MI"):
        raise _Damaged(f"the endian indicator is {endian!r} (b'IM' or b'MI' expected)", 126)
    order = "<" if endian == b"IM" else ">"
    variables: list[V5Variable] = []
    position = HEADER_BYTES
    while position < size:
        if size - position < 8:
            raise _Damaged(f"{size - position} stray byte(s) follow the last variable", position)
        file.seek(position)
        mdtype, count = struct.unpack(order + "II", file.read(8))
        stop = position + 8 + count
        if mdtype not in (MI_MATRIX, MI_COMPRESSED) or count == 0:
            raise _Damaged(
                f"a variable has data type code {mdtype} and {count} bytes (a non-empty array (14) or "
                "compressed array (15) expected)",
                position,
            )
        if stop > size:
            raise _Damaged(f"a variable declares {count} bytes but only {size - position - 8} remain", position)
        if mdtype == MI_MATRIX:
            walker = _Walker(_FileSource(file, position + 8, count), order, position)
            variables.append(walker.matrix(stop, 0))
        else:
            walker = _Walker(_ZlibSource(file, position + 8, count), order, position)
            inner, length, small = walker.tag(1 << 62)
            if inner != MI_MATRIX or small is not None or length == 0:
                raise _Damaged(f"a compressed variable holds data type code {inner}, not an array (14)", position)
            variables.append(walker.matrix(walker.source.position + length, 0))
        position = stop
    return variables
