"""Iteration state: one cursor per iterator, and checkpoints checked field by field.

Every ``iter()`` over a generator (or over its ``arrays``) gets its own
:class:`Cursor`: the epoch it follows is fixed when it starts and its position
advances only with the batches it yields, so two iterators (two threads, nested
loops) never move each other. The generator keeps the most recently started cursor
for ``state_dict()``. :func:`checked_state` validates a checkpoint before any of it is
used; each error prints the checkpoint's value beside the current one and the fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ._validation import is_int
from .errors import StateError, StateTypeError

__all__ = ["STATE_KEYS", "STATE_VERSION", "Cursor", "checked_state"]

STATE_VERSION = 1
STATE_KEYS = ("version", "fingerprint", "seed", "epoch", "position", "shard")


@dataclass(slots=True)
class Cursor:
    """Where one iteration stands: the epoch it follows (fixed at its start), the
    batches of that epoch delivered so far, and whether it reached the end."""

    epoch: int
    position: int
    done: bool = False


def _field_int(state: Mapping[str, Any], key: str, current: object) -> int:
    value = state[key]
    if not is_int(value):
        raise StateTypeError(
            f"state[{key!r}] must be an int; checkpoint value {value!r} (type "
            f"{type(value).__name__}), current value {current!r}. Pass the dict "
            "state_dict() returned (it survives json.dumps/json.loads unchanged)."
        )
    return int(value)


def checked_state(
    state: object,
    *,
    fingerprint: str,
    seed: int | None,
    shard: list[Any] | None,
    n_batches: int,
    epoch: int,
    position: int,
) -> tuple[int, int]:
    """Validate a checkpoint against the generator's current values.

    Returns the checkpoint's ``(epoch, position)``. Raises
    :class:`~xbatcher.errors.StateTypeError` (a ``TypeError``) for a value of the
    wrong type and :class:`~xbatcher.errors.StateError` (a ``ValueError``) for a
    missing key or a value that does not fit this generator.
    """
    if not isinstance(state, Mapping):
        hint = (
            " To resume from a file, load it first: "
            "bgen.load_state_dict(json.load(open(path)))."
            if isinstance(state, str | bytes) or hasattr(state, "__fspath__")
            else ""
        )
        raise StateTypeError(
            f"state must be the dict returned by state_dict(); got {state!r} of type "
            f"{type(state).__name__}.{hint}"
        )
    missing = [k for k in STATE_KEYS if k not in state]
    if missing:
        raise StateError(
            f"state lacks the keys {missing}; a state_dict() holds {list(STATE_KEYS)}. "
            "Pass the whole dict state_dict() returned, not a part of it."
        )
    version = state["version"]
    if version != STATE_VERSION or isinstance(version, bool):
        raise StateError(
            f"state version: checkpoint {version!r}, this xbatcher reads version "
            f"{STATE_VERSION}. Save the state again with this version of xbatcher "
            "(or resume with the version that saved it)."
        )
    saved_seed = state["seed"]
    if saved_seed is not None and not is_int(saved_seed):
        raise StateTypeError(
            f"state['seed'] must be an int or None; checkpoint value {saved_seed!r}, "
            f"current seed {seed!r}."
        )
    if saved_seed != seed:
        raise StateError(
            f"state seed: checkpoint {saved_seed!r}, current {seed!r}. Build the "
            f"generator with seed={saved_seed!r} to resume this run."
        )
    saved_shard = state["shard"]
    if saved_shard is not None and not isinstance(saved_shard, list | tuple):
        raise StateTypeError(
            f"state['shard'] must be [rank, world_size, even] or None; checkpoint "
            f"value {saved_shard!r}, current shard {shard!r}."
        )
    if (None if saved_shard is None else list(saved_shard)) != shard:
        raise StateError(
            f"state was saved for shard {saved_shard}, this generator is shard "
            f"{shard}. Load each rank's own state (shard [rank, world_size, even])."
        )
    if state["fingerprint"] != fingerprint:
        raise StateError(
            "this state was saved by a different generator (schema, data or sampler "
            f"differ): checkpoint fingerprint {state['fingerprint']!r}, current "
            f"fingerprint {fingerprint!r}. Build the generator with the same arguments "
            "and data as when the state was saved."
        )
    new_epoch = _field_int(state, "epoch", epoch)
    if new_epoch < 0:
        raise StateError(
            f"state['epoch'] must be >= 0; checkpoint value {new_epoch}, current "
            f"epoch {epoch}."
        )
    new_position = _field_int(state, "position", position)
    if not 0 <= new_position <= n_batches:
        raise StateError(
            f"state['position'] must lie in 0..{n_batches} (batches in an epoch of "
            f"this generator); checkpoint value {new_position}, current position "
            f"{position}."
        )
    return new_epoch, new_position
