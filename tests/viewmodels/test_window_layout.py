"""Layout geometry with fake screens: windows return to their screen, a window whose monitor
is gone moves onto the primary screen clamped to its available area, and the saved document
round-trips, skips bad entries and holds kinds and geometry only."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wardsync.viewmodels.window_geometry import Rect, Screen, cascade, clamp, place
from wardsync.viewmodels.window_layout import (
    MAX_HOSTS,
    MAX_WINDOWS,
    HostLayout,
    WindowPlacement,
    layout_for_host,
    parse_document,
    render_document,
)

# A laptop (primary, task bar at the bottom) with an external monitor to its right and an
# older one to its left (negative coordinates, as X11 and Windows both allow).
LAPTOP = Screen("eDP-1", Rect(0, 0, 1920, 1080), Rect(0, 0, 1920, 1040), primary=True)
RIGHT = Screen("DP-1", Rect(1920, 0, 2560, 1440), Rect(1920, 0, 2560, 1440))
LEFT = Screen("HDMI-1", Rect(-1280, 0, 1280, 1024), Rect(-1280, 30, 1280, 994))


# ---------------------------------------------------------------- clamp
def test_a_window_that_fits_is_left_alone() -> None:
    assert clamp(Rect(100, 100, 800, 600), LAPTOP.available) == Rect(100, 100, 800, 600)


def test_a_window_off_the_edge_slides_in_keeping_its_size() -> None:
    area = LAPTOP.available
    assert clamp(Rect(1500, 900, 800, 600), area) == Rect(1120, 440, 800, 600)
    assert clamp(Rect(-300, -50, 800, 600), area) == Rect(0, 0, 800, 600)


def test_a_window_larger_than_the_area_is_shrunk_to_it() -> None:
    assert clamp(Rect(-10, -10, 4000, 3000), LAPTOP.available) == Rect(0, 0, 1920, 1040)


def test_a_tiny_window_is_raised_to_the_minimum_size() -> None:
    assert clamp(Rect(50, 50, 5, 5), LAPTOP.available, min_w=320, min_h=200) == \
        Rect(50, 50, 320, 200)
    small = Rect(0, 0, 300, 150)  # a screen smaller than the minimum: the screen wins
    assert clamp(Rect(0, 0, 5, 5), small, min_w=320, min_h=200) == Rect(0, 0, 300, 150)


# ---------------------------------------------------------------- place
def test_a_window_returns_to_its_own_screen() -> None:
    frame = Rect(2100, 100, 1200, 800)
    placed, screen = place(frame, "DP-1", RIGHT.geometry, [LAPTOP, RIGHT])
    assert screen is RIGHT and placed == frame


def test_a_window_stays_clear_of_the_task_bar() -> None:
    placed, screen = place(Rect(100, 600, 800, 470), "eDP-1", LAPTOP.geometry, [LAPTOP])
    assert screen is LAPTOP and placed == Rect(100, 570, 800, 470)  # bottom at 1040, not 1080


def test_a_renamed_monitor_at_the_same_place_is_the_same_screen() -> None:
    renamed = Screen("DP-3", RIGHT.geometry, RIGHT.available)
    frame = Rect(2100, 100, 1200, 800)
    placed, screen = place(frame, "DP-1", RIGHT.geometry, [LAPTOP, renamed])
    assert screen is renamed and placed == frame


def test_a_window_whose_screen_is_gone_moves_onto_the_primary_at_the_same_offset() -> None:
    # 180 px right of and 100 px below the old screen's corner: the same on the laptop.
    placed, screen = place(Rect(2100, 100, 1200, 800), "DP-1", RIGHT.geometry, [LAPTOP])
    assert screen is LAPTOP and placed == Rect(180, 100, 1200, 800)


def test_a_large_window_from_a_gone_screen_is_shrunk_onto_the_primary() -> None:
    placed, screen = place(Rect(1920, 0, 2560, 1440), "DP-1", RIGHT.geometry, [LAPTOP])
    assert screen is LAPTOP and placed == LAPTOP.available


def test_a_window_from_a_gone_screen_at_negative_coordinates() -> None:
    placed, screen = place(Rect(-1200, 60, 900, 700), "HDMI-1", LEFT.geometry, [LAPTOP, RIGHT])
    assert screen is LAPTOP and placed == Rect(80, 60, 900, 700)


def test_a_gone_screen_of_unknown_geometry_puts_the_window_at_the_primarys_corner() -> None:
    placed, _ = place(Rect(5000, 5000, 800, 600), "DP-9", None, [RIGHT, LAPTOP])
    assert placed == Rect(0, 0, 800, 600)


def test_a_screen_that_got_smaller_keeps_the_window_on_it() -> None:
    shrunk = Screen("DP-1", Rect(1920, 0, 1280, 720), Rect(1920, 0, 1280, 720))
    placed, screen = place(Rect(2900, 500, 1200, 800), "DP-1", RIGHT.geometry,
                           [LAPTOP, shrunk])
    assert screen is shrunk and placed == Rect(2000, 0, 1200, 720)  # slid left, shrunk in height


def test_without_a_primary_flag_the_first_screen_is_primary() -> None:
    plain = Screen("X", Rect(0, 0, 1024, 768), Rect(0, 0, 1024, 768))
    _, screen = place(Rect(0, 0, 100, 100), "gone", None, [plain, RIGHT])
    assert screen is plain


rects = st.builds(Rect, st.integers(-5000, 8000), st.integers(-5000, 8000),
                  st.integers(1, 6000), st.integers(1, 6000))


@st.composite
def screen_sets(draw: st.DrawFn) -> list[Screen]:
    out = []
    for i in range(draw(st.integers(1, 4))):
        geo = Rect(draw(st.integers(-4000, 4000)), draw(st.integers(-4000, 4000)),
                   draw(st.integers(640, 3840)), draw(st.integers(480, 2160)))
        bar = draw(st.integers(0, 60))
        avail = Rect(geo.x, geo.y, geo.width, geo.height - bar)
        out.append(Screen(f"S{i}", geo, avail, primary=(i == 0)))
    return out


@given(rects, st.sampled_from(["S0", "S1", "S2", "S3", "gone"]),
       st.one_of(st.none(), rects), screen_sets())
def test_placed_windows_always_lie_wholly_on_an_available_area(
    frame: Rect, name: str, geometry: Rect | None, screens: list[Screen]
) -> None:
    placed, screen = place(frame, name, geometry, screens)
    assert screen in screens
    assert screen.available.contains(placed)
    assert placed.width >= 1 and placed.height >= 1
    assert placed.width <= frame.width or placed.width <= 320  # only grown to the minimum


def test_cascade_moves_a_second_window_off_the_first() -> None:
    area = LAPTOP.available
    first = Rect(100, 100, 800, 600)
    assert cascade(first, [], area) == first
    assert cascade(first, [first], area) == Rect(132, 132, 800, 600)
    assert cascade(first, [first, Rect(132, 132, 10, 10)], area) == Rect(164, 164, 800, 600)
    full = Rect(0, 0, 1920, 1040)  # nowhere to go: stays put rather than leave the area
    assert cascade(full, [full], area) == full


# ---------------------------------------------------------------- the document
def placement(kind: str = "ward", **changes: object) -> WindowPlacement:
    base = WindowPlacement(kind, Rect(10, 20, 800, 600), 796, 570, "DP-1",
                           Rect(1920, 0, 2560, 1440), False)
    return WindowPlacement(**{**{f: getattr(base, f) for f in base.__slots__}, **changes})


def test_the_document_round_trips() -> None:
    hosts = {"ws-ward7-01": HostLayout(
        windows=[placement(), placement("diagnostics", maximized=True, screen_geometry=None)],
        last_by_kind={"chart": placement("chart"), "ward": placement()},
        saved_wall=1767225600.0)}
    text = render_document(hosts)
    assert parse_document(text) == hosts
    doc = json.loads(text)
    assert doc["version"] == 1
    entry = doc["hosts"]["ws-ward7-01"]["windows"][0]
    # Kinds and geometry only: nothing a patient could be identified by has a field here.
    assert set(entry) == {"kind", "frame", "size", "screen", "screen_geometry", "maximized"}


@pytest.mark.parametrize("bad", [
    {"kind": "ward"},  # no frame
    {"kind": "ward", "frame": [0, 0, 0, 100]},  # no size
    {"kind": "ward", "frame": [0, 0, 100]},
    {"kind": "ward", "frame": [0, 0, 100, 100.5]},
    {"kind": "ward", "frame": [0, 0, 100, True]},
    {"kind": "ward", "frame": [0, 0, 10**9, 100]},
    {"kind": "ward", "frame": [0, 0, 100, 100], "size": [0, 5]},
    {"kind": "ward", "frame": [0, 0, 100, 100], "size": "big"},
    {"kind": "ward", "frame": [0, 0, 100, 100], "maximized": "yes"},
    {"kind": "ward", "frame": [0, 0, 100, 100], "screen": 3},
    {"kind": "Patient/123 Zzsample", "frame": [0, 0, 100, 100]},
    {"kind": "", "frame": [0, 0, 100, 100]},
    "ward",
])
def test_bad_window_entries_are_skipped_and_the_rest_kept(bad: object) -> None:
    good = placement().to_json()
    text = json.dumps({"version": 1, "hosts": {"h": {"windows": [bad, good]}}})
    assert parse_document(text)["h"].windows == [placement()]


@pytest.mark.parametrize("text", [
    "", "{", "[]", '{"version": 2, "hosts": {}}', '{"version": 1}', '{"version": 1, "hosts": []}',
])
def test_a_file_that_is_not_a_layout_is_rejected(text: str) -> None:
    with pytest.raises(ValueError):
        parse_document(text)


def test_restored_windows_are_capped() -> None:
    many = [placement().to_json()] * (MAX_WINDOWS + 50)
    text = json.dumps({"version": 1, "hosts": {"h": {"windows": many}}})
    assert len(parse_document(text)["h"].windows) == MAX_WINDOWS


def test_the_newest_workstations_are_kept() -> None:
    hosts = {f"ws{i:02}": HostLayout(saved_wall=float(i)) for i in range(MAX_HOSTS + 5)}
    kept = parse_document(render_document(hosts))
    assert len(kept) == MAX_HOSTS and "ws00" not in kept and f"ws{MAX_HOSTS + 4}" in kept


def test_a_new_workstation_starts_from_the_most_recent_layout() -> None:
    old, new = HostLayout(saved_wall=1.0), HostLayout(saved_wall=2.0, windows=[placement()])
    hosts = {"ws-a": old, "ws-b": new}
    assert layout_for_host(hosts, "ws-a") is old
    assert layout_for_host(hosts, "ws-new") is new
    assert layout_for_host({}, "ws-new") == HostLayout()
