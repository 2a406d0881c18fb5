"""Inputs and targets: the one framework-free object every loader reads from.

A :class:`BatchPairs` turns the epoch plan and batch engine of one or two
generators into ``(x, y)`` numpy batches addressed by ``(epoch, index)``: the
PyTorch, TensorFlow/Keras and JAX loaders only convert its arrays to tensors and
decide which indices each worker or rank reads. It holds no epoch state, reads no
data until asked, and pickles small (plans and engines, never the dataset), so it can
travel to worker processes.

Rules (also in ``docs/loaders.md``):

* **Selection.** Two aligned generators (``X_generator``, ``y_generator``, as
  xbatcher 0.4) or one generator over a Dataset with ``inputs=`` / ``targets=``
  naming its variables. Without ``inputs=`` a side is its generator's DataArray or
  the only variable of its Dataset.
* **Channels.** ``inputs="a"`` (a name) gives the variable's batch array;
  ``inputs=["a", "b"]`` (a list, even of one) stacks the variables, in the list's
  order, along a new channel axis at ``channel_axis`` (default 1, right after the
  batch axis: ``(batch, channel, ...)``; -1 puts it last).
* **Roles** (a ``windows=`` generator, ``docs/targets.md``). Names are roles:
  ``inputs="x"`` stacks the role's variables, in the role's order, along the channel
  axis (even one); ``inputs={"x": "t2m"}`` / ``{"x": ["t2m", "u10"]}`` picks some of
  its variables by the name/list rule above. Without ``inputs=`` / ``targets=`` the
  roles ``"x"`` / ``"y"`` are used (when the generator has them). A role of a
  DataArray source is its array.
* **Fewer dims.** A listed variable whose batch dims are a subset of another's, in the
  same order, is broadcast along the dims it lacks (a static field next to a
  time-varying one); any other mismatch is refused with a ``SchemaError``. Mixed
  dtypes are promoted as ``numpy.result_type`` does.
* **Transforms.** ``transform_on="arrays"`` (default): ``transform`` takes and
  returns the ``x`` array (the dict of input arrays with ``as_dict=True``), the
  fast path. ``transform_on="xarray"``: ``transform`` takes the xarray batch of the
  inputs (as 0.4's loaders did); an xarray result is converted by the rules above,
  anything else (a tensor) is returned as it is.
"""

from __future__ import annotations

import copy
import dataclasses
import operator
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import xarray as xr
from numpy.typing import NDArray

from .._validation import check_bool, check_int
from ..engine import (
    BatchEngine,
    read_batches,
    read_batches_xarray,
)
from ..errors import (
    BatchIndexError,
    BatchIndexTypeError,
    InputTypeError,
    SchemaError,
    VariableError,
)
from ..generator import BatchGenerator
from ..plan import EpochPlan
from ._arrays import native_array

__all__ = ["BatchPairs", "Names", "stack_channels"]

Names = str | Sequence[Hashable] | Mapping[str, str | Sequence[Hashable]] | None
Units = NDArray[np.int64]
Item = tuple[Any, ...] | dict[Hashable, Any]


@dataclass(frozen=True, slots=True)
class _Side:
    """One side (inputs or targets): where its batches come from and how they are
    turned into one array (or a dict of arrays)."""

    what: str  # "inputs" / "targets": for messages
    plan: EpochPlan
    engine: BatchEngine  # reads only the selected variables
    full: BatchEngine  # the generator's engine (xarray batches)
    names: tuple[Hashable, ...] | None  # None: the DataArray / only variable
    listed: bool  # a list was given: stack along a channel axis
    key: Hashable  # dict key of an unnamed DataArray with as_dict=True
    role: str | None = None  # the role read, for a windows= generator

    def arrays(self, batch: Any) -> dict[Hashable, NDArray[Any]]:
        """The selected variables of a ``read_batch`` result, by name."""
        if self.role is not None:
            batch = batch[self.role]
        if self.names is None:
            if isinstance(batch, dict):
                (name,) = batch  # checked at construction
                return {name: batch[name]}
            return {self.key: batch}
        assert isinstance(batch, dict)
        return {name: batch[name] for name in self.names}

    def xarray(self, batch: Any) -> xr.Dataset | xr.DataArray:
        """The selected variables of an xarray batch (what an xarray transform gets;
        with ``windows=`` the batch is a dict by role)."""
        if self.role is not None:
            batch = batch[self.role]
        assert isinstance(batch, xr.Dataset | xr.DataArray)
        if self.names is None:
            return batch
        assert isinstance(batch, xr.Dataset)
        if self.listed:
            return batch[list(self.names)]
        return batch[self.names[0]]

    def out_dims(self, name: Hashable) -> tuple[Hashable, ...]:
        """The batch dims of variable ``name``."""
        if self.role is not None:
            assert self.engine.roles is not None
            return self.engine.roles[self.role].layouts[name].out_dims
        return self.engine.layouts[name].out_dims


