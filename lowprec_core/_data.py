"""Calibration and evaluation data: .npz and .npz-folder readers, batching, feed checks."""

from __future__ import annotations

import os
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from ._errors import DataError, one_line
from ._struct import Struct

Feed = dict[str, np.ndarray]
DataSource = str | os.PathLike[str] | Iterable[Mapping[str, np.ndarray]]


class InputSpec(Struct):
    name: str
    dtype: np.dtype
    shape: tuple[int | str | None, ...]
    batch_axis: int | None = 0  # where this input holds its samples; None: shared by all of them


_OPEN = "?"  # an unnamed open size, as input_specs counts symbols


def input_specs(model: onnx.ModelProto) -> list[InputSpec]:
    """The model's inputs. An input's batch axis is where it carries the symbolic dimension the
    inputs share most (an RNN state [2, batch, 128] has it second); a scalar, or an input
    without it while others have it (a sample rate), has none. Without symbols, axis 0."""
    inits = {init.name for init in model.graph.initializer}
    shapes = []
    for value in model.graph.input:
        if value.name in inits:
            continue
        tensor = value.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor.shape.dim)
        shapes.append((value.name, np.dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type)), dims))
    # A size left open without a name (0, as silero's default export writes it, or unset) counts
    # as one shared anonymous symbol: its state [2, 0, 128] then holds the batch second.
    named = [[dim if isinstance(dim, str) or dim else _OPEN for dim in dims] for _, _, dims in shapes]
    # The symbol the most inputs hold wins; on a tie, the one that sits leftmost (MiniLM's batch
    # before its sequence). A symbol only one input holds says nothing.
    held: dict[str, int] = {}
    leftmost: dict[str, int] = {}
    for dims in named:
        for position, dim in enumerate(dims):
            if isinstance(dim, str) and dim not in dims[:position]:
                held[dim] = held.get(dim, 0) + 1
                leftmost[dim] = min(leftmost.get(dim, position), position)
    # A symbol behind a leading size fixed at 1 in every input that holds it is no batch: it is
    # a batch-1 export's sequence (MiniLM as [1, sequence] three times: read as the batch, every
    # token was fed as a sample of its own). An RNN state [1, batch, 128] beside an input
    # [batch, time] keeps the batch: the input holds it first.
    held = {dim: count for dim, count in held.items() if not all(dims.index(dim) > 0 and dims[0] == 1 for dims in named if dim in dims)}
    best = max(sorted(held), key=lambda dim: (held[dim], -leftmost[dim]), default=None)
    batch = best if best is not None and held[best] > 1 else None

    def axis(dims: tuple) -> int | None:
        if batch is not None:
            return dims.index(batch) if batch in dims else None
        return 0 if dims else None

    return [InputSpec(name, dtype, dims, axis(tuple(open_dims))) for (name, dtype, dims), open_dims in zip(shapes, named)]


def _sample_axes(feed: Feed, specs: list[InputSpec]) -> dict[str, int | None]:
    """Input name -> the axis of its value that holds samples, None for a value shared by all."""
    axes = {spec.name: spec.batch_axis for spec in specs}
    return {name: axis if axis is not None and np.ndim(value) > axis else None
            for name, value in feed.items() for axis in [axes.get(name, 0)]}


def batch_size(feed: Feed, specs: list[InputSpec]) -> int:
    """Samples in a feed: the length of the first input's batch axis."""
    axes = _sample_axes(feed, specs)
    for spec in specs:
        if axes.get(spec.name) is not None:
            return int(np.shape(feed[spec.name])[axes[spec.name]])
    return 1


def take(feed: Feed, specs: list[InputSpec], index) -> Feed:
    """The samples `index` (a slice or a list of positions) of a feed, along each input's batch axis."""
    out = {}
    for name, axis in _sample_axes(feed, specs).items():
        value = feed[name]
        out[name] = value if axis is None else value[(slice(None),) * axis + (index,)]
    return out


def single_samples(feeds: Iterable[Feed], specs: list[InputSpec], limit: int) -> list[Feed]:
    """Up to `limit` feeds of one sample each, split from `feeds`; a model whose inputs fix the
    batch (a dimension that is a number above 1) takes its feeds as they come."""
    fixed = fixed_batch(specs)
    out: list[Feed] = []
    for feed in feeds:
        count = 1 if fixed not in (None, 1) else batch_size(feed, specs)
        for index in range(count):
            if len(out) == limit:
                return out
            out.append(feed if count == 1 else take(feed, specs, slice(index, index + 1)))
    return out


