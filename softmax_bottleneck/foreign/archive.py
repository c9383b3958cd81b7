"""Reading a ``torch.save`` archive made by another framework without running any of its code.

A torch checkpoint is a zip archive: ``PREFIX/data.pkl`` (a pickle) and ``PREFIX/data/KEY`` (one
raw storage per tensor). torch's safe loader (``weights_only=True``) cannot read pickle protocol 4
at all (pytorch#118092), which is what RecBole writes, and refuses the classes the official
GRU4Rec pickles (its whole model object). Loading either with ``weights_only=False`` runs whatever
the pickle asks for. This module does neither:

- :func:`pickle_globals` lists every ``module.name`` the pickle would import, with ``pickletools``
  (which decodes opcodes and executes nothing);
- :class:`RestrictedUnpickler` resolves only an explicit allow-list: torch's tensor rebuilders,
  ``collections.OrderedDict``, numpy's array reconstructors, and the framework class names a format
  declares, each of which becomes an inert stand-in (:class:`Inert`: it stores its arguments and
  state and has no behaviour). Anything else (``os.system``, ``builtins.eval``, ``subprocess``,
  …) is refused before it is imported, with the name in the message. Tensor storages are read
  from the archive by ``persistent_load`` as plain bytes.
"""

from __future__ import annotations

import codecs
import collections
import io
import pickle
import pickletools
import zipfile
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError

# storage classes a torch pickle names (torch.FloatStorage, …) and the dtype of their bytes
STORAGE_DTYPES = {
    "DoubleStorage": torch.float64, "FloatStorage": torch.float32, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
}
TORCH_FUNCTIONS = {  # what a plain state dict of tensors needs; none of them runs foreign code
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch", "Size"): torch.Size,
    # protocol-2 pickles (the official GRU4Rec's) spell builtins the Python 2 way; bytes travel as codecs.encode(str)
    ("__builtin__", "set"): set, ("builtins", "set"): set,
    ("__builtin__", "slice"): slice, ("builtins", "slice"): slice,
    ("__builtin__", "frozenset"): frozenset, ("builtins", "frozenset"): frozenset,
    ("_codecs", "encode"): codecs.encode,
}
try:  # numpy >= 2 (numpy.core is a deprecated alias there); numpy 1 pickles name numpy.core
    from numpy._core.multiarray import _reconstruct, scalar
except ImportError:  # pragma: no cover - numpy 1
    from numpy.core.multiarray import _reconstruct, scalar
MAX_ARRAY_BYTES = 1 << 30  # an array the pickle asks numpy to allocate: 1 GiB at most (its data is in the pickle)


class NdarrayName:
    """What the pickle gets for ``numpy.ndarray``: a name to hand to ``_reconstruct``, never a constructor.

    numpy pickles an array as ``_reconstruct(numpy.ndarray, (0,), b'b')`` and then sets its state
    from the pickle's own bytes; a crafted pickle could instead call ``numpy.ndarray((1 << 40,))``
    and allocate 8 TiB. Calling this refuses."""

    def __new__(cls, *args, **kwargs):
        raise InputError("refused to load: it calls numpy.ndarray directly, which no supported format does")


def _checked_reconstruct(subtype, shape, dtype):
    """numpy's ``_reconstruct`` for plain arrays of at most MAX_ARRAY_BYTES (it allocates `shape` first)."""
    if subtype is not NdarrayName:
        raise InputError(f"refused to load: _reconstruct of {getattr(subtype, '__name__', subtype)!r}")
    size = int(np.prod(shape, dtype=object)) if isinstance(shape, tuple) else int(shape)
    if size < 0 or size > MAX_ARRAY_BYTES:
        raise InputError(f"refused to load: it asks numpy for an array of {size:,} elements before its data")
    return _reconstruct(np.ndarray, shape, dtype)