class BatchPairs:
    """``(x, y)`` numpy batches of one or two generators, by ``(epoch, index)``.

    Parameters
    ----------
    X_generator : xbatcher.BatchGenerator
        Batches of inputs (and of targets, with ``targets=``).
    y_generator : xbatcher.BatchGenerator, optional
        Batches of targets, aligned with ``X_generator``: the same number of batches
        and the same sampler (same ``shuffle=`` and ``seed=``), so batch ``i`` of
        both holds the same samples.
    inputs : str, list of str or dict, optional
        Variables of ``X_generator``'s Dataset that form ``x``. A name gives that
        variable's array; a list stacks them along a channel axis, in list order.
        Default: the DataArray, or the only data variable. With ``windows=``: a
        role name (its variables stacked), or ``{role: name or list}``; default
        the role ``"x"``.
    targets : str or list of str, optional
        Variables that form ``y``: of ``y_generator`` if given, else of
        ``X_generator`` (one generator, one read per batch). Without both
        ``y_generator`` and ``targets`` items are ``(x,)``, unless ``X_generator``
        has a ``windows=`` role ``"y"`` (the default targets then).
    transform, target_transform : callable, optional
        Applied to ``x`` / ``y`` of each item (see ``transform_on``).
    as_dict : bool
        Items are ``{name: array}`` of every input and target variable (no
        stacking) instead of tuples; an unnamed DataArray is keyed ``"x"`` / ``"y"``.
    transform_on : {"arrays", "xarray"}
        What the transforms receive: numpy arrays (fast) or the xarray batch of the
        selected variables (as in xbatcher 0.4).
    channel_axis : int
        Where the channel axis of a list of variables goes (1: after the batch axis;
        -1: last).

    Raises
    ------
    xbatcher.errors.SchemaError
        Misaligned generators, several variables without ``inputs=``/``targets=``,
        stacked variables whose dims do not broadcast, a bad ``channel_axis``.
    xbatcher.errors.VariableError
        A name in ``inputs``/``targets`` that is not a data variable (with
        ``windows=``: not a role, or not a variable of the role).
    xbatcher.errors.InputTypeError
        An argument of the wrong type.

    Examples
    --------
    >>> import numpy as np, xarray as xr, xbatcher as xb
    >>> ds = xr.Dataset(
    ...     {
    ...         "a": (("t", "x"), np.arange(12.0).reshape(3, 4)),
    ...         "b": (("t", "x"), -np.arange(12.0).reshape(3, 4)),
    ...         "y": ("t", np.arange(3.0)),
    ...     }
    ... )
    >>> bgen = xb.BatchGenerator(ds, {"x": 4}, batch_size=2)
    >>> pairs = BatchPairs(bgen, inputs=["a", "b"], targets="y")
    >>> x, y = pairs.read(epoch=0, index=0)
    >>> len(pairs), x.shape, y.tolist()
    (2, (2, 2, 4), [0.0, 1.0])
    """

    def __init__(
        self,
        X_generator: BatchGenerator,
        y_generator: BatchGenerator | None = None,
        *,
        inputs: Names = None,
        targets: Names = None,
        transform: Callable[[Any], Any] | None = None,
        target_transform: Callable[[Any], Any] | None = None,
        as_dict: bool = False,
        transform_on: Literal["arrays", "xarray"] = "arrays",
        channel_axis: int = 1,
    ) -> None:
        _check_generator(X_generator, "X_generator")
        if y_generator is not None:
            _check_generator(y_generator, "y_generator")
            check_aligned_plans(X_generator.plan, y_generator.plan)
        for name, fn in (
            ("transform", transform),
            ("target_transform", target_transform),
        ):
            if fn is not None and not callable(fn):
                raise InputTypeError(
                    f"{name} must be a callable or None; got {type(fn).__name__}."
                )
        if transform_on not in ("arrays", "xarray"):
            raise SchemaError(
                f"transform_on must be 'arrays' or 'xarray'; got {transform_on!r}. "
                "Use 'xarray' for a transform that takes the xarray batch (as 0.4)."
            )
        self.as_dict = check_bool(as_dict, "as_dict")
        self.transform_on = transform_on
        self.channel_axis = check_int(
            channel_axis, "channel_axis", minimum=-(2**31), fix="Use 1 or -1."
        )
        self.transform = transform
        self.target_transform = target_transform
        xarray = transform_on == "xarray"
        self.x = _side(
            X_generator, "inputs", inputs, "x", xarray and transform is not None
        )
        self.y: _Side | None = None
        if (
            y_generator is not None
            or targets is not None
            or "y" in (X_generator.engine.roles or {})
        ):
            source = X_generator if y_generator is None else y_generator
            self.y = _side(
                source, "targets", targets, "y", xarray and target_transform is not None
            )
        if self.as_dict:
            _check_keys(self.x, self.y)
        #: the epoch the generator was at (where a loader starts counting)
        self.start_epoch = X_generator.epoch
        #: the shuffle seed (for checkpoints)
        self.seed = X_generator.seed

    # ------------------------------------------------------------------ sizes
    def __len__(self) -> int:
        """Batches per epoch."""
        return self.x.plan.num_batches()

    def with_shard(
        self, rank: int, world_size: int, even: Literal["pad", "drop"] = "pad"
    ) -> BatchPairs:
        """These pairs restricted to shard ``rank`` of ``world_size`` (DDP ranks):
        samples are dealt after the shuffle, as ``BatchGenerator.shard`` does, to
        both sides alike."""
        new = copy.copy(self)
        new.x = _replace_plan(self.x, self.x.plan.with_shard(rank, world_size, even))
        if self.y is not None:
            new.y = _replace_plan(
                self.y, self.y.plan.with_shard(rank, world_size, even)
            )
        return new

    def units(self, epoch: int, first: int, stop: int) -> list[Units]:
        """Units (samples, or batches) of the inputs of batches ``first .. stop - 1``."""
        return self.x.plan.batch_units(epoch, first, stop)

    # ------------------------------------------------------------------ reading
    def read(self, epoch: int, index: int) -> Item:
        """Batch ``index`` of ``epoch``: ``(x, y)``, ``(x,)`` or a dict.

        Parameters
        ----------
        epoch : int
            The epoch whose order is followed.
        index : int
            The batch, ``0 .. len(self) - 1`` (negative ones count from the end).

        Raises
        ------
        xbatcher.errors.BatchIndexError
            ``index`` out of range (also an ``IndexError``).
        """
        return self.read_indices(epoch, [index])[0]

    def read_many(self, epoch: int, first: int, stop: int) -> list[Item]:
        """Batches ``first .. stop - 1`` of ``epoch``, gathered together (one chunk
        plan and one copy per chunk for all of them)."""
        n = len(self)
        first = check_int(first, "first", maximum=n, fix=f"Use 0 .. {n}.")
        stop = check_int(
            stop, "stop", minimum=first, maximum=n, fix=f"Use {first} .. {n}."
        )
        return self.read_indices(epoch, range(first, stop))

    def read_indices(self, epoch: int, indices: Sequence[int]) -> list[Item]:
        """Batches ``indices`` of ``epoch`` (any order, e.g. a worker's every n-th
        batch), gathered together as :meth:`read_many` does."""
        n = len(self)
        idx = [_check_index(i, n) for i in indices]
        if not idx:
            return []
        xs = self._side_values(self.x, self.transform, epoch, idx)
        if self.y is None:
            ys: list[Any] = []
        else:
            ys = self._side_values(self.y, self.target_transform, epoch, idx)
        if self.as_dict:
            return [{**x, **(ys[k] if ys else {})} for k, x in enumerate(xs)]
        if self.y is None:
            return [(x,) for x in xs]
        return list(zip(xs, ys, strict=True))

    def _side_values(
        self,
        side: _Side,
        fn: Callable[[Any], Any] | None,
        epoch: int,
        indices: list[int],
    ) -> list[Any]:
        batches = _batch_units(side.plan, epoch, indices)
        if fn is not None and self.transform_on == "xarray":
            out = []
            for batch in read_batches_xarray(side.full, batches):
                result = fn(side.xarray(batch))
                out.append(self._from_xarray(result))
            return out
        values = [
            self._combine(side, side.arrays(b))
            for b in read_batches(side.engine, batches)
        ]
        return values if fn is None else [fn(v) for v in values]

    def _combine(self, side: _Side, arrays: dict[Hashable, NDArray[Any]]) -> Any:
        if self.as_dict:
            return {k: native_array(v) for k, v in arrays.items()}
        if not side.listed:
            return native_array(next(iter(arrays.values())))
        dims = [side.out_dims(name) for name in arrays]
        return stack_channels(list(arrays.values()), dims, self.channel_axis, side.what)

    def _from_xarray(self, obj: Any) -> Any:
        """An xarray transform's result as arrays (other results as they are)."""
        if isinstance(obj, xr.DataArray):
            return (
                {obj.name: native_array(obj.values)}
                if self.as_dict
                else native_array(obj.values)
            )
        if isinstance(obj, xr.Dataset):
            if self.as_dict:
                return {k: native_array(v.values) for k, v in obj.data_vars.items()}
            if len(obj.data_vars) == 1:
                (only,) = obj.data_vars.values()
                return native_array(only.values)
            names = list(obj.data_vars)
            arrays = [obj[k].values for k in names]
            dims = [obj[k].dims for k in names]
            return stack_channels(arrays, dims, self.channel_axis, "transform result")
        return obj