def stackable(feeds: list[Feed], specs: list[InputSpec]) -> bool:
    """Whether the feeds agree in every dimension but each input's batch axis, so that concat
    can join them (variable-length inputs, sentences or recordings, do not)."""
    for spec in specs:
        if spec.batch_axis is None or spec.name not in feeds[0]:
            continue
        shapes = {tuple(d for axis, d in enumerate(np.shape(feed[spec.name])) if axis != spec.batch_axis) for feed in feeds}
        if len(shapes) > 1:
            return False
    return True


def concat(feeds: list[Feed], specs: list[InputSpec]) -> Feed:
    """Feeds joined along each input's batch axis; an input without one is taken from the first."""
    return {
        name: feeds[0][name] if axis is None else np.concatenate([f[name] for f in feeds], axis=axis)
        for name, axis in _sample_axes(feeds[0], specs).items()
    }


def check_feed(feed: Mapping[str, np.ndarray], specs: list[InputSpec], where: str) -> Feed:
    """Return the feed as arrays, or raise DataError naming the first mismatch."""
    expected = {spec.name for spec in specs}
    missing = sorted(expected - set(feed))
    if missing:
        raise DataError(f"{where}: missing model input {missing[0]!r}; the model expects {sorted(expected)}")
    extra = sorted(set(feed) - expected)
    if extra:
        raise DataError(f"{where}: {extra[0]!r} is not a model input; the model expects {sorted(expected)}")
    out: Feed = {}
    for spec in specs:
        array = np.asarray(feed[spec.name])
        if array.dtype != spec.dtype:
            raise DataError(f"{where}: input {spec.name!r} has dtype {array.dtype}; the model expects {spec.dtype}")
        if array.ndim != len(spec.shape):
            raise DataError(
                f"{where}: input {spec.name!r} has rank {array.ndim} (shape {list(array.shape)}); "
                f"the model expects rank {len(spec.shape)} {list(spec.shape)}"
            )
        for axis, (got, want) in enumerate(zip(array.shape, spec.shape)):
            if isinstance(want, int) and want > 0 and got != want:
                raise DataError(
                    f"{where}: input {spec.name!r} has size {got} on axis {axis}; the model expects {want}"
                )
        _check_finite(array, spec.name, where)
        out[spec.name] = array
    _check_batch_sizes(out, specs, where)
    return out


def _check_finite(array: np.ndarray, name: str, where: str) -> None:
    """NaN is never an input value; an input that is all ±Inf carries no value either (a
    -Inf here and there, as in an additive attention mask, is allowed)."""
    if array.dtype.kind not in "fc" or array.size == 0:
        return
    finite = np.isfinite(array)
    if finite.all():
        return
    nans = int(np.isnan(array).sum())
    if nans:
        raise DataError(f"{where}: input {name!r} holds {nans} NaN of {array.size} values; expected numbers")
    if not finite.any():
        raise DataError(f"{where}: input {name!r} is all ±Inf; expected finite numbers")


def _check_batch_sizes(feed: Feed, specs: list[InputSpec], where: str) -> None:
    """Inputs whose batch axis is open (a symbol) must hold as many samples as each other; a
    fixed size was checked against the model already."""
    axes = _sample_axes(feed, specs)
    sizes = {}
    for spec in sorted(specs, key=lambda s: s.name):
        axis = axes.get(spec.name)
        if axis is not None and not (isinstance(spec.shape[axis], int) and spec.shape[axis] > 0):
            sizes[spec.name] = feed[spec.name].shape[axis]
    if len(set(sizes.values())) > 1:
        listed = ", ".join(f"{name!r} {size}" for name, size in sizes.items())
        raise DataError(f"{where}: inputs disagree on the number of samples ({listed}); every input of a feed needs the same")