NUMPY_FUNCTIONS = {  # numpy arrays and scalars inside a pickle (pandas indexes, id maps, settings): data only
    ("numpy.core.multiarray", "_reconstruct"): _checked_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _checked_reconstruct,
    ("numpy.core.multiarray", "scalar"): scalar,
    ("numpy._core.multiarray", "scalar"): scalar,
    ("numpy", "ndarray"): NdarrayName,
    ("numpy", "dtype"): np.dtype,
}


class Inert:
    """A stand-in for a foreign class: remembers how the pickle built it, and does nothing else.

    ``qualname`` is the foreign ``module.name``; ``args`` what it was called with; ``state`` what
    the pickle's BUILD gave it (usually the object's ``__dict__``)."""

    qualname = "?"

    def __new__(cls, *args, **kwargs):
        obj = object.__new__(cls)
        obj.args, obj.kwargs, obj.state, obj.items = args, kwargs, None, {}
        return obj

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        self.state = state

    def __setitem__(self, key, value):  # SETITEMS on a dict subclass
        self.items[key] = value

    def append(self, value):  # APPENDS on a list subclass
        self.items[len(self.items)] = value

    def extend(self, values):
        for value in values:
            self.append(value)

    def attribute(self, name: str, default=None):
        """A field of the pickled object: from its BUILD state (a dict, or the dict of a (dict, slots) pair)."""
        state = self.state
        if isinstance(state, tuple) and len(state) == 2:
            state = {**(state[0] or {}), **(state[1] or {})}
        return state.get(name, default) if isinstance(state, dict) else default

    def __repr__(self):
        return f"<inert {self.qualname}>"


class InertCall(Inert):
    """A stand-in for a foreign function called by the pickle (REDUCE): its result is this record."""


def inert_class(qualname: str, call: bool = False) -> type:
    return type(qualname.rsplit(".", 1)[-1], (InertCall if call else Inert,), {"qualname": qualname})


