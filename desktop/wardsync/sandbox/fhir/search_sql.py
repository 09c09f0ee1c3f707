"""Turn a parsed `SearchQuery` into SQL over the store's version and index tables.

Every search runs "as of" a snapshot: the highest version sequence number visible to it. A
version is visible at snapshot S when it was written at or before S and not yet superseded at
S. Paging with the same snapshot therefore sees exactly the same result set on every page,
however many writes happen in between (R4 search.html#paging leaves consistency to the server;
clients catching up rely on no skip and no repeat).
"""

from __future__ import annotations

from collections.abc import Iterable

from wardsync.sandbox.fhir.search_query import (
    Criterion,
    DateValue,
    ReferenceValue,
    SearchQuery,
    SortKey,
    StringValue,
    TokenValue,
)

SqlArgs = list[object]

VISIBLE_AT = "v.seq <= ? AND (v.superseded_seq IS NULL OR v.superseded_seq > ?)"


# Index criteria by how few rows they usually select: the most selective one drives the
# search (its index lists candidate versions), the others are checked per candidate.
_DRIVING_ORDER = {"reference": 0, "token": 1, "string": 2, "date": 3}


def where_clause(query: SearchQuery, snapshot: int) -> tuple[str, SqlArgs]:
    """The WHERE clause (over `version v`) selecting the query's matches at `snapshot`.

    One index criterion (a patient reference, say) lists the candidate versions; every
    other one is probed per candidate through the index tables' `seq`-first indexes. Listing
    them all instead would read every vital sign on the server for `category=vital-signs`,
    and every dated Observation for `date=ge...`, on each search.
    """
    clauses = ["v.type = ?", VISIBLE_AT]
    args: SqlArgs = [query.resource_type, snapshot, snapshot]
    indexed = [c for c in query.criteria if c.param.name not in ("_id", "_lastUpdated")]
    driving = min(indexed, key=lambda c: _DRIVING_ORDER[c.param.kind], default=None)
    for criterion in query.criteria:
        sql, crit_args = _criterion(query.resource_type, criterion,
                                    probe=criterion is not driving)
        clauses.append(sql)
        args.extend(crit_args)
    return " AND ".join(clauses), args


def order_clause(sort: tuple[SortKey, ...], resource_type: str) -> tuple[str, SqlArgs]:
    """ORDER BY keys; the resource's row id breaks ties so the order is total and stable."""
    terms: list[str] = []
    args: SqlArgs = []
    for key in sort:
        direction = "DESC" if key.descending else "ASC"
        if key.name == "_lastUpdated":
            terms.append(f"v.lu_us {direction}")
        elif key.name == "_id":
            terms.append(f"v.id {direction}")
        else:
            # A date parameter sorts on its earliest start ascending, latest end descending.
            bound = "MAX(d.high)" if key.descending else "MIN(d.low)"
            terms.append(
                f"(SELECT {bound} FROM idx_date d WHERE d.seq = v.seq AND d.param = ?) "
                f"{direction} NULLS LAST"
            )
            args.append(key.name)
    terms.append("v.rid ASC")
    return ", ".join(terms), args


def _criterion(resource_type: str, criterion: Criterion, *, probe: bool = False
               ) -> tuple[str, SqlArgs]:
    param = criterion.param
    if param.name == "_id":
        ids = [v.code for v in criterion.values if isinstance(v, TokenValue)]
        return f"v.id IN ({', '.join('?' * len(ids))})", list(ids)
    if param.name == "_lastUpdated":
        return _any_of(_date(v, "v.lu_us", "v.lu_us") for v in _dates(criterion))
    if param.kind == "date":
        table, conds = "idx_date", [_date(v, "low", "high") for v in _dates(criterion)]
    elif param.kind == "token":
        table, conds = "idx_token", [_token(v) for v in criterion.values
                                     if isinstance(v, TokenValue)]
    elif param.kind == "reference":
        table, conds = "idx_reference", [_reference(v) for v in criterion.values
                                         if isinstance(v, ReferenceValue)]
    else:
        table, conds = "idx_string", [_string(v) for v in criterion.values
                                      if isinstance(v, StringValue)]
    any_sql, any_args = _any_of(conds)
    if probe:
        sql = (f"EXISTS (SELECT 1 FROM {table} x WHERE x.seq = v.seq AND x.param = ? "
               f"AND {any_sql})")
        return sql, [param.name, *any_args]
    sql = f"v.seq IN (SELECT seq FROM {table} WHERE type = ? AND param = ? AND {any_sql})"
    return sql, [resource_type, param.name, *any_args]


def _any_of(conds: Iterable[tuple[str, SqlArgs]]) -> tuple[str, SqlArgs]:
    parts: list[str] = []
    args: SqlArgs = []
    for sql, cond_args in conds:
        parts.append(f"({sql})")
        args.extend(cond_args)
    return ("(" + " OR ".join(parts) + ")" if parts else "0"), args


def _dates(criterion: Criterion) -> list[DateValue]:
    return [v for v in criterion.values if isinstance(v, DateValue)]


def _date(value: DateValue, low: str, high: str) -> tuple[str, SqlArgs]:
    """R4 search.html#prefix over inclusive ranges: resource [low, high] vs value [ps, pe]."""
    ps, pe = value.range.low, value.range.high
    contained = f"{low} >= ? AND {high} <= ?"
    by_prefix: dict[str, tuple[str, SqlArgs]] = {
        "eq": (contained, [ps, pe]),
        "ne": (f"NOT ({contained})", [ps, pe]),
        "gt": (f"{high} > ?", [pe]),
        "lt": (f"{low} < ?", [ps]),
        "ge": (f"{high} > ? OR ({contained})", [pe, ps, pe]),
        "le": (f"{low} < ? OR ({contained})", [ps, ps, pe]),
        "sa": (f"{low} > ?", [pe]),
        "eb": (f"{high} < ?", [ps]),
        "ap": (f"{low} <= ? AND {high} >= ?", [pe, ps]),
    }
    return by_prefix[value.prefix]


def _token(value: TokenValue) -> tuple[str, SqlArgs]:
    if value.code is None:
        return "system = ?", [value.system]
    if value.system is None:
        return "code = ?", [value.code]
    return "code = ? AND system = ?", [value.code, value.system]


def _reference(value: ReferenceValue) -> tuple[str, SqlArgs]:
    if value.target_type is None:
        return "target_id = ?", [value.target_id]
    return "target_id = ? AND target_type = ?", [value.target_id, value.target_type]


def _string(value: StringValue) -> tuple[str, SqlArgs]:
    if value.exact:
        return "exact = ?", [value.text]
    escaped = value.text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return "folded LIKE ? ESCAPE '\\'", [f"%{escaped}%"]
