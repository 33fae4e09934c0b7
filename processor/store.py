"""MongoDB adapter: bulk writes keyed by event_id, the queries behind rebuilds and the API.

    >>> store = MongoStore("mongodb://127.0.0.1:27017/", "gpu_cost")
    >>> store.ensure_indexes()
    >>> result = store.write({"gpu_metrics": [...], "token_usage": [...]})

Only plain CRUD (`insert_many`, `find`, `find_one`, `count_documents`, `distinct`,
`create_index`) and aggregations of `$match` + `$group` (with `$sum`) are used, so the same
code runs on MongoDB 7 and on FerretDB 1.24. Connection failures become StoreUnavailable; a
duplicate `_id` means "already stored" and is counted, not raised.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from bson.errors import InvalidDocument
from pymongo import ASCENDING, DESCENDING, MongoClient
from pymongo.collection import Collection
from pymongo.errors import BulkWriteError, DuplicateKeyError, PyMongoError, WriteError

from processor.documents import GPU_METRICS, TOKEN_USAGE
from processor.exceptions import StoreUnavailable
from processor.pricing import PartitionHistory
from processor.rollup import (
    GRANULARITY_MINUTES,
    GROUP_FIELD,
    UNATTRIBUTED,
    Dimension,
    GpuMinute,
    Granularity,
    TokenMinute,
)

__all__ = ["MongoStore", "PartitionHistory", "WriteResult"]

log = logging.getLogger(__name__)

_DUPLICATE_KEY: Final = 11000
# Server answers that mean "try again later" rather than "this document is bad".
_TRANSIENT_CODES: Final = frozenset(
    {6, 7, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436, 50, 112, 64}
)

# What the driver raises for a document it cannot encode (InvalidDocument covers too large;
# OverflowError an integer beyond 64 bits): a property of that document, not of the server.
_UNENCODABLE: Final = (InvalidDocument, OverflowError)
# What a rebuild reads of a retained token document (processor.pricing.Pricer.rebuild).
_REBUILD_FIELDS: Final = {
    "gpu_key": 1, "ts_us": 1, "input_tokens": 1, "output_tokens": 1, "output_weight": 1,
    "kafka_offset": 1,
}  # fmt: skip

# What a rebuild reads of a recent reading (processor.anomalies.Reading).
_ANOMALY_FIELDS: Final = {
    "gpu_key": 1, "ts_us": 1, "temperature_gpu_c": 1, "power_draw_w": 1,
    "utilization_gpu_pct": 1, "clock_sm_mhz": 1, "power_limit_w": 1,
}  # fmt: skip

_INDEXES: Final[dict[str, list[tuple[str, list[tuple[str, int]]]]]] = {
    # partition_gpu_*: the rebuild's queries (partition_history) walk one GPU of one partition
    # from its newest entry backwards, so they cost what the window holds, not what the
    # partition has accumulated since it was created.
    GPU_METRICS: [
        ("gpu_key_ts", [("gpu_key", ASCENDING), ("ts_us", ASCENDING)]),
        # The rebuild asks for a GPU's latest reading by (ts_us, _id) before an offset: walk
        # this index backwards from the newest; only readings after the offset are skipped.
        (
            "partition_gpu_ts",
            [
                ("kafka_partition", ASCENDING),
                ("gpu_key", ASCENDING),
                ("ts_us", ASCENDING),
                ("_id", ASCENDING),
            ],
        ),
        ("minute", [("minute", ASCENDING)]),
        # GET /api/v1/anomalies: flagged readings (anomaly_count > 0) in a time range.
        ("anomalies_ts", [("anomaly_count", ASCENDING), ("ts_us", ASCENDING)]),
    ],
    TOKEN_USAGE: [
        ("gpu_key_ts", [("gpu_key", ASCENDING), ("ts_us", ASCENDING)]),
        (
            "partition_gpu_ts",
            [("kafka_partition", ASCENDING), ("gpu_key", ASCENDING), ("ts_us", ASCENDING)],
        ),
        ("minute", [("minute", ASCENDING)]),
        ("model_minute", [("model", ASCENDING), ("minute", ASCENDING)]),
        # GET /api/v1/requests/{request_id}: every GPU's share of one request.
        ("request_id", [("request_id", ASCENDING)]),
    ],
}


@dataclass
class WriteResult:
    """What one bulk write did, per collection, and the documents the server refused."""

    inserted: Counter[str] = field(default_factory=Counter)
    duplicates: Counter[str] = field(default_factory=Counter)
    # (collection, _id) of the duplicates: what a redelivery re-sent, so metrics skip it
    duplicate_ids: set[tuple[str, str]] = field(default_factory=set)
    rejected: dict[tuple[str, str], str] = field(default_factory=dict)  # (collection, _id)
    stored_at: float = 0.0  # epoch seconds stamped on every document as stored_at
    seconds: float = 0.0  # how long the write took


class MongoStore:
    """The processor's only door to MongoDB."""

    def __init__(self, url: str, database: str, timeout_ms: int = 3000) -> None:
        self._client: MongoClient[dict[str, Any]] = MongoClient(
            url,
            serverSelectionTimeoutMS=timeout_ms,
            connectTimeoutMS=timeout_ms,
            # Bulk writes of a large batch on a slow disk take seconds; a short socket timeout
            # would turn a slow write into a retry storm.
            socketTimeoutMS=max(30_000, timeout_ms * 10),
            tz_aware=True,
        )
        self._db = self._client[database]
        self.database = database

    def close(self) -> None:
        self._client.close()

    def collection(self, name: str) -> Collection[dict[str, Any]]:
        return self._db[name]

    @contextmanager
    def _unavailable_on_error(self, what: str) -> Iterator[None]:
        try:
            yield
        except BulkWriteError:
            raise
        except PyMongoError as exc:
            raise StoreUnavailable(f"MongoDB {what} failed: {exc}") from exc

    def ping(self) -> None:
        with self._unavailable_on_error("ping"):
            self._client.admin.command("ping")

    def ensure_indexes(self) -> None:
        """Create the indexes if missing; safe to call at every start."""
        with self._unavailable_on_error("create_index"):
            for collection, indexes in _INDEXES.items():
                for name, keys in indexes:
                    self._db[collection].create_index(keys, name=name)

    def write(self, docs_by_collection: Mapping[str, Sequence[dict[str, Any]]]) -> WriteResult:
        """Insert every document; duplicates of `_id` count as already stored.

        Stamps ``stored_at`` on each document (end-to-end latency; not part of any cost).
        """
        result = WriteResult(stored_at=time.time())
        stamp = datetime.fromtimestamp(result.stored_at, UTC)
        started = time.perf_counter()
        for docs in docs_by_collection.values():
            for doc in docs:
                doc["stored_at"] = stamp
        self._write(docs_by_collection, result)
        result.seconds = time.perf_counter() - started
        return result

    def _write(
        self, docs_by_collection: Mapping[str, Sequence[dict[str, Any]]], result: WriteResult
    ) -> None:
        for name, docs in docs_by_collection.items():
            if not docs:
                continue
            inserted, duplicates = len(docs), 0
            try:
                with self._unavailable_on_error(f"insert into {name}"):
                    self._db[name].insert_many(docs, ordered=False)
            except _UNENCODABLE:
                # The driver refused to encode some document before sending anything: find
                # which one by writing them singly, so the rest of the batch is not held back.
                self._write_singly(name, docs, result)
                continue
            except BulkWriteError as exc:
                inserted = int(exc.details.get("nInserted", 0))
                for error in exc.details.get("writeErrors", []):
                    code = error.get("code")
                    if code == _DUPLICATE_KEY:
                        duplicates += 1
                        result.duplicate_ids.add((name, str(docs[error["index"]]["_id"])))
                    elif code in _TRANSIENT_CODES:
                        raise StoreUnavailable(
                            f"MongoDB insert into {name} failed: code={code} {error.get('errmsg')}"
                        ) from exc
                    else:
                        doc_id = str(docs[error["index"]]["_id"])
                        reason = f"code={code} {error.get('errmsg', '')}".strip()
                        result.rejected[(name, doc_id)] = reason
                        log.error(
                            "store rejected document collection=%s event_id=%s code=%s msg=%r",
                            name, doc_id, code, error.get("errmsg"),
                        )  # fmt: skip
            result.inserted[name] = inserted
            result.duplicates[name] = duplicates

    def _write_singly(self, name: str, docs: Sequence[dict[str, Any]], result: WriteResult) -> None:
        inserted = duplicates = 0
        for doc in docs:
            try:
                self._db[name].insert_one(doc)
                inserted += 1
            except DuplicateKeyError:
                duplicates += 1
                result.duplicate_ids.add((name, str(doc["_id"])))
            except (*_UNENCODABLE, WriteError) as exc:
                code = getattr(exc, "code", None)
                if code in _TRANSIENT_CODES:
                    raise StoreUnavailable(f"MongoDB insert into {name} failed: {exc}") from exc
                result.rejected[(name, str(doc["_id"]))] = f"cannot store: {exc}"
                log.error("store rejected document collection=%s event_id=%s reason=%r",
                          name, doc["_id"], str(exc))  # fmt: skip
            except PyMongoError as exc:
                raise StoreUnavailable(f"MongoDB insert into {name} failed: {exc}") from exc
        result.inserted[name] = inserted
        result.duplicates[name] = duplicates

    def partition_history(
        self, partition: int, before_offset: int, retain_us: int, readings: int = 0
    ) -> PartitionHistory:
        """Stored events of ``partition`` before ``before_offset`` that a cost window retains.

        For each GPU: its latest gpu_metrics document by ``(ts_us, _id)``, its token events
        whose ts_us is within ``retain_us`` (window + lateness) of its newest stored token event,
        and its ``readings`` newest gpu_metrics documents (the anomaly window).
        """
        if before_offset <= 0:
            # Nothing precedes a partition's first offset: skip the queries. They are not free
            # on a large collection (on FerretDB's SQLite backend they scan it), and a fresh
            # backlog assigns every partition at offset 0.
            return PartitionHistory(latest_gpu_metrics=[], token_events=[])
        scope = {"kafka_partition": partition, "kafka_offset": {"$lt": before_offset}}
        gpus, tokens = self._db[GPU_METRICS], self._db[TOKEN_USAGE]
        with self._unavailable_on_error("rebuild query"):
            # Every GPU ever seen on the partition (an index prefix: cheap); one with nothing
            # before before_offset contributes nothing below.
            mine_only = {"kafka_partition": partition}
            keys = set(gpus.distinct("gpu_key", mine_only)) | set(
                tokens.distinct("gpu_key", mine_only)
            )
            latest: list[dict[str, Any]] = []
            recent: list[dict[str, Any]] = []
            events: list[dict[str, Any]] = []
            for key in sorted(keys):
                mine = {**scope, "gpu_key": key}
                # Latest by event time, as the cost model keeps it (a redelivered older
                # reading must not win: see CostModel.on_gpu_metrics).
                reading = gpus.find_one(mine, sort=[("ts_us", DESCENDING), ("_id", DESCENDING)])
                if reading is not None:
                    latest.append(reading)
                    if readings > 0:
                        newest_first = [("ts_us", DESCENDING), ("_id", DESCENDING)]
                        found = gpus.find(mine, _ANOMALY_FIELDS, sort=newest_first)
                        recent.extend(found.limit(readings))
                newest = tokens.find_one(mine, {"ts_us": 1}, sort=[("ts_us", DESCENDING)])
                if newest is None:
                    continue
                window = {**mine, "ts_us": {"$gt": newest["ts_us"] - retain_us}}
                events.extend(tokens.find(window, _REBUILD_FIELDS))
        events.sort(key=lambda d: int(d["kafka_offset"]))
        return PartitionHistory(
            latest_gpu_metrics=latest, token_events=events, recent_gpu_metrics=recent
        )

    # --- queries behind the HTTP API ---------------------------------------------------

    def find_event(self, event_id: str) -> tuple[str, dict[str, Any]] | None:
        """``(collection, document)`` of the event stored under ``event_id``, else None.

        Ids are unique per collection, not across them: a token event is looked up first.
        """
        with self._unavailable_on_error("event lookup"):
            for name in (TOKEN_USAGE, GPU_METRICS):
                doc = self._db[name].find_one({"_id": event_id})
                if doc is not None:
                    return name, doc
        return None

    def request_events(self, request_id: str, limit: int) -> list[dict[str, Any]]:
        """The token documents of one request (one per GPU of a tensor-parallel group)."""
        with self._unavailable_on_error("request lookup"):
            found = self._db[TOKEN_USAGE].find({"request_id": request_id}).limit(limit)
            docs = list(found)
        # Sorted here rather than by the server: (ts_us, gpu_index, _id) is a total order.
        return sorted(docs, key=lambda d: (d["ts_us"], d.get("gpu_index", 0), str(d["_id"])))

    def anomalous_readings(
        self, match: Mapping[str, Any], start_us: int, end_us: int, limit: int
    ) -> list[dict[str, Any]]:
        """Flagged gpu_metrics documents with ``start_us <= ts_us < end_us``, oldest first."""
        query = {**match, "anomaly_count": {"$gt": 0}, "ts_us": {"$gte": start_us, "$lt": end_us}}
        order = [("ts_us", ASCENDING), ("_id", ASCENDING)]
        with self._unavailable_on_error("anomalies query"):
            return list(self._db[GPU_METRICS].find(query, sort=order).limit(limit))

    def counts(self) -> dict[str, int]:
        with self._unavailable_on_error("count"):
            return {n: self._db[n].count_documents({}) for n in (GPU_METRICS, TOKEN_USAGE)}

    def latest_readings(self) -> list[dict[str, Any]]:
        """The newest gpu_metrics document of every GPU ever seen."""
        gpus = self._db[GPU_METRICS]
        with self._unavailable_on_error("latest readings"):
            keys = sorted(gpus.distinct("gpu_key"))
            found = [gpus.find_one({"gpu_key": k}, sort=[("ts_us", DESCENDING)]) for k in keys]
        return [doc for doc in found if doc is not None]

    def latest_readings_of(self, gpu_key: str) -> dict[str, Any] | None:
        with self._unavailable_on_error("latest reading"):
            return self._db[GPU_METRICS].find_one(
                {"gpu_key": gpu_key}, sort=[("ts_us", DESCENDING)]
            )

    def gpu_readings(
        self, gpu_key: str, start_us: int, end_us: int, limit: int
    ) -> list[dict[str, Any]]:
        query = {"gpu_key": gpu_key, "ts_us": {"$gte": start_us, "$lt": end_us}}
        with self._unavailable_on_error("readings query"):
            return list(self._db[GPU_METRICS].find(query).sort("ts_us", ASCENDING).limit(limit))

    def gpu_minutes(self, match: Mapping[str, Any]) -> list[GpuMinute]:
        pipeline = [
            {"$match": dict(match)},
            {
                "$group": {
                    "_id": {"gpu_key": "$gpu_key", "minute": "$minute"},
                    "price_sum": {"$sum": "$price_per_hour_usd"},
                    "readings": {"$sum": 1},
                    # $sum skips nulls; the 1/0 sample fields count what it added up.
                    "power_sum": {"$sum": "$power_draw_w"},
                    "power_samples": {"$sum": "$power_samples"},
                    "energy_sum": {"$sum": "$energy_delta_j"},
                    "energy_samples": {"$sum": "$energy_samples"},
                }
            },
        ]
        with self._unavailable_on_error("gpu minutes aggregation"):
            rows = list(self._db[GPU_METRICS].aggregate(pipeline))
        return [
            GpuMinute(
                gpu_key=r["_id"]["gpu_key"],
                host=str(r["_id"]["gpu_key"]).split("/", 1)[0],
                minute=int(r["_id"]["minute"]),
                price_sum=float(r["price_sum"]),
                readings=int(r["readings"]),
                power_sum_w=float(r.get("power_sum") or 0.0),
                power_samples=int(r.get("power_samples") or 0),
                energy_delta_j=float(r.get("energy_sum") or 0.0),
                energy_deltas=int(r.get("energy_samples") or 0),
            )
            for r in rows
        ]

    def token_minutes(self, match: Mapping[str, Any]) -> list[TokenMinute]:
        pipeline = [
            {"$match": dict(match)},
            {
                "$group": {
                    "_id": {
                        "gpu_key": "$gpu_key",
                        "minute": "$minute",
                        "model": "$model",
                        "tenant": "$tenant",
                        "k": "$output_weight",
                    },
                    "tokens": {"$sum": "$tokens"},
                    "input_tokens": {"$sum": "$input_tokens"},
                    "output_tokens": {"$sum": "$output_tokens"},
                    "events": {"$sum": 1},
                    "tp_followers": {"$sum": "$tp_follower"},
                    "cost_usd": {"$sum": "$cost_usd"},
                    "price_sum": {"$sum": "$price_per_hour_usd"},
                }
            },
        ]
        with self._unavailable_on_error("token minutes aggregation"):
            rows = list(self._db[TOKEN_USAGE].aggregate(pipeline))
        return [
            TokenMinute(
                gpu_key=r["_id"]["gpu_key"],
                host=str(r["_id"]["gpu_key"]).split("/", 1)[0],
                model=r["_id"]["model"],
                minute=int(r["_id"]["minute"]),
                tokens=int(r["tokens"]),
                requests=int(r["events"]) - int(r.get("tp_followers") or 0),
                cost_usd=float(r["cost_usd"]),
                price_sum=float(r["price_sum"]),
                tenant=r["_id"].get("tenant"),
                input_tokens=int(r["input_tokens"]),
                output_tokens=int(r["output_tokens"]),
                # Documents stored before k existed were priced with every token alike.
                output_weight=float(r["_id"].get("k") or 1.0),
            )
            for r in rows
        ]

    def latency_histogram(
        self,
        match: Mapping[str, Any],
        dims: Sequence[Dimension],
        granularity: Granularity,
        origin_minute: int = 0,
    ) -> dict[tuple[str, int], dict[float, int]]:
        """(group, period start as epoch minute) -> {latency bucket bound ms: count}.

        ``group`` is the dimension values joined by " / ", as processor.rollup names rows;
        with granularity ``"all"`` every period starts at ``origin_minute``.
        """
        # Documents carry minute/hour/day bucket fields: group on the granularity's own.
        group_id: dict[str, str] = {f"g{i}": f"${GROUP_FIELD[d]}" for i, d in enumerate(dims)}
        if granularity != "all":
            group_id["p"] = f"${granularity}"
        pipeline = [
            {"$match": dict(match)},
            {"$group": {"_id": {**group_id, "b": "$latency_bucket_ms"}, "n": {"$sum": 1}}},
        ]
        hist: dict[tuple[str, int], dict[float, int]] = {}
        with self._unavailable_on_error("latency aggregation"):
            minutes = GRANULARITY_MINUTES.get(granularity, 0)
            for r in self._db[TOKEN_USAGE].aggregate(pipeline):
                ident = r["_id"]
                group = " / ".join(
                    str(ident.get(f"g{i}") or UNATTRIBUTED) for i in range(len(dims))
                )
                period = int(ident["p"]) * minutes if "p" in ident else origin_minute
                key = (group, period)
                hist.setdefault(key, {})[float(ident["b"])] = int(r["n"])
        return hist