def iter_feeds(
    source: DataSource,
    specs: list[InputSpec],
    *,
    batch_size: int = 16,
    max_samples: int | None = None,
) -> Iterator[Feed]:
    """Yield checked feeds from an .npz (sliced along each input's batch axis), a folder of .npz,
    or dicts."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            feeds: Iterable[Mapping[str, np.ndarray]] = _folder_feeds(path)
        elif path.is_file():
            fixed = fixed_batch(specs)
            feeds = _sliced_feeds(path, specs, fixed or batch_size)
        else:
            raise DataError(f"data not found: {path}; expected an .npz file or a folder of .npz files")
        label = str(path)
    else:
        feeds, label = source, "data"
    seen = 0
    for index, feed in enumerate(feeds):
        checked = check_feed(feed, specs, f"{label} (feed {index})")
        remaining = None if max_samples is None else max_samples - seen
        if remaining is not None and remaining <= 0:
            return
        checked, count = _first(checked, specs, remaining)
        seen += count
        yield checked
    if seen == 0:
        raise DataError(f"{label}: holds no samples")


def load_labels(path: str | os.PathLike[str]) -> np.ndarray:
    path = Path(path)
    try:
        labels = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: cannot read labels ({err}); expected a .npy array, one label per sample") from None
    if not isinstance(labels, np.ndarray) or labels.ndim != 1 or labels.dtype.kind not in "iuUS":
        raise DataError(
            f"{path}: labels must be a 1-D array of integers or strings, got shape {getattr(labels, 'shape', '?')} "
            f"dtype {getattr(labels, 'dtype', '?')}"
        )
    return labels


def _first(feed: Feed, specs: list[InputSpec], limit: int | None) -> tuple[Feed, int]:
    """The feed's first `limit` samples (all where None), cut along each input's batch axis, and
    how many that is. (Here, not in iter_feeds, whose batch_size argument hides batch_size.)"""
    count = batch_size(feed, specs)
    if limit is None or count <= limit:
        return feed, count
    return take(feed, specs, slice(0, limit)), limit


def fixed_batch(specs: list[InputSpec]) -> int | None:
    """The batch every input fixes at its first axis (a batch-1 export: 1), or None."""
    dims = {spec.shape[0] for spec in specs if spec.shape}
    if len(dims) == 1:
        (dim,) = dims
        if isinstance(dim, int) and dim > 0:
            return dim
    return None


_DEFLATE_MAX_RATIO = 1100  # deflate expands at most ~1032x: a member claiming more is lying


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an .npz, each member checked before it is read: a .npy of a plain dtype
    (no pickled objects) whose header's shape fits the bytes the member holds. Any fault is a
    DataError naming the file and the member."""
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile, ValueError) as err:
        raise DataError(f"{path}: not a readable .npz file ({one_line(err)})") from None
    arrays: dict[str, np.ndarray] = {}
    with archive:
        members = archive.infolist()
        for info in members:
            _check_member(path, archive, info)
        for info in members:
            name = info.filename[: -len(".npy")]
            try:
                with archive.open(info) as handle:
                    arrays[name] = np.lib.format.read_array(handle, allow_pickle=False)
            except (OSError, ValueError, EOFError, zipfile.BadZipFile, MemoryError, zlib.error) as err:
                raise DataError(f"{path}: member {info.filename!r} cannot be read ({one_line(err)})") from None
    return arrays


def _check_member(path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
    where = f"{path}: member {info.filename!r}"
    if info.is_dir() or not info.filename.endswith(".npy"):
        raise DataError(f"{where} is not a .npy array; an .npz holds only .npy members")
    if info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size:
        raise DataError(f"{where} claims {info.file_size} bytes but stores {info.compress_size}")
    if info.compress_type != zipfile.ZIP_STORED and info.file_size > _DEFLATE_MAX_RATIO * info.compress_size + 4096:
        raise DataError(f"{where} claims {info.file_size} bytes from {info.compress_size} compressed: not a real member")
    try:
        with archive.open(info) as handle:
            version = np.lib.format.read_magic(handle)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(handle)
            header_bytes = handle.tell()
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as err:
        raise DataError(f"{where} is not a .npy array ({one_line(err)})") from None
    if dtype.hasobject or dtype.kind == "V":
        raise DataError(f"{where} has dtype {dtype}, which would need unpickling; expected numbers or strings")
    needed = int(np.prod(shape, dtype=object)) * dtype.itemsize
    held = info.file_size - header_bytes
    if needed != held:
        raise DataError(f"{where} claims shape {list(shape)} of {dtype} ({needed} bytes) but holds {held} bytes")


def _sliced_feeds(path: Path, specs: list[InputSpec], size: int) -> Iterator[Feed]:
    """Feeds of `size` samples, cut along each input's batch axis (an RNN state's second axis; a
    scalar such as a sample rate is shared by every feed)."""
    arrays = read_npz(path)
    if not arrays:
        raise DataError(f"{path}: the .npz holds no arrays")
    axes = _sample_axes(arrays, specs)
    lengths = {name: arrays[name].shape[axis] for name, axis in axes.items() if axis is not None}
    if len(set(lengths.values())) > 1:
        listed = ", ".join(f"{name!r} {length}" for name, length in lengths.items())
        raise DataError(f"{path}: arrays must hold as many samples as each other along their batch axes; got {listed}")
    total = next(iter(lengths.values()), 1)  # every batch axis holds as many; none at all: one sample
    for start in range(0, total, size):
        yield take(arrays, specs, slice(start, start + size))


def _folder_feeds(path: Path) -> Iterator[Feed]:
    """Every .npz in the folder, in name order; hidden ones (a name starting with '.': the
    `._name.npz` metadata files macOS writes beside each file on a copy or in a tar) skipped."""
    files = sorted(p for p in path.iterdir() if p.suffix == ".npz" and not p.name.startswith("."))
    if not files:
        raise DataError(f"{path}: folder holds no .npz files")
    for file in files:
        yield read_npz(file)