# ---------------------------------------------------------------------- helpers
def _batch_units(plan: EpochPlan, epoch: int, indices: list[int]) -> list[Units]:
    """Units of batches ``indices`` of ``epoch`` (consecutive runs asked at once)."""
    if indices == list(range(indices[0], indices[0] + len(indices))):
        return plan.batch_units(epoch, indices[0], indices[0] + len(indices))
    return [plan.batch_units(epoch, i, i + 1)[0] for i in indices]


def _check_index(index: Any, n: int) -> int:
    """``index`` as a batch number in ``0 .. n - 1`` (negative: from the end)."""
    try:
        i = operator.index(index)
    except TypeError:
        raise BatchIndexTypeError(
            f"batch index must be an integer; got {index!r} of type "
            f"{type(index).__name__}. Use one int, one batch at a time."
        ) from None
    if not -n <= i < n:
        raise BatchIndexError(
            f"batch index {i} is out of range for {n} batches (list index out of "
            f"range); use an index in {-n}..{n - 1}."
        )
    return i + n if i < 0 else i


def stack_channels(
    arrays: Sequence[NDArray[Any]],
    dims: Sequence[Sequence[Hashable]],
    channel_axis: int,
    what: str = "inputs",
) -> NDArray[Any]:
    """Stack ``arrays`` (with dim names ``dims``) along a new channel axis.

    The variable with the most dims sets the layout; each other one must have a
    subset of its dims in the same order and is broadcast along the ones it lacks.
    One copy of each value, written straight into the output.

    Examples
    --------
    >>> a = np.arange(6.0).reshape(2, 3)
    >>> stack_channels([a, np.array([10.0, 20.0])], [("s", "x"), ("s",)], 1).tolist()
    [[[0.0, 1.0, 2.0], [10.0, 10.0, 10.0]], [[3.0, 4.0, 5.0], [20.0, 20.0, 20.0]]]
    """
    ref = max(range(len(arrays)), key=lambda k: len(dims[k]))
    ref_dims = tuple(dims[ref])
    shape = arrays[ref].shape
    ndim = len(ref_dims)
    if not -(ndim + 1) <= channel_axis <= ndim:
        raise SchemaError(
            f"channel_axis={channel_axis} is out of range for {what} batches of "
            f"{ndim} dims {ref_dims}; it must lie in {-(ndim + 1)} .. {ndim} "
            "(1: after the batch axis, -1: last)."
        )
    axis = channel_axis % (ndim + 1)
    dtype = np.result_type(*arrays)
    out = np.empty((*shape[:axis], len(arrays), *shape[axis:]), dtype=dtype)
    moved = np.moveaxis(out, axis, 0)  # a view: channel first
    for k, (array, d) in enumerate(zip(arrays, dims, strict=True)):
        moved[k] = _broadcast_to(array, tuple(d), ref_dims, shape, what)
    return native_array(out)


