"""Property test: arbitrary requests never get a 5xx, and the server keeps serving."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import pytest
from fhir_testdata import observation, patient
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from conftest import FhirServer
from wardsync.sandbox.fhir.search_params import COMMON_PARAMETERS, SEARCH_PARAMETERS

TYPES = [*SEARCH_PARAMETERS, "Medication", "Bundle", "metadata", "_history", "_search", ""]
PARAM_NAMES = sorted({p.name for ps in SEARCH_PARAMETERS.values() for p in ps}
                     | {p.name for p in COMMON_PARAMETERS}
                     | {"_count", "_sort", "_include", "_summary", "_offset", "_snapshot",
                        "_total", "_format", "_pretty", "_elements", "patient.name"})
MODIFIERS = ["", ":exact", ":contains", ":Patient", ":missing", ":iterate", ":text", ":"]

printable = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40)
anything = st.text(max_size=40)  # any Unicode, including surrogates and NUL

segment = st.one_of(
    st.sampled_from(TYPES), st.sampled_from(["pat-fuzz", "1", "_history", "..", "%00"]),
    anything.map(lambda s: quote(s, safe="")), printable.map(lambda s: quote(s, safe="/")),
)
resource_id = st.one_of(st.sampled_from(["pat-fuzz", "obs-fuzz", "nope", "a" * 65, "_search"]),
                        st.from_regex(r"\A[A-Za-z0-9.\-]{1,64}\Z"), segment)
version = st.one_of(st.sampled_from(["1", "2", "0", "-1", "999999999999999"]), segment)
known_type = st.sampled_from([*SEARCH_PARAMETERS, "Patient", "Observation"])
# Mostly well-formed FHIR paths (so requests reach the handlers), some pure noise.
path = st.one_of(
    known_type,
    st.tuples(known_type, resource_id).map("/".join),
    st.tuples(known_type, resource_id).map(lambda t: f"{t[0]}/{t[1]}/_history"),
    st.tuples(known_type, resource_id, version).map(lambda t: f"{t[0]}/{t[1]}/_history/{t[2]}"),
    known_type.map(lambda t: f"{t}/_search"),
    st.just("metadata"),
    st.lists(segment, min_size=0, max_size=5).map("/".join),
)
date_like = st.from_regex(
    r"\A(eq|ne|gt|lt|ge|le|sa|eb|ap|xx)?\d{4}(-\d{2}(-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?"
    r"(Z|[+-]\d{2}:\d{2})?)?)?)?\Z", fullmatch=True)
value = st.one_of(anything, printable, date_like,
                  st.sampled_from(["pat-fuzz", "Patient/pat-fuzz", "http://loinc.org|2823-3",
                                   "|x", "a|b|c", "Observation:patient", "-date", "count",
                                   "xml", "0", "-1", "99999999999999999999", "\\", ",,"]))
query = st.lists(st.tuples(st.sampled_from(PARAM_NAMES).flatmap(
    lambda n: st.sampled_from(MODIFIERS).map(lambda m: n + m)) | printable, value),
    max_size=6)

headers = st.fixed_dictionaries(
    {"Authorization": st.one_of(
        st.just("Bearer all"), st.just("Bearer all"), st.just("Bearer reader"),
        st.sampled_from(["Bearer nope", "Basic x", "bearer all", "Bearer"]),
        printable.map(str.strip))},
    optional={
        "Accept": st.one_of(st.sampled_from(["application/fhir+json", "*/*", "text/html",
                                             "application/fhir+xml", "application/json"])),
        "Content-Type": st.one_of(st.sampled_from(
            ["application/fhir+json", "application/json", "application/fhir+xml",
             "application/x-www-form-urlencoded", "text/plain; charset=latin-1",
             "multipart/form-data", "multipart/form-data; boundary=xx",
             "application/x-www-form-urlencoded; charset=utf-16"]),
            printable.map(str.strip)),
        "If-Match": st.one_of(st.sampled_from(['W/"1"', '"1"', "*", 'W/"x"']),
                              printable.map(str.strip)),
        "Prefer": st.sampled_from(["return=minimal", "handling=strict", "return=OperationOutcome",
                                   "respond-async"]),
        "Host": st.one_of(st.sampled_from(["example.org", "[::1]:80", "a b", ""]),
                          printable.map(str.strip)),
        "X-Anything": printable.map(str.strip),
    },
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | anything,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(anything, inner, max_size=4),
    max_leaves=20,
)


def mutated(base: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    keys = st.sampled_from([*base, "id", "meta", "extension", "contained", "text", "zzz"])
    return st.dictionaries(keys, json_values, max_size=3).map(lambda m: {**base, **m})


resource_like = st.one_of(mutated(patient()), mutated(observation("pat-fuzz")),
                          mutated({"resourceType": "Task"}))
body = st.one_of(
    st.none(),
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    resource_like.map(lambda r: json.dumps(r).encode()),
    st.sampled_from([b"{", b"[]", b"null", b'{"resourceType": "Patient", "id": "pat-fuzz"}',
                     b'{"resourceType":"Patient","active":NaN}', b"\xef\xbb\xbf{}"]),
)
method = st.sampled_from(["GET", "GET", "POST", "PUT", "HEAD", "DELETE", "PATCH", "OPTIONS"])
BASES = {"Patient": patient(), "Observation": observation("pat-fuzz")}
# The liveness probe's patient: a valid id no strategy here realistically draws.
PROBE_ID = "liveness-probe-" + "0" * 49


@st.composite
def fhir_request(draw: st.DrawFn) -> tuple[str, str, list[tuple[str, str]], bytes | None]:
    """(method, path, query, body): mostly shaped like real interactions, some pure noise."""
    kind = draw(st.sampled_from(["read", "search", "create", "update", "noise"]))
    rtype = draw(known_type)
    rid = draw(resource_id)
    base = BASES.get(rtype, {"resourceType": rtype})
    as_resource = mutated(base).map(lambda r: json.dumps(r).encode())
    if kind == "read":
        return "GET", draw(path), draw(query), None
    if kind == "search":
        form = st.one_of(st.none(), query.map(lambda q: urlencode(
            [(k, v.encode("utf-8", "surrogatepass")) for k, v in q]).encode()), body)
        return draw(st.sampled_from(["GET", "POST"])), (
            rtype if draw(st.booleans()) else f"{rtype}/_search"), draw(query), draw(form)
    if kind == "create":
        return "POST", rtype, [], draw(st.one_of(as_resource, body))
    if kind == "update":
        with_id = mutated({**base, "id": rid}).map(lambda r: json.dumps(r).encode())
        return "PUT", f"{rtype}/{rid}", [], draw(st.one_of(with_id, as_resource, body))
    return draw(method), draw(path), draw(query), draw(body)


@pytest.fixture
async def fuzz_client(fhir_server: FhirServer) -> Any:
    fhir_server.store.load([{**patient(), "id": "pat-fuzz"}, {**patient(), "id": PROBE_ID}])
    base = fhir_server.base.rsplit("/fhir", 1)[0]
    async with httpx.AsyncClient(base_url=base, timeout=10.0) as c:
        yield c


@pytest.mark.slow
@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(request=fhir_request(), headers=headers)
async def test_no_request_gets_a_5xx_and_the_server_keeps_serving(
    fuzz_client: httpx.AsyncClient,
    request: tuple[str, str, list[tuple[str, str]], bytes | None],
    headers: dict[str, str],
) -> None:
    method, path, query, body = request
    params = [(k, v.encode("utf-8", "surrogatepass").decode("utf-8", "replace"))
              for k, v in query]
    try:
        request = fuzz_client.build_request(method, f"/fhir/{path}", params=params,
                                            headers=headers, content=body)
    except (httpx.InvalidURL, UnicodeEncodeError, ValueError):
        return  # the client itself refuses to send it; nothing reached the server
    try:
        response = await fuzz_client.send(request)
    except httpx.LocalProtocolError:
        return  # h11 refused to send it (e.g. an illegal header); nothing reached the server
    event(f"HTTP {response.status_code}")
    assert response.status_code < 500, (response.status_code, response.text)
    in_api = response.request.url.path.startswith("/fhir/")
    if in_api and method != "HEAD" and response.status_code >= 400:
        assert response.json()["resourceType"] == "OperationOutcome"
    # A resource no generated request names (a fuzzed DELETE of pat-fuzz is a fair request).
    after = await fuzz_client.get(f"/fhir/Patient/{PROBE_ID}",
                                  headers={"Authorization": "Bearer all"})
    assert after.status_code == 200
    assert after.json()["id"] == PROBE_ID
