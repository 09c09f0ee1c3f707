"""Fixtures: a subscription-capable FHIR server and a recording endpoint, on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from subs_bed import TEST_POLICY, Endpoint, SubsBed, start_bed, stop_bed

from wardsync.core.timer import FakeTimer
from wardsync.sandbox.fhir import FhirStore
from wardsync.sandbox.fhir.subscriptions.ledger import SubscriptionLedger


@pytest.fixture
def store() -> Iterator[FhirStore]:
    s = FhirStore(":memory:")
    yield s
    s.close()


@pytest.fixture
def ledger() -> Iterator[SubscriptionLedger]:
    s = SubscriptionLedger(":memory:")
    yield s
    s.close()


@pytest.fixture
def timer() -> FakeTimer:
    return FakeTimer(wall=1_800_000_000.0)


@pytest.fixture
async def bed(store: FhirStore, ledger: SubscriptionLedger, timer: FakeTimer
              ) -> AsyncIterator[SubsBed]:
    b = await start_bed(store, ledger, timer, policy=TEST_POLICY)
    yield b
    await stop_bed(b)


@pytest.fixture
async def endpoint() -> AsyncIterator[Endpoint]:
    e = Endpoint()
    await e.start()
    yield e
    await e.stop()