def _broadcast_to(
    array: NDArray[Any],
    dims: tuple[Hashable, ...],
    ref_dims: tuple[Hashable, ...],
    shape: tuple[int, ...],
    what: str,
) -> NDArray[Any]:
    """``array`` (dims ``dims``) as a view of shape ``shape`` (dims ``ref_dims``)."""
    positions = [ref_dims.index(d) if d in ref_dims else -1 for d in dims]
    if -1 in positions or positions != sorted(positions):
        raise SchemaError(
            f"cannot stack {what} with batch dims {dims} next to {ref_dims}: a "
            "variable with fewer dims is broadcast only when its dims are some of the "
            "others', in the same order. Batch it separately (as_dict=True or a "
            "second generator) or transpose it (ds['v'].transpose(...))."
        )
    expanded = array.reshape(
        [
            array.shape[positions.index(j)] if j in positions else 1
            for j in range(len(shape))
        ]
    )
    try:
        return np.broadcast_to(expanded, shape)
    except ValueError:
        raise SchemaError(
            f"cannot stack {what}: a variable with batch dims {dims} and shape "
            f"{array.shape} does not match the shape {shape} of {ref_dims}. Give "
            "stacked variables windows of the same size."
        ) from None


def check_aligned_plans(x: EpochPlan, y: EpochPlan) -> None:
    """Refuse X and y plans whose batch ``i`` would not hold the same samples."""
    shard_x = None if x.shard is None else (x.shard.rank, x.shard.world_size)
    shard_y = None if y.shard is None else (y.shard.rank, y.shard.world_size)
    if shard_x != shard_y:
        raise SchemaError(
            f"X_generator is shard {shard_x} but y_generator is shard {shard_y}; "
            "shard both alike (or shard the loader instead)."
        )
    nx, ny = x.num_batches(), y.num_batches()
    if nx != ny:
        raise SchemaError(
            f"X_generator has {nx} batches but y_generator has {ny}; inputs and "
            f"targets must give the same number of batches. Build both generators "
            f"with the same input_dims, batch_dims and sampling arguments."
        )
    sx, sy = x.sampler.to_dict(), y.sampler.to_dict()
    if sx != sy or x.n_units != y.n_units:
        raise SchemaError(
            f"X_generator's sampler {sx} over {x.n_units} units differs from "
            f"y_generator's {sy} over {y.n_units}: batch i of one would not hold the "
            "samples of batch i of the other. Build both with the same shuffle= and "
            "seed= (or one generator with inputs= and targets=)."
        )


