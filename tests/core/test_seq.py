"""Sequence tracking: duplicates dropped, holes reported once after the grace period."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from wardsync.core.seq import Gap, SeqTracker

GRACE_S = 2.0


def test_first_seq_is_the_baseline() -> None:
    t = SeqTracker()
    assert t.observe(1042, now=0.0) == "accept"
    assert t.baseline == 1042
    assert t.observe(1041, now=0.1) == "duplicate"  # below the baseline
    assert t.observe(1042, now=0.2) == "duplicate"
    assert t.observe(1043, now=0.3) == "accept"
    assert t.open_gaps == ()


def test_jump_opens_a_gap_reported_once_after_grace() -> None:
    t = SeqTracker()
    t.observe(1, now=0.0)
    t.observe(5, now=1.0)
    assert t.open_gaps == (Gap(2, 4, 1.0),)
    assert t.due_gaps(now=2.9, grace_s=GRACE_S) == []
    assert t.due_gaps(now=3.0, grace_s=GRACE_S) == [Gap(2, 4, 1.0)]
    assert t.due_gaps(now=10.0, grace_s=GRACE_S) == []  # reported once
    assert Gap(2, 4, 1.0).count == 3


def test_late_arrivals_fill_their_holes() -> None:
    t = SeqTracker()
    t.observe(1, now=0.0)
    t.observe(6, now=0.5)  # 2..5 missing
    assert t.observe(3, now=0.6) == "accept"
    assert t.open_gaps == (Gap(2, 2, 0.5), Gap(4, 5, 0.5))
    assert t.observe(3, now=0.7) == "duplicate"
    for seq in (2, 4, 5):
        assert t.observe(seq, now=0.8) == "accept"
    assert t.open_gaps == ()
    assert t.due_gaps(now=100.0, grace_s=GRACE_S) == []


def test_only_old_enough_gaps_are_due() -> None:
    t = SeqTracker()
    t.observe(1, now=0.0)
    t.observe(3, now=1.0)  # gap 2 opened at 1.0
    t.observe(6, now=2.5)  # gap 4..5 opened at 2.5
    assert t.due_gaps(now=3.0, grace_s=GRACE_S) == [Gap(2, 2, 1.0)]
    assert t.open_gaps == (Gap(4, 5, 2.5),)
    assert t.due_gaps(now=4.5, grace_s=GRACE_S) == [Gap(4, 5, 2.5)]


def test_reset_starts_a_new_baseline() -> None:
    t = SeqTracker()
    t.observe(100, now=0.0)
    t.observe(105, now=0.0)
    t.reset()
    assert t.open_gaps == () and t.baseline is None and t.highest is None
    assert t.observe(1, now=1.0) == "accept"  # the publisher restarted its numbering
    assert t.baseline == 1


def test_a_huge_jump_is_one_range_not_a_million_entries() -> None:
    t = SeqTracker()
    t.observe(1, now=0.0)
    t.observe(10_000_001, now=1.0)
    assert t.open_gaps == (Gap(2, 10_000_000, 1.0),)
    assert t.observe(5_000_000, now=1.5) == "accept"
    assert [g.count for g in t.open_gaps] == [4_999_998, 5_000_000]


def test_memory_is_bounded() -> None:
    t = SeqTracker(window=64, max_gaps=8)
    for seq in range(0, 100_000, 2):  # every odd number missing: 50 000 holes
        t.observe(seq, now=float(seq))
    assert len(t._seen) <= 2 * 64
    assert len(t.open_gaps) <= 8
    # The holes were coalesced, not forgotten: one range covers them all.
    covered = {s for g in t.open_gaps for s in range(g.first, g.last + 1)}
    assert {1, 51, 99_997}.issubset(covered)


def test_old_numbers_outside_the_window_are_duplicates() -> None:
    t = SeqTracker(window=10)
    for seq in range(1, 101):
        t.observe(seq, now=0.0)
    assert t.observe(50, now=1.0) == "duplicate"


def test_a_reported_hole_arriving_late_is_accepted_once() -> None:
    t = SeqTracker()
    t.observe(1, now=0.0)
    t.observe(3, now=0.0)
    t.due_gaps(now=5.0, grace_s=GRACE_S)
    assert t.observe(2, now=6.0) == "accept"
    assert t.observe(2, now=6.1) == "duplicate"


class SeqModel(RuleBasedStateMachine):
    """Against a model with unbounded memory: same verdicts, gaps = exactly the holes."""

    def __init__(self) -> None:
        super().__init__()
        self.tracker = SeqTracker(window=10_000, max_gaps=10_000)
        self.seen: set[int] = set()
        self.reported: set[int] = set()
        self.now = 0.0

    @rule(seq=st.integers(min_value=0, max_value=60), dt=st.floats(0, 1))
    def observe(self, seq: int, dt: float) -> None:
        self.now += dt
        verdict = self.tracker.observe(seq, self.now)
        baseline = min(self.seen) if self.seen else seq
        expected = "duplicate" if seq in self.seen or seq < baseline else "accept"
        assert verdict == expected
        if verdict == "accept":
            self.seen.add(seq)

    @precondition(lambda self: self.seen)
    @rule(grace=st.sampled_from([0.0, 0.5, 2.0]))
    def report(self, grace: float) -> None:
        for gap in self.tracker.due_gaps(self.now, grace):
            assert self.now - gap.opened_at >= grace
            numbers = set(range(gap.first, gap.last + 1))
            assert not numbers & self.reported, "a hole was reported twice"
            assert not numbers & self.seen, "a number that arrived was reported missing"
            self.reported |= numbers

    @rule()
    def reset(self) -> None:
        self.tracker.reset()
        self.seen.clear()
        self.reported.clear()

    @invariant()
    def gaps_are_exactly_the_unreported_holes(self) -> None:
        if not self.seen:
            assert self.tracker.open_gaps == ()
            return
        holes = set(range(min(self.seen), max(self.seen) + 1)) - self.seen - self.reported
        open_numbers = [s for g in self.tracker.open_gaps for s in range(g.first, g.last + 1)]
        assert sorted(open_numbers) == sorted(holes)
        firsts = [g.first for g in self.tracker.open_gaps]
        assert firsts == sorted(firsts)


TestSeqModel = SeqModel.TestCase
TestSeqModel.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)


@given(st.permutations(list(range(1, 30))))
def test_any_arrival_order_accepts_each_number_once(order: list[int]) -> None:
    t = SeqTracker()
    verdicts = [t.observe(seq, now=0.0) for seq in order]
    # Numbers below the first one seen are indistinguishable from replays: dropped.
    first = order[0]
    assert verdicts == ["accept" if seq >= first else "duplicate" for seq in order]
    assert [t.observe(seq, now=1.0) for seq in order] == ["duplicate"] * len(order)
    assert t.open_gaps == ()
