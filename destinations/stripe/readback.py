"""The emulator's meters and their event summaries, what ``client.v1.billing.meters`` reads back.

Apart from the emulator because it is the one place that aggregates: a meter sums the
whole-number ``payload[value]`` of its event name's accepted events, per customer, over a
time range (one summary) or per hour or day (``value_grouping_window``), paged by
``limit`` and ``starting_after`` as Stripe lists are. Summaries are listed oldest first
(the reference does not say the order; decided here).
"""

from __future__ import annotations

import hashlib
import re
import threading
from datetime import datetime, timezone
from typing import Any, Mapping, Sequence

from engine.tools.emulator import Answer, Stored, json_answer
from destinations.stripe.rules import CUSTOMER_KEY, VALUE_KEY, StripeError, instant, page_limit, summary_query, value_of

_CREATED = int(datetime(2026, 1, 1, tzinfo=timezone.utc).timestamp())


class Meters:
    """Event name -> meter id, fixed when given, else one meter per event name on first sight (``mtr_<name>``)."""

    def __init__(self, meters: Mapping[str, str] | None) -> None:
        self._fixed = dict(meters) if meters is not None else None
        self._lock = threading.Lock()
        self.clear()

    def clear(self) -> None:
        with self._lock:
            self._ids: dict[str, str] = dict(self._fixed or {})

    def has(self, event_name: str) -> bool:
        """Whether a meter counts this event name (a new one is made when meters are not fixed)."""
        with self._lock:
            if self._fixed is None and event_name not in self._ids:
                self._ids[event_name] = "mtr_" + re.sub(r"[^A-Za-z0-9]", "_", event_name)[:60]
            return event_name in self._ids

    def ids(self) -> dict[str, str]:
        with self._lock:
            return dict(self._ids)

    def event_name(self, meter_id: str) -> str:
        for name, known in self.ids().items():
            if known == meter_id:
                return name
        raise StripeError(404, f"No such billing meter: '{meter_id}'", code="resource_missing", param="id")

    @staticmethod
    def _shown(meter_id: str, event_name: str) -> dict[str, Any]:
        return {
            "id": meter_id, "object": "billing.meter", "created": _CREATED, "updated": _CREATED, "livemode": False,
            "display_name": event_name, "event_name": event_name, "event_time_window": None, "status": "active",
            "customer_mapping": {"event_payload_key": CUSTOMER_KEY, "type": "by_id"},
            "default_aggregation": {"formula": "sum"}, "value_settings": {"event_payload_key": VALUE_KEY},
            "status_transitions": {"deactivated_at": None},
        }

    def listing(self) -> Answer:
        data = [self._shown(meter_id, name) for name, meter_id in self.ids().items()]
        return json_answer(200, {"object": "list", "data": data, "has_more": False, "url": "/v1/billing/meters"})

    def one(self, meter_id: str) -> Answer:
        return json_answer(200, self._shown(meter_id, self.event_name(meter_id)))

    def summaries(self, meter_id: str, query: Mapping[str, list[str]], counted: Sequence[Stored]) -> Answer:
        """The meter's ``billing.meter_event_summary`` list for a customer; ``counted``: the customer's events of the
        meter's event name that no error report excludes."""
        self.event_name(meter_id)  # 404 for an unknown meter
        customer, start, end, step = summary_query(query)
        limit = page_limit(query)
        bounds = [(s, min(s + step, end)) for s in range(start, end, step)] if step else [(start, end)]
        totals = dict.fromkeys(bounds, 0)
        for item in counted:
            at = instant(item.payload, item.at).timestamp()
            for low, high in bounds:
                if low <= at < high:
                    totals[(low, high)] += value_of(item.payload["payload"]) or 0
                    break
        data = [self._summary(meter_id, customer, low, high, total) for (low, high), total in totals.items()]
        after = query.get("starting_after")
        if after:
            position = next((i for i, summary in enumerate(data) if summary["id"] == after[-1]), None)
            if position is None:
                raise StripeError(400, f"Invalid starting_after: no summary {after[-1]} in this list", param="starting_after")
            data = data[position + 1:]
        url = f"/v1/billing/meters/{meter_id}/event_summaries"
        return json_answer(200, {"object": "list", "data": data[:limit], "has_more": len(data) > limit, "url": url})

    @staticmethod
    def _summary(meter_id: str, customer: str, low: int, high: int, total: int) -> dict[str, Any]:
        digest = hashlib.sha1(f"{meter_id}|{customer}|{low}|{high}".encode()).hexdigest()[:24]
        return {"id": f"mtrusg_{digest}", "object": "billing.meter_event_summary", "aggregated_value": total,
                "start_time": low, "end_time": high, "meter": meter_id, "livemode": False}