def _check_generator(gen: Any, what: str) -> None:
    if not isinstance(gen, BatchGenerator):
        raise InputTypeError(
            f"{what} must be an xbatcher.BatchGenerator; got {type(gen).__name__}. "
            "Build one with xbatcher.BatchGenerator(ds, input_dims, ...)."
        )
    if gen.cache_preprocess is not None:
        raise SchemaError(
            f"{what} has a cache_preprocess; loaders read batches through the "
            "engine, so it would be skipped. Pass it as transform= with "
            "transform_on='xarray' instead."
        )


def _side(
    gen: BatchGenerator, what: str, names: Names, key: str, xarray_transform: bool
) -> _Side:
    engine = gen.engine
    if engine.roles is not None:
        return _role_side(gen, what, names, key)
    variables = list(engine.sources)
    if isinstance(names, Mapping):
        raise SchemaError(
            f"{what}={names!r} picks variables of a role, but this generator has no "
            f"windows=. Use {what}='t2m' or {what}=['t2m', 'u10'], or build the "
            "generator with windows={'x': xb.Window(...), ...}."
        )
    if names is None:
        if not engine.is_dataarray and len(variables) != 1 and not xarray_transform:
            raise SchemaError(
                f"{what} default to the only data variable, but this Dataset has "
                f"{len(variables)}: {variables}. Name them ({what}=['a', 'b'] stacks "
                f"channels, {what}='a' takes one), batch one variable (ds['x'] or "
                f"ds[['x']]), or pass a transform that combines them."
            )
        label = gen.ds.name if engine.is_dataarray else variables[0]
        return _Side(
            what,
            gen.plan,
            engine,
            engine,
            None,
            False,
            label if label is not None else key,
        )
    listed = not isinstance(names, str)
    if isinstance(names, str):
        chosen: tuple[Hashable, ...] = (names,)
    elif isinstance(names, Sequence) and names:
        chosen = tuple(names)
    else:
        raise InputTypeError(
            f"{what} must be a variable name or a non-empty list of names; got "
            f"{names!r}. Use {what}='t2m' or {what}=['t2m', 'u10']."
        )
    if engine.is_dataarray:
        raise SchemaError(
            f"{what}={names!r} selects variables of a Dataset, but this generator "
            "batches a DataArray. Drop it, or batch the Dataset."
        )
    missing = [n for n in chosen if n not in engine.sources]
    if missing:
        raise VariableError(
            f"{what} names {missing}, not data variables of the Dataset; its "
            f"variables are {variables}. Use one of them (check the spelling)."
        )
    if len(set(chosen)) != len(chosen):
        raise SchemaError(f"{what}={list(chosen)} repeats a variable; name each once.")
    restricted = copy.copy(engine)
    restricted.sources = {n: engine.sources[n] for n in chosen}
    restricted.var_dims = {n: engine.var_dims[n] for n in chosen}
    return _Side(what, gen.plan, restricted, engine, chosen, listed, key)


