"""The baseline of `bench.api_load`: a minimal aiohttp.web server answering /batchCount and
/totalSubmissions with the same Redis reads as the read API (GET the batch count; GET the
current day, then one MGET of the days' two keys), a token compare and the Go envelope,
without checks beyond those, CORS or OpenAPI: what the floor is on this machine.

    python -m bench.api_baseline --port P --redis URL --token T --market 0x...
"""

from __future__ import annotations

import argparse
import hmac
import json
import uuid
from typing import Any

import redis.asyncio as aioredis
from aiohttp import web


def make_app(redis_url: str, token: str, market: str) -> web.Application:
    client = aioredis.Redis.from_url(redis_url)
    lc = market.lower()

    def envelope(response: Any) -> web.Response:
        rid = str(uuid.uuid4())
        body = {"info": {"success": True, "response": response}, "requestID": rid}
        return web.json_response(body, headers={"X-Request-ID": rid})

    async def batch_count(request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        if not hmac.compare_digest(str(body.get("token", "")).encode(), token.encode()):
            return web.json_response({"error": "Incorrect Token!"}, status=401)
        value = await client.get(f"BatchCountKey.{lc}.{int(body['epochID'])}")
        return envelope({"totalBatches": int(value or 0)})

    async def total_submissions(request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        if not hmac.compare_digest(str(body.get("token", "")).encode(), token.encode()):
            return web.json_response({"error": "Incorrect Token!"}, status=401)
        day = int(await client.get(f"CurrentDayKey.{lc}") or 0)
        slot, past = int(body["slotID"]), int(body["pastDays"])
        days = [day - i for i in range(past)]
        names = [f"EligibleSlotSubmissionsKey.{lc}.{d}.{slot}" for d in days]
        names += [f"SlotSubmissionsKey.{lc}.{d}.{slot}" for d in days]
        values = await client.mget(names)
        n = len(days)
        return envelope(
            [
                {
                    "day": d,
                    "eligibleSubmissions": int(values[i] or 0),
                    "totalSubmissions": int(values[n + i] or 0),
                }
                for i, d in enumerate(days)
            ]
        )

    app = web.Application()
    app.router.add_post("/batchCount", batch_count)
    app.router.add_post("/totalSubmissions", total_submissions)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--market", required=True)
    args = parser.parse_args()
    app = make_app(args.redis, args.token, args.market)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
