"""What `check` and `report` read of the streams, from where the user is.

- In the streams' own account (admin, nats-box; with auth off everyone): JetStream's API, as always.
- The `monitor` user lives in an account of its own without JetStream (stack/users.py, "Accounts"): its
  `$JS.API.INFO` is answered there with 10039, "JetStream not enabled for account". It reads the system account's
  JSZ of the streams' account instead (`$SYS.REQ.ACCOUNT.STREAMS.JSZ`, exported by the system account to the
  monitor's alone): every stream's config and state and every consumer's, in one request whose answer lands on a
  `_R_` reply in the monitor's account, where nothing acts on JetStream. The monitor reads no message or value.

In a cluster every server that hosts streams of the account answers the JSZ request with the streams it hosts;
`merge_jsz` keeps, for each stream, the answer of its leader (nats-server server/monitor.go Jsz, `stream_detail`
with `cluster.leader`).
"""
from __future__ import annotations

import json

import nats

from stack.users import STREAMS_ACCOUNT

NOT_ENABLED = 10039      # JSNotEnabledForAccountErr
STREAM_NOT_FOUND = 10059
CONSUMER_NOT_FOUND = 10014
JSZ_DETAIL = {"streams": True, "consumer": True, "config": True}


async def api(nc, subject: str, body: dict | None = None, timeout: float = 10) -> dict:
    msg = await nc.request(subject, json.dumps(body).encode() if body is not None else b"", timeout=timeout)
    return json.loads(msg.data)


class ApiView:
    """JetStream's API, in the user's own account."""
    reads_values = True

    def __init__(self, nc):
        self.nc = nc

    async def stream_info(self, name: str) -> dict:
        return await api(self.nc, f"$JS.API.STREAM.INFO.{name}")

    async def consumer_info(self, stream: str, name: str) -> dict:
        return await api(self.nc, f"$JS.API.CONSUMER.INFO.{stream}.{name}")

    async def _paged(self, subject: str, key: str) -> list[dict]:
        items: list[dict] = []
        while True:
            data = await api(self.nc, subject, {"offset": len(items)})
            if "error" in data:
                raise RuntimeError(f"{subject}: {data['error'].get('description')}")
            page = data.get(key) or []
            items += page
            if not page or len(items) >= data.get("total", 0):
                return items

    async def streams(self) -> list[dict]:
        return await self._paged("$JS.API.STREAM.LIST", "streams")

    async def consumers(self, stream: str) -> list[dict]:
        return await self._paged(f"$JS.API.CONSUMER.LIST.{stream}", "consumers")


def merge_jsz(answers: list[dict]) -> dict[str, dict]:
    """Each stream's detail from the JSZ answers of one or more servers: its leader's where one answers, else the
    first seen."""
    merged: dict[str, dict] = {}
    for answer in answers:
        server = (answer.get("server") or {}).get("name")
        for detail in (answer.get("data") or {}).get("stream_detail") or []:
            name = detail["name"]
            leads = (detail.get("cluster") or {}).get("leader") == server
            if name not in merged or leads:
                merged[name] = detail
    return merged


class JszView:
    """The system account's JSZ of the streams' account: stream and consumer infos in the API's shapes."""
    reads_values = False

    def __init__(self, nc, account: str = STREAMS_ACCOUNT, window: float = 0.5):
        self.nc, self.account, self.window = nc, account, window
        self._details: dict[str, dict] | None = None

    async def _load(self) -> dict[str, dict]:
        if self._details is None:
            inbox = self.nc.new_inbox()
            sub = await self.nc.subscribe(inbox)
            await self.nc.publish(f"$SYS.REQ.ACCOUNT.{self.account}.JSZ", json.dumps(JSZ_DETAIL).encode(),
                                  reply=inbox)
            answers = [json.loads((await sub.next_msg(timeout=10)).data)]
            while True:   # more servers of a cluster answer too
                try:
                    answers.append(json.loads((await sub.next_msg(timeout=self.window)).data))
                except (TimeoutError, nats.errors.TimeoutError):
                    break
            await sub.unsubscribe()
            errors = [a["error"] for a in answers if "error" in a]
            if errors and len(errors) == len(answers):
                raise RuntimeError(f"JSZ of account {self.account}: {errors[0].get('description')}")
            self._details = merge_jsz(answers)
        return self._details

    @staticmethod
    def _stream(detail: dict) -> dict:
        return {k: detail[k] for k in ("config", "state", "created", "cluster") if k in detail}

    async def stream_info(self, name: str) -> dict:
        detail = (await self._load()).get(name)
        if detail is None:
            return {"error": {"code": 404, "err_code": STREAM_NOT_FOUND, "description": "stream not found"}}
        return self._stream(detail)

    async def consumer_info(self, stream: str, name: str) -> dict:
        for consumer in (await self._load()).get(stream, {}).get("consumer_detail") or []:
            if consumer.get("name") == name:
                return consumer
        return {"error": {"code": 404, "err_code": CONSUMER_NOT_FOUND, "description": "consumer not found"}}

    async def streams(self) -> list[dict]:
        return [self._stream(d) for d in (await self._load()).values()]

    async def consumers(self, stream: str) -> list[dict]:
        return list((await self._load()).get(stream, {}).get("consumer_detail") or [])


async def open_view(nc) -> ApiView | JszView:
    """The API where the user's account has JetStream; the system account's JSZ where it has none."""
    try:
        info = await api(nc, "$JS.API.INFO", timeout=3)
    except (TimeoutError, nats.errors.TimeoutError):   # a user that may not ask it (backup): the API
        return ApiView(nc)
    if (info.get("error") or {}).get("err_code") == NOT_ENABLED:
        return JszView(nc)
    return ApiView(nc)