def _role_side(gen: BatchGenerator, what: str, names: Names, key: str) -> _Side:
    """A side of a ``windows=`` generator: a role (its variables stacked) or some
    variables of one role (``{role: name or list}``)."""
    engine = gen.engine
    roles = engine.roles
    assert roles is not None
    available = {r: list(role.variables) for r, role in roles.items()}
    fix = (
        f"Name a role ({what}={key!r} stacks its variables) or pick variables of "
        f"one ({what}={{{key!r}: ['t2m']}})."
    )
    if names is None:
        if key not in roles:
            raise SchemaError(
                f"{what} default to the role {key!r} of a windows= generator, but "
                f"its roles (and their variables) are {available}. {fix}"
            )
        names = key
    picked: Names
    if isinstance(names, str):
        role_name, picked = names, None
    elif isinstance(names, Mapping) and len(names) == 1:
        ((role_name, picked),) = names.items()
    else:
        raise VariableError(
            f"{what}={names!r}: a windows= generator's batches are keyed by role, "
            f"and this does not name one role; its roles (and their variables) are "
            f"{available}. {fix}"
        )
    if role_name not in roles:
        raise VariableError(
            f"{what}={names!r}: {role_name!r} is not a role of this windows= "
            f"generator; its roles (and their variables) are {available}. {fix}"
        )
    role = roles[role_name]
    if engine.is_dataarray:
        if picked is not None:
            raise SchemaError(
                f"{what}={names!r} picks variables, but this generator batches a "
                f"DataArray. Use {what}={role_name!r}."
            )
        return _Side(what, gen.plan, engine, engine, None, False, role_name, role_name)
    listed = not isinstance(picked, str)
    if picked is None:
        chosen = role.variables
    elif isinstance(picked, str):
        chosen = (picked,)
    elif isinstance(picked, Sequence) and picked:
        chosen = tuple(picked)
    else:
        raise InputTypeError(
            f"{what}={names!r}: a role's variables are a name or a non-empty list; "
            f"got {picked!r}. Use {what}={{{role_name!r}: {list(role.variables)}}}."
        )
    missing = [n for n in chosen if n not in role.variables]
    if missing:
        raise VariableError(
            f"{what} names {missing}, not variables of role {role_name!r}; its "
            f"variables are {list(role.variables)}. Use some of them, or add them "
            f"to Window(variables=...) of role {role_name!r}."
        )
    if len(set(chosen)) != len(chosen):
        raise SchemaError(f"{what}={names!r} repeats a variable; name each once.")
    restricted = copy.copy(engine)
    restricted.roles = {
        role_name: dataclasses.replace(
            role, variables=chosen, layouts={v: role.layouts[v] for v in chosen}
        )
    }
    return _Side(what, gen.plan, restricted, engine, chosen, listed, key, role_name)


def _replace_plan(side: _Side, plan: EpochPlan) -> _Side:
    return dataclasses.replace(side, plan=plan)


def _check_keys(x: _Side, y: _Side | None) -> None:
    """With ``as_dict=True`` every input and target needs its own key."""
    keys = [*(x.names or (x.key,)), *(() if y is None else (y.names or (y.key,)))]
    repeated = sorted({str(k) for k in keys if keys.count(k) > 1})
    if repeated:
        raise SchemaError(
            f"as_dict=True keys items by variable name, and {repeated} would be "
            "both an input and a target. Rename one (ds.rename), pick other "
            "variables of a role (inputs={'x': [...]}) or use as_dict=False."
        )