def pickle_globals(data: bytes) -> list[str]:
    """Every ``module.name`` the pickle imports (GLOBAL, and STACK_GLOBAL from the strings before it), in
    order of first use. Decodes opcodes only; nothing is imported or run."""
    found: list[str] = []
    recent: list = []  # the values of recent pushes, for STACK_GLOBAL's two operands
    memo: dict = {}
    for opcode, arg, _ in pickletools.genops(data):
        name = opcode.name
        if name == "GLOBAL":
            module, _, attr = arg.partition(" ")
            qualname = f"{module}.{attr}"
        elif name == "STACK_GLOBAL":
            qualname = f"{recent[-2]}.{recent[-1]}" if len(recent) >= 2 else "?.?"
        else:
            if name in ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE"):
                recent.append(arg)
            elif name == "MEMOIZE":
                memo[len(memo)] = recent[-1] if recent else None
            elif name in ("BINPUT", "LONG_BINPUT", "PUT"):
                memo[arg] = recent[-1] if recent else None
            elif name in ("BINGET", "LONG_BINGET", "GET"):
                recent.append(memo.get(arg))
            continue
        if qualname not in found:
            found.append(qualname)
    return found


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles a torch archive's data.pkl: torch/numpy data rebuilders for real, `allowed` names as
    inert stand-ins (`calls`: names the pickle calls as functions), everything else refused."""

    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str, *, allowed=(), calls=(), where: str):
        super().__init__(io.BytesIO(data))
        self.archive, self.prefix, self.where = archive, prefix, where
        self.stand_ins = {name: inert_class(name) for name in allowed}
        self.stand_ins.update({name: inert_class(name, call=True) for name in calls})
        self.storages: dict[str, torch.UntypedStorage] = {}

    def find_class(self, module, name):
        qualname = f"{module}.{name}"
        if (module, name) in TORCH_FUNCTIONS:
            return TORCH_FUNCTIONS[(module, name)]
        if (module, name) in NUMPY_FUNCTIONS:
            return NUMPY_FUNCTIONS[(module, name)]
        if module == "torch" and name in STORAGE_DTYPES:
            return ("storage", STORAGE_DTYPES[name])
        if qualname in self.stand_ins:
            return self.stand_ins[qualname]
        raise InputError(f"{self.where}: refused to load: it asks to import {qualname}, which no supported format "
                         "needs (nothing was run)")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise InputError(f"{self.where}: refused to load: an unknown persistent id {str(pid)[:60]!r}")
        _, storage_type, key, _location, numel = pid
        if isinstance(storage_type, tuple) and storage_type[0] == "storage":
            dtype = storage_type[1]
        elif isinstance(storage_type, torch.dtype):
            dtype = storage_type
        else:
            raise InputError(f"{self.where}: refused to load: storage of type {storage_type!r}")
        itemsize = torch.empty((), dtype=dtype).element_size()
        if not isinstance(numel, int) or numel < 0:
            raise InputError(f"{self.where}: refused to load: storage {key} has {numel!r} elements")
        if key not in self.storages:
            self.storages[key] = self._read_storage(str(key), numel * itemsize)
        storage = self.storages[key]
        if storage.nbytes() < numel * itemsize:
            raise InputError(f"{self.where}: truncated checkpoint (storage {key} holds {storage.nbytes()} bytes, "
                             f"needs {numel * itemsize})")
        return torch.storage.TypedStorage(wrap_storage=storage, dtype=dtype, _internal=True)


    def _read_storage(self, key: str, expected: int) -> torch.UntypedStorage:
        """One storage's bytes, after its size in the zip's directory is checked against what the pickle says
        (torch writes each storage uncompressed, numel × itemsize bytes): nothing larger is ever read."""
        name = f"{self.prefix}data/{key}"
        try:
            info = self.archive.getinfo(name)
        except KeyError:
            raise InputError(f"{self.where}: truncated checkpoint (storage {key} is missing)") from None
        if info.file_size != expected or info.compress_type != zipfile.ZIP_STORED:
            raise InputError(f"{self.where}: refused to load: storage {key} holds {info.file_size:,} bytes"
                             f"{'' if info.compress_type == zipfile.ZIP_STORED else ' compressed'}, its tensor "
                             f"header says {expected:,} (torch writes them equal and uncompressed)")
        raw = self.archive.read(name)
        return torch.frombuffer(bytearray(raw), dtype=torch.uint8).untyped_storage() if raw else torch.UntypedStorage(0)


def open_archive(path: str | Path) -> tuple[zipfile.ZipFile, str, bytes]:
    """(the zip, its record prefix, the pickle's bytes) of a torch archive; one-line errors otherwise."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such checkpoint")
    try:
        archive = zipfile.ZipFile(path)
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pickles) != 1:
            raise InputError(f"{path}: not a torch checkpoint archive (no single data.pkl inside)")
        prefix = pickles[0][: -len("data.pkl")]
        if f"{prefix}byteorder" in archive.namelist():
            order = archive.read(f"{prefix}byteorder").decode("ascii", "replace").strip()
            if order != "little":
                raise InputError(f"{path}: refused to load: its tensors are stored {order!r}-endian; this reader "
                                 "takes little-endian archives only (they would load as garbage)")
        return archive, prefix, archive.read(pickles[0])
    except (zipfile.BadZipFile, EOFError, OSError) as err:
        raise InputError(f"{path}: truncated or not a torch checkpoint archive ({err})") from None


def load_restricted(path: str | Path, *, allowed=(), calls=()):
    """The unpickled payload of a foreign torch archive, built by :class:`RestrictedUnpickler`."""
    archive, prefix, data = open_archive(path)
    with archive:
        try:
            return RestrictedUnpickler(data, archive, prefix, allowed=allowed, calls=calls, where=str(path)).load()
        except InputError as err:
            raise InputError(str(err) if str(path) in str(err) else f"{path}: {err}") from None
        except (Exception, RecursionError) as err:  # whatever a crafted pickle makes torch or numpy raise
            message = str(err).splitlines()[0][:200] if str(err) else ""
            raise InputError(f"{path}: unreadable checkpoint pickle ({type(err).__name__}: {message})") from None
