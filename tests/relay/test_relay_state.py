"""The relay's durable numbering: one seq and one message id per resource version, and the
ids of each publish recorded once."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

import pytest

from wardsync.core.pokes import Poke, poke_to_dict
from wardsync.relay.state import PUBLISHED, SCHEMA, RelayState, message_id_for


def _draft(rid: str, version: str = "1") -> Poke:
    return Poke(type="RESOURCE_CHANGED", resource_type="Observation", id=rid,
                version_id=version, patient_id="p1", seq=1)


def test_a_version_is_numbered_once_and_kept_across_a_restart(tmp_path: Path):
    state = RelayState.in_dir(tmp_path / "data")
    first, new = state.number("w1", _draft("a"))
    assert new and first.poke.seq == 1
    again, new = state.number("w1", _draft("a"))
    assert not new and again.poke.seq == 1 and again.message_id == first.message_id
    second, _ = state.number("w1", _draft("a", "2"))
    other_ward, _ = state.number("w2", _draft("b"))
    assert (second.poke.seq, other_ward.poke.seq) == (2, 1)
    state.mark(first.message_id, PUBLISHED)
    state.close()
    reopened = RelayState.in_dir(tmp_path / "data")  # a crash loses nothing numbered
    assert [(p.ward, p.poke.seq) for p in reopened.pending()] == [("w1", 2), ("w2", 1)]
    third, new = reopened.number("w1", _draft("c"))
    assert new and third.poke.seq == 3
    assert reopened.has_version("Observation/a", "2")
    assert not reopened.has_version("Observation/a", "3")
    assert (tmp_path / "data").stat().st_mode & 0o077 == 0
    reopened.close()


def test_message_ids_are_deterministic_per_ward_and_version():
    one = message_id_for("w1", "Observation/a", "1")
    assert one == message_id_for("w1", "Observation/a", "1")
    assert len({one, message_id_for("w1", "Observation/a", "2"),
                message_id_for("w2", "Observation/a", "1")}) == 3
    assert ":" not in one  # a single-message id, never mistaken for `<base>:<index>`


def test_cursors_persist(tmp_path: Path):
    state = RelayState(tmp_path / "s.sqlite3")
    assert state.cursor("Observation") is None
    state.set_cursor("Observation", "2026-12-07T10:00:00.000001Z")
    state.set_cursor("Observation", "2026-12-07T10:00:01.000000Z")
    state.close()
    assert RelayState(tmp_path / "s.sqlite3").cursor("Observation") == "2026-12-07T10:00:01.000000Z"


def test_prune_forgets_old_published_versions_but_never_the_numbering(tmp_path: Path):
    state = RelayState(tmp_path / "s.sqlite3")
    done, _ = state.number("w1", _draft("a"))
    state.number("w1", _draft("b"))  # still pending
    state.mark(done.message_id, PUBLISHED)
    assert state.prune(older_than_s=-10) == 1
    assert not state.has_version("Observation/a", "1")
    assert state.has_version("Observation/b", "1")  # pending pokes are never forgotten
    assert state.number("w1", _draft("c"))[0].poke.seq == 3
    state.close()


def test_a_publishs_ids_are_recorded_once_and_survive_a_restart(tmp_path: Path):
    state = RelayState(tmp_path / "relay.sqlite3")
    stored = [state.number("w1", _draft(f"p{i}"))[0] for i in range(3)]
    ids = state.assign_wire_ids([s.message_id for s in stored[:2]])
    assert ids == [f"{stored[0].message_id}:0", f"{stored[0].message_id}:1"]
    with pytest.raises(ValueError):
        state.assign_wire_ids([stored[1].message_id, stored[2].message_id])
    state.close()
    state = RelayState(tmp_path / "relay.sqlite3")
    try:
        pending = state.pending()
        assert [p.wire_id for p in pending] == [*ids, None]
        assert [p.wire_base for p in pending] == [stored[0].message_id] * 2 + [None]
        state.mark_many([s.message_id for s in stored[:2]], PUBLISHED)
        assert [p.poke.seq for p in state.pending()] == [3]
    finally:
        state.close()


def test_a_database_from_before_wire_ids_is_upgraded_in_place(tmp_path: Path):
    path = tmp_path / "relay.sqlite3"
    old = sqlite3.connect(path)
    old.executescript(re.sub(r"\n\s*wire_id TEXT,[^\n]*", "", SCHEMA))
    old.execute("INSERT INTO pokes (message_id, ward, ref, version_id, seq, body, created_at)"
                " VALUES ('m', 'w1', 'Observation/a', '1', 1, ?, 0)",
                (json.dumps(poke_to_dict(_draft("a"))),))
    old.commit()
    old.close()
    state = RelayState(path)
    try:
        [pending] = state.pending()
        assert pending.wire_id is None and pending.poke.seq == 1
        assert state.assign_wire_ids(["m"]) == ["m:0"]
    finally:
        state.close()
